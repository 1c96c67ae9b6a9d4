"""Farthest point sampling of one object: cg3d's FPS against the textbook loop, same inputs.

    python bench/bench_fps.py [--candidates 10000] [--points 8192 2048 1024] [--objects 3]

Rows: the naive per-point loop of the public Point-BERT / ULIP data utils (a distance array,
a masked update and an argmax per pick, each a pass over all points); the same loop vectorised
over float32 columns (numpy) and in torch on the CPU (why fps.py is numpy); and cg3d's FPS
(full passes only until the KD-tree neighbours suffice). Inputs: float32 area-weighted surface
samples of a few meshes (as the sample stage makes them), the start index fixed, so that every
method must return the same indices.
"""

import argparse
import time

import numpy as np
import torch
import trimesh

from cg3d.geometry.fps import farthest_point_sample, naive_farthest_point_sample
from cg3d.geometry.sampling import sample_surface


def vectorised_numpy(points: np.ndarray, n: int, start: int) -> np.ndarray:
    columns = np.ascontiguousarray(points[:, :3].T, dtype=np.float32)
    nearest = np.full(len(points), np.inf, dtype=np.float32)
    picked = np.empty(n, dtype=np.int64)
    current = start
    for i in range(n):
        picked[i] = current
        d = (columns[0] - columns[0, current]) ** 2
        d += (columns[1] - columns[1, current]) ** 2
        d += (columns[2] - columns[2, current]) ** 2
        np.minimum(nearest, d, out=nearest)
        current = int(nearest.argmax())
    return picked


def torch_cpu(points: np.ndarray, n: int, start: int) -> np.ndarray:
    xyz = torch.from_numpy(np.ascontiguousarray(points[:, :3], dtype=np.float32))
    nearest = torch.full((len(xyz),), float("inf"))
    picked = torch.empty(n, dtype=torch.long)
    current = start
    for i in range(n):
        picked[i] = current
        nearest = torch.minimum(nearest, ((xyz - xyz[current]) ** 2).sum(dim=1))
        current = int(nearest.argmax())
    return picked.numpy()


METHODS = {
    "naive loop (Point-BERT/ULIP)": naive_farthest_point_sample,
    "vectorised numpy, float32": vectorised_numpy,
    "torch CPU, same loop": torch_cpu,
    "cg3d fps.py": farthest_point_sample,
}


def inputs(candidates: int, objects: int) -> list[np.ndarray]:
    shapes = [
        trimesh.creation.icosphere(subdivisions=3),
        trimesh.creation.box(extents=[1.0, 2.0, 0.3]),
        trimesh.creation.torus(major_radius=1.0, minor_radius=0.3),
        trimesh.creation.cylinder(radius=0.5, height=2.0),
    ]
    rng = np.random.default_rng(0)
    return [
        sample_surface(s.vertices, s.faces, candidates, rng, normals=False).astype(np.float32)
        for s in (shapes * objects)[:objects]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--points", type=int, nargs="+", default=[8192, 2048, 1024])
    parser.add_argument("--objects", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one object per core, as in the stage's worker pool

    clouds = inputs(args.candidates, args.objects)
    print(f"FPS {args.candidates} → N points, {len(clouds)} objects, mean seconds per object")
    print(f"{'N':>6}  {'method':<30} {'s/object':>9} {'vs naive':>9}  same indices")
    for n in args.points:
        reference, naive_time = None, None
        for name, method in METHODS.items():
            start = time.perf_counter()
            results = [method(cloud, n, 0) for cloud in clouds]
            seconds = (time.perf_counter() - start) / len(clouds)
            if reference is None:
                reference, naive_time = results, seconds
            same = all(np.array_equal(a, b) for a, b in zip(results, reference, strict=True))
            print(f"{n:>6}  {name:<30} {seconds:>9.3f} {naive_time / seconds:>8.1f}×  {same}")


if __name__ == "__main__":
    main()
