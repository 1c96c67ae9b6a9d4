"""Time of the meshes stage over OBJs that name MTLs and textures, some of them missing.

    PYTHONPATH=<tree> python bench/bench_mtl_references.py [--objects 1000] [--repeats 3]

Writes --objects small OBJs (an icosphere of 80 triangles each, 10 class folders) in a temporary
folder: every one names its own `.mtl`; a tenth of those MTLs are missing, and of the rest a
third name a texture that is missing (the others one that exists: 4 bytes, never decoded).
Then runs the stage (`build_manifest`, one worker) --repeats times into a fresh folder each and
prints the best and the median, with the counts by status and of objects lacking a file they
name (`Summary.lacking`, absent in code before the manifest's `missing` column). Run it with
PYTHONPATH naming the tree to measure (`git archive <commit> cg3d | tar -x -C /tmp/before` for
older code), on the same machine, alternately.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def make_source(root: Path, objects: int) -> None:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=1)
    faces = "\n".join(f"f {a + 1} {b + 1} {c + 1}" for a, b, c in sphere.faces)
    for n in range(objects):
        folder = root / f"class_{n % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        scale = 1 + n / objects  # each file's own bytes: no duplicates
        vertices = "\n".join(f"v {x * scale:.6f} {y:.6f} {z:.6f}" for x, y, z in sphere.vertices)
        (folder / f"object_{n:06d}.obj").write_text(
            f"mtllib m{n}.mtl\nusemtl m\n{vertices}\n{faces}\n"
        )
        if n % 10:
            (folder / f"m{n}.mtl").write_text(f"newmtl m\nKd 0.5 0.5 0.5\nmap_Kd t{n}.png\n")
            if n % 3:
                (folder / f"t{n}.png").write_bytes(b"\x89PNG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import cg3d
    from cg3d.params import MeshesConfig
    from cg3d.pipeline.sources import build_manifest

    print(f"cg3d from {Path(cg3d.__file__).parent}; load average {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="bench-mtl-"))
    try:
        make_source(work / "root", args.objects)
        config = MeshesConfig(source="folder", root=str(work / "root"), workers=1)
        seconds = []
        for repeat in range(args.repeats):
            out = work / f"out-{repeat}"
            started = time.perf_counter()
            summary = build_manifest(config, out)
            seconds.append(time.perf_counter() - started)
        lacking = getattr(summary, "lacking", "n/a")
        print(
            f"{args.objects} objects: best {min(seconds):.2f} s, median "
            f"{statistics.median(seconds):.2f} s; {dict(summary.counts)}, lacking {lacking}"
        )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
