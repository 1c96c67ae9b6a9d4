"""Peak memory of the data stages against the number of manifest rows (flat, or not?).

For each size N, every stage runs in its own Python process under `/usr/bin/time -v` with one
worker (so the stage's own memory is what is measured, not a pool's) and its peak resident set
size is read from `Maximum resident set size`:

- meshes: the `folder` source over N hard links of one tiny OBJ in 10 class folders (every
  file is listed, hashed and validated; all but one per content are `duplicate` rows);
- caption, pack, verify: a manifest of N `ok` rows written directly, points parts of 16-point
  clouds (1,000 objects a part), render parts of one tiny PNG view and cameras per object,
  then `caption` → `pack` (shards of 1,000) → `verify`;
- plan: the setup of sample and render on that manifest (the chunk plan, then every chunk's
  manifest rows handed out as records), without sampling or rendering.

    python bench/bench_scale.py --rows 10000 100000 --work /tmp/bench_scale
    python bench/bench_scale.py --rows 1000000 --stages meshes

`--lookups` instead times finding one object's points and views among parts that overlap in id
range (a grown data set: 40 parts of consecutive ids plus 10 parts of ids spread over the whole
range), against the naive reading of every part (what `find_points` / `find_rendered` did).
"""

import argparse
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cg3d.formats.manifest import SCHEMA, write_classes, write_manifest_table
from cg3d.formats.points import find_points, points_parts, write_points_part
from cg3d.formats.renders import (
    Rendered,
    dumps_cameras,
    find_rendered,
    render_parts,
    write_render_part,
)
from cg3d.formats.tar import tar_samples
from cg3d.params import RenderConfig
from cg3d.render.cameras import cameras_of

CLASSES = [f"class{c}" for c in range(10)]
PART = 1000
TINY_OBJ = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"

STAGES = {
    "meshes": (
        "from cg3d.pipeline.sources import build_manifest; from cg3d.params import MeshesConfig;"
        "build_manifest(MeshesConfig(source='folder', root=r'{w}/root', workers=1), r'{w}/m')"
    ),
    "caption": (
        "from cg3d.pipeline.captions import caption_objects, CaptionConfig;"
        "caption_objects(r'{w}/meshes', r'{w}/captions', CaptionConfig())"
    ),
    "pack": (
        "from cg3d.pipeline.pack import pack_shards, PackConfig;"
        "pack_shards(r'{w}/meshes', r'{w}/points', r'{w}/renders', r'{w}/captions', r'{w}/shards',"
        " PackConfig(shard_size=1000, workers=1))"
    ),
    "verify": (
        "from cg3d.pipeline.verify import verify_shards; r = verify_shards(r'{w}/shards');"
        "assert not r.problems, r.problems[:3]"
    ),
    # What sample and render do before any object is worked on: plan the chunks
    # (`plan_chunks`, the membership table) and hand out every chunk's manifest rows.
    "plan": (
        "from functools import partial; from pathlib import Path\n"
        "from cg3d.files import output_lock\n"
        "from cg3d.pipeline.chunks import ChunkedOutput, plan_chunks\n"
        "from cg3d.formats.manifest import MeshRecord, manifest_tables\n"
        "with output_lock(Path(r'{w}/plan')):\n"
        "    o = ChunkedOutput(Path(r'{w}/plan'), '.parquet', 'sample', {{}}); o.prepare()\n"
        "    p = plan_chunks(partial(manifest_tables, r'{w}/meshes'), o, 1000)\n"
        "    jobs = p.jobs(p.recomputed)\n"
        "    n = sum(len([MeshRecord(**r) for r in rows]) for _, rows in jobs)\n"
        "    assert n == p.manifest_rows, n"
    ),
}
NEEDS_PARTS = ("caption", "pack", "verify")  # the stages that read points and render parts


def mesh_folder(work: Path, rows: int) -> None:
    """N hard links of one tiny OBJ (a copy per 50,000 links: file systems cap a file's
    links near 65,000), spread over the class folders."""
    for c in CLASSES:
        (work / "root" / c).mkdir(parents=True, exist_ok=True)
    for i in range(rows):
        original = work / f"tiny{i // 50_000}.obj"
        if i % 50_000 == 0:
            original.write_text(TINY_OBJ)
        os.link(original, work / "root" / CLASSES[i % len(CLASSES)] / f"m{i:07d}.obj")


def stage_inputs(work: Path, rows: int, parts: bool) -> None:
    """A manifest of N ok rows (ids in random order of creation, as uids are) and, when
    `parts`, the points and render parts of every object."""
    rng = np.random.default_rng(0)
    ids = sorted(f"{u:016x}" for u in rng.choice(2**62, size=rows, replace=False))
    table = pa.table(
        {
            "id": ids,
            "source": ["folder"] * rows,
            "path": [f"{i}.obj" for i in ids],
            "class_name": [CLASSES[i % len(CLASSES)] for i in range(rows)],
            "synonyms": [[] for _ in range(rows)],
            "name": [""] * rows,
            "split": ["test" if i % 5 == 0 else "train" for i in range(rows)],
            "up_axis": ["y"] * rows,
            "sha256": ids,
            "status": ["ok"] * rows,
            "error": [""] * rows,
            "missing": [[] for _ in range(rows)],
        },
        schema=SCHEMA,
    )
    (work / "meshes").mkdir(parents=True)
    write_manifest_table(table, work / "meshes")
    write_classes(CLASSES, work / "meshes")
    del table
    if not parts:
        return
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format="PNG")
    # a cameras.json that pack's check passes (one for all: pack does not compare its id)
    cameras = dumps_cameras(cameras_of(RenderConfig(views=1, resolution=8), "bench"))
    png = buffer.getvalue()
    for folder in ("points", "renders"):
        (work / folder).mkdir()
    cloud = rng.uniform(-0.5, 0.5, (16, 3)).astype(np.float32)
    for part, start in enumerate(range(0, rows, PART)):
        chunk = ids[start : start + PART]
        write_points_part(work / "points" / f"part-{part:05d}.parquet", chunk, [cloud] * len(chunk))
        objects = {i: Rendered({"view_00": png}, cameras) for i in chunk}
        write_render_part(work / "renders" / f"part-{part:05d}.tar", objects)


def measure(stage: str, work: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one stage in its own process."""
    code = STAGES[stage].format(w=work)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    start = time.perf_counter()
    run = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{run.stderr[-3000:]}")
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)[1])
    return kib / 1024, seconds


def naive_find_points(points_dir: Path, object_id: str) -> np.ndarray | None:
    for part in points_parts(points_dir):
        table = pq.read_table(part, filters=[("id", "==", object_id)])
        if table.num_rows:
            n = table["n_points"][0].as_py()
            return np.asarray(table["points"][0].values, dtype=np.float32).reshape(n, -1)
    return None


def naive_find_rendered(renders_dir: Path, object_id: str) -> bytes | None:
    for part in render_parts(renders_dir):
        with open(part, "rb") as stream:
            for sample in tar_samples(stream):  # every member read
                if sample["__key__"] == object_id:
                    return sample["view_00.png"]
    return None


def lookups(work: Path, objects: int = 10_000, points: int = 2048, repeats: int = 5) -> None:
    """Seconds per lookup of one object, new against naive, on overlapping parts."""
    rng = np.random.default_rng(0)
    ids = sorted(f"{u:016x}" for u in rng.choice(2**62, size=objects, replace=False))
    spread = set(ids[::5][: objects // 5])  # one in five: "added later", in every id range
    chunks = [c for c in np.array_split([i for i in ids if i not in spread], 40)]
    chunks += np.array_split(sorted(spread), 10)
    pngs = {f"view_{v:02d}": bytes(rng.integers(0, 255, 3000, dtype=np.uint8)) for v in range(4)}
    for folder in ("points", "renders"):
        (work / folder).mkdir(parents=True)
    for part, chunk in enumerate(chunks):
        chunk = list(chunk)
        clouds = [rng.uniform(-1, 1, (points, 3)).astype(np.float32) for _ in chunk]
        write_points_part(work / "points" / f"part-{part:05d}.parquet", chunk, clouds)
        objects_in = {i: Rendered(pngs, b"{}") for i in chunk}
        write_render_part(work / "renders" / f"part-{part:05d}.tar", objects_in)
    targets = [sorted(spread)[-1], ids[-1]]  # one in a spread part, one in the last part
    ways = {
        "points, naive (every part filtered)": lambda k: naive_find_points(work / "points", k),
        "points, find_points (row groups by id range)": lambda k: find_points(work / "points", k),
        "views, naive (every part read)": lambda k: naive_find_rendered(work / "renders", k),
        "views, find_rendered (members of the id only)": lambda k: find_rendered(
            render_parts(work / "renders"), k
        ),
    }
    for name, way in ways.items():
        start = time.perf_counter()
        for _ in range(repeats):
            for key in targets:
                assert way(key) is not None
        per = (time.perf_counter() - start) / (repeats * len(targets))
        print(f"| {name} | {len(chunks)} | {per * 1000:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_scale"))
    parser.add_argument("--lookups", action="store_true", help="Time lookups instead.")
    args = parser.parse_args()
    print(f"# {platform.node()} {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    if args.lookups:
        shutil.rmtree(args.work / "lookups", ignore_errors=True)
        lookups(args.work / "lookups")
        shutil.rmtree(args.work / "lookups", ignore_errors=True)
        return
    results = []
    for rows in args.rows:
        work = args.work / str(rows)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        start = time.perf_counter()
        if "meshes" in args.stages:
            mesh_folder(work, rows)
        if set(args.stages) - {"meshes"}:
            stage_inputs(work, rows, parts=bool(set(args.stages) & set(NEEDS_PARTS)))
        print(f"{rows} rows: inputs made in {time.perf_counter() - start:.0f} s", flush=True)
        for stage in args.stages:
            rss, seconds = measure(stage, work)
            results.append({"rows": rows, "stage": stage, "peak_rss_mib": rss, "seconds": seconds})
            print(f"| {rows:,} | {stage} | {rss:.0f} | {seconds:.1f} |", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
