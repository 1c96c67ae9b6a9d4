"""What the pack stage's content-hashed plan costs: `plan_fingerprint` (sha256 of every input
file, issue 16.7) against the whole pack of the same inputs.

The inputs are written with the formats' own writers at the default recipe's sizes: N objects of
8,192-point xyz clouds (float32) and 4 views of 224 px PNG each (a gradient with noise, so the
PNGs do not compress to nothing), captions by the caption stage, one manifest row per object.

    python bench/bench_pack_plan.py --objects 1000 --work /tmp/bench_pack_plan
"""

import argparse
import io
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from cg3d.formats.manifest import SCHEMA, write_classes, write_manifest_table
from cg3d.formats.points import write_points_part
from cg3d.formats.renders import Rendered, dumps_cameras, write_render_part
from cg3d.params import CaptionConfig, PackConfig, RenderConfig
from cg3d.pipeline.captions import caption_objects
from cg3d.pipeline.pack import pack_shards, plan_fingerprint
from cg3d.render.cameras import cameras_of

CLASSES = [f"class{c}" for c in range(10)]
PART = 200  # objects per points and render part (the render stage's default chunk)


def view_png(rng: np.random.Generator, size: int = 224) -> bytes:
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = ramp[None, :, None] * np.ones((size, 1, 3)) + rng.normal(0, 12, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_inputs(work: Path, objects: int) -> None:
    rng = np.random.default_rng(0)
    ids = [f"obj{i:07d}" for i in range(objects)]
    table = pa.table(
        {
            "id": ids,
            "source": ["folder"] * objects,
            "path": [f"{i}.obj" for i in ids],
            "class_name": [CLASSES[i % len(CLASSES)] for i in range(objects)],
            "synonyms": [[] for _ in range(objects)],
            "name": [""] * objects,
            "split": ["test" if i % 5 == 0 else "train" for i in range(objects)],
            "up_axis": ["y"] * objects,
            "sha256": ids,
            "status": ["ok"] * objects,
            "error": [""] * objects,
            "missing": [[] for _ in range(objects)],
        },
        schema=SCHEMA,
    )
    (work / "meshes").mkdir(parents=True)
    write_manifest_table(table, work / "meshes")
    write_classes(CLASSES, work / "meshes")
    views = [view_png(rng) for _ in range(8)]  # reused: hashing cost is per byte, not per PNG
    # a cameras.json that pack's check passes (one for all: pack does not compare its id)
    cameras = dumps_cameras(cameras_of(RenderConfig(views=4, resolution=224), "bench"))
    for folder in ("points", "renders"):
        (work / folder).mkdir()
    for part, start in enumerate(range(0, objects, PART)):
        chunk = ids[start : start + PART]
        clouds = [rng.uniform(-0.5, 0.5, (8192, 3)).astype(np.float32) for _ in chunk]
        write_points_part(work / "points" / f"part-{part:05d}.parquet", chunk, clouds)
        rendered = {
            key: Rendered({f"view_{v:02d}": views[(n + v) % 8] for v in range(4)}, cameras)
            for n, key in enumerate(chunk)
        }
        write_render_part(work / "renders" / f"part-{part:05d}.tar", rendered)
    caption_objects(work / "meshes", work / "captions", CaptionConfig())


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_pack_plan"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    write_inputs(args.work, args.objects)
    dirs = tuple(str(args.work / d) for d in ("meshes", "points", "renders", "captions"))
    inputs = sum(size_mib(Path(d)) for d in dirs)
    config = PackConfig(shard_size=1000, workers=1)
    start = time.perf_counter()
    plan_fingerprint(dirs, config)
    plan = time.perf_counter() - start
    start = time.perf_counter()
    pack_shards(*map(Path, dirs), args.work / "shards", config)
    pack = time.perf_counter() - start
    print(f"{platform.node()}: {args.objects} objects, inputs {inputs:.0f} MiB")
    print(f"plan_fingerprint (sha256 of every input): {plan:.2f} s ({inputs / plan:.0f} MiB/s)")
    print(f"pack_shards, one worker (plan included): {pack:.2f} s; plan share {plan / pack:.0%}")
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
