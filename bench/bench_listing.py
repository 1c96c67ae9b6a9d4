"""System calls and time of a mesh source's listing: how the manifest's paths are decided.

    python bench/bench_listing.py [--files 50000] [--folders 50] [--sources objaverse,folder]
        [--exclude]

Writes --files empty files in --folders nested folders (once per run, in a temporary folder):
`glbs/000-XXX/<uid>.glb` with an annotations.json for the objaverse source,
`<class>/<part>/<name>.obj` (5 classes) for the folder source, `<class>/{train,test}/*.off` (8
ModelNet10 classes, 16 folders whatever --folders says) for the modelnet source. Then lists each with the source's
`listing` (every record drawn, as the meshes stage does), twice: once counting the calls of
`os.lstat` and `os.stat` (what resolving a path costs: an lstat per path component) and of
`Path.resolve`, once timed without the counting wrappers (best of --repeats). Nothing is
validated: the listing is what runs before any mesh is opened. With --exclude, the records also
go through `meshes.exclude`'s filter (`Excluded`, a list naming nothing listed: what it costs
is each record's keys, whatever matches).

Run it with PYTHONPATH naming the tree to measure (`git archive <commit> cg3d | tar -x -C
/tmp/before` for older code), the same files each time; the output is one line per source.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def make_objaverse(root: Path, files: int, folders: int) -> None:
    uids = [f"{n:032x}" for n in range(files)]
    for n, uid in enumerate(uids):
        folder = root / "glbs" / f"000-{n % folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{uid}.glb").touch()
    classes = [f"class_{k}" for k in range(20)]
    annotations = {c: uids[k :: len(classes)] for k, c in enumerate(classes)}
    (root / "annotations.json").write_text(json.dumps(annotations))


def make_folder(root: Path, files: int, folders: int) -> None:
    classes = 5
    for n in range(files):
        folder = root / f"class_{n % classes}" / f"part_{n % folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"object_{n:06d}.obj").touch()


MODELNET10 = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa"]


def make_modelnet(root: Path, files: int, folders: int) -> None:
    """ModelNet's `<class>/{train,test}/<class>_XXXX.off` (a fixed 16 folders: 8 classes)."""
    for n in range(files):
        name = MODELNET10[n % len(MODELNET10)]
        folder = root / name / ("train", "test")[n // len(MODELNET10) % 2]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}_{n:06d}.off").touch()


def list_all(source: str, root: Path, out: Path, exclude: bool = False) -> int:
    from cg3d.params import MeshesConfig
    from cg3d.pipeline.sources import Excluded, source_listing

    config = MeshesConfig(source=source, root=str(root), workers=1)
    records = source_listing(source)(config, out).records
    if exclude:
        records = Excluded({"no-such-object"}, out).filter(records)
    return sum(1 for _ in records)


def counted(source: str, root: Path, out: Path, exclude: bool) -> tuple[int, dict[str, int]]:
    """Records listed, and the calls of each counted function while listing."""
    counts = {"os.lstat": 0, "os.stat": 0, "Path.resolve": 0}
    real = {"lstat": os.lstat, "stat": os.stat, "resolve": Path.resolve}

    def lstat(*args, **kwargs):
        counts["os.lstat"] += 1
        return real["lstat"](*args, **kwargs)

    def stat(*args, **kwargs):
        counts["os.stat"] += 1
        return real["stat"](*args, **kwargs)

    def resolve(self, *args, **kwargs):
        counts["Path.resolve"] += 1
        return real["resolve"](self, *args, **kwargs)

    os.lstat, os.stat, Path.resolve = lstat, stat, resolve
    try:
        records = list_all(source, root, out, exclude)
    finally:
        os.lstat, os.stat, Path.resolve = real["lstat"], real["stat"], real["resolve"]
    return records, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--folders", type=int, default=50)
    parser.add_argument("--sources", default="objaverse,folder,modelnet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exclude", action="store_true", help="Filter through Excluded too.")
    args = parser.parse_args()
    import cg3d

    print(f"cg3d from {Path(cg3d.__file__).parent}; load average {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="bench-listing-"))
    try:
        for source in args.sources.split(","):
            root, out = work / source / "root", work / source / "out"
            makers = {"objaverse": make_objaverse, "folder": make_folder, "modelnet": make_modelnet}
            makers[source](root, args.files, args.folders)
            out.mkdir()
            records, counts = counted(source, root, out, args.exclude)
            seconds = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                list_all(source, root, out, args.exclude)
                seconds.append(time.perf_counter() - started)
            calls = ", ".join(f"{name} {n:,}" for name, n in counts.items())
            print(
                f"{source}: {records:,} records, {calls}; best of {args.repeats}: "
                f"{min(seconds):.2f} s ({records / min(seconds):,.0f} records/s)"
            )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
