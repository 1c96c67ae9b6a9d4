"""The `render` stage with persistent Blender workers against one Blender process per object.

    python bench/bench_render.py [--meshes DIR] [--objects 200] [--naive-objects 200]
                                 [--views 4] [--resolution 224] [--samples 16] [--workers 2]

--meshes: a `cg3d meshes` output folder; without it, the script builds the default synthetic
data set (`cg3d meshes --source synthetic`) with --objects spread over its classes. For WORKBENCH
and CYCLES (--samples) it times, in one run, the stage (persistent workers, chunks of 50) and
the per-object way of the public GET3D/Objaverse render scripts: a fresh Blender process per
object (start, set up the scene, render its views, exit), --workers of them at a time, on the
first --naive-objects objects. Prints views/s and the ratio.
"""

import argparse
import math
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cg3d.formats.manifest import mesh_file, read_manifest
from cg3d.params import RenderConfig
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from cg3d.render.cameras import cameras_of
from cg3d.render.stage import render_meshes
from cg3d.render.supervisor import BlenderWorker


def synthetic_meshes(root: Path, objects: int) -> Path:
    build_manifest(MeshesConfig(source="synthetic", per_class=math.ceil(objects / 10)), root)
    return root


def per_object_views_per_second(meshes_dir: Path, count: int, config: RenderConfig) -> float:
    records = read_manifest(meshes_dir, ok_only=True)[:count]

    def one_process(record) -> None:
        with BlenderWorker(config.worker_settings(), config.timeout) as worker:
            views = cameras_of(config, record.id)["views"]
            reason = worker.render(record.id, mesh_file(meshes_dir, record), record.up_axis, views)
            assert reason is None, reason

    start = time.perf_counter()
    with ThreadPoolExecutor(config.workers) as pool:
        list(pool.map(one_process, records))
    return config.views * len(records) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meshes", type=Path)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--naive-objects", type=int, default=200)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-render-"))
    try:
        meshes = args.meshes or synthetic_meshes(scratch / "meshes", args.objects)
        rows = []
        for engine in ("workbench", "cycles"):
            config = RenderConfig(
                views=args.views,
                resolution=args.resolution,
                engine=engine,
                samples=args.samples,
                chunk_size=50,
                workers=args.workers,
            )
            summary = render_meshes(meshes, scratch / f"out-{engine}", config)
            persistent = summary.views / summary.seconds
            naive = per_object_views_per_second(meshes, args.naive_objects, config)
            rows.append(
                (
                    engine,
                    summary.rendered,
                    persistent,
                    min(args.naive_objects, summary.objects),
                    naive,
                )
            )
        print(
            f"\n{args.views} views at {args.resolution} px, {args.workers} workers, "
            f"cycles {args.samples} samples"
        )
        print(
            f"{'engine':<10} {'objects':>7} {'persistent views/s':>19} {'objects':>7} {'per-object views/s':>19} {'ratio':>6}"
        )
        for engine, n, persistent, n_naive, naive in rows:
            print(
                f"{engine:<10} {n:>7} {persistent:>19.1f} {n_naive:>7} {naive:>19.2f} {persistent / naive:>5.1f}×"
            )
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
