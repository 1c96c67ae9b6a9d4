"""The `sample` stage on 1,000 meshes, against the naive per-object way, in one run.

    python bench/bench_sample.py [--meshes DIR] [--objects 1000] [--points 8192] [--naive-objects 10]

--meshes: a `cg3d meshes` output folder; without it, the script makes --objects meshes of the
default synthetic source (`cg3d meshes --source synthetic`, spread over its 10 classes).
The stage runs with its defaults (a worker per CPU) and chunks of 100 objects. The naive way,
timed on --naive-objects objects spread over the set and scaled: one process, trimesh load + trimesh.sample.sample_surface (10,000 points) + the
Point-BERT/ULIP FPS loop down to N.
"""

import argparse
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import trimesh

from cg3d.formats.manifest import mesh_file, read_manifest
from cg3d.geometry.fps import naive_farthest_point_sample
from cg3d.geometry.sampling import surface_sample_count
from cg3d.params import SampleConfig, cpu_count
from cg3d.pipeline.sample import sample_points
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from cg3d.protocol import class_names


def synthetic_meshes(root: Path, objects: int) -> Path:
    """The default data set (`cg3d meshes --source synthetic`), objects spread over its classes."""
    per_class = math.ceil(objects / len(class_names("modelnet10")))
    build_manifest(MeshesConfig(source="synthetic", per_class=per_class), root)
    return root


def naive_seconds_per_object(meshes_dir: Path, count: int, points: int) -> float:
    records = read_manifest(meshes_dir, ok_only=True)
    records = records[:: max(1, len(records) // count)][:count]  # every class, not the first
    start = time.perf_counter()
    for record in records:
        mesh = trimesh.load(mesh_file(meshes_dir, record), force="mesh")
        surface, _ = trimesh.sample.sample_surface(mesh, surface_sample_count(points), seed=0)
        naive_farthest_point_sample(surface, points, 0)
    return (time.perf_counter() - start) / len(records)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers, once joined)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meshes", type=Path)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--points", type=int, default=8192)
    parser.add_argument("--naive-objects", type=int, default=10)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_sample_"))
    try:
        meshes_dir = args.meshes or synthetic_meshes(work / "meshes", args.objects)
        n_objects = len(read_manifest(meshes_dir, ok_only=True))
        config = SampleConfig(points=args.points, chunk_size=100)
        load_before = os.getloadavg()[0]
        cpu_start, start = cpu_seconds(), time.perf_counter()
        summary = sample_points(meshes_dir, work / "points", config)
        stage_seconds = time.perf_counter() - start
        stage_cpu = cpu_seconds() - cpu_start
        load_after = os.getloadavg()[0]
        naive = naive_seconds_per_object(meshes_dir, args.naive_objects, args.points)
    finally:
        shutil.rmtree(work)

    workers = cpu_count()
    print(f"\n{n_objects} meshes → {args.points} points each ({summary.sampled} sampled)")
    print(f"{'method':<44} {'total s':>9} {'objects/s':>10}")
    row = f"cg3d sample ({workers} workers, chunks of 100)"
    print(f"{row:<44} {stage_seconds:>9.1f} {n_objects / stage_seconds:>10.1f}")
    label = f"naive, 1 process (timed on {args.naive_objects}, scaled)"
    print(f"{label:<44} {naive * n_objects:>9.1f} {1 / naive:>10.1f}")
    print(f"speed-up: {naive * n_objects / stage_seconds:.1f}×")
    # The machine is shared: the CPU time says what the wall time would be on idle cores.
    print(
        f"stage CPU time {stage_cpu:.1f} s ({1000 * stage_cpu / n_objects:.0f} ms/object): "
        f"≈ {stage_cpu / workers:.1f} s wall on {workers} idle cores; "
        f"load average {load_before:.1f} before, {load_after:.1f} after"
    )


if __name__ == "__main__":
    main()
