"""sample.fps: fpsample's bucket FPS against cg3d's exact FPS, in one run, same inputs.

    python bench/bench_fps_bucket.py [--candidates 10000] [--points 2048 8192] [--objects 10]

Inputs: float32 area-weighted surface samples of synthetic meshes (as the sample stage makes
them), one start index per object shared by both methods. Coverage radius: the largest distance
from a candidate to its nearest pick (what FPS minimises, greedily); the ratio is bucket / exact
per object. Times are the median per object.
"""

import argparse
import time

import numpy as np

from cg3d.geometry.fps import coverage_radius, fps_indices
from cg3d.geometry.frame import normalization
from cg3d.geometry.sampling import sample_surface
from cg3d.pipeline.sources.synthetic import GENERATORS, make_object


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--points", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--objects", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    clouds = []
    for k in range(args.objects):
        vertices, faces = make_object(sorted(GENERATORS)[k % len(GENERATORS)], k, 0)
        centre, scale = normalization(vertices)
        points = sample_surface((vertices - centre) * scale, faces, args.candidates, rng, False)
        clouds.append(points.astype(np.float32))
    fps_indices(clouds[0], 16, 0, "bucket")  # load the library before timing
    for n in args.points:
        times = {"exact": [], "bucket": []}
        ratios = []
        for cloud in clouds:
            start = int(rng.integers(len(cloud)))
            radius = {}
            for method in times:
                began = time.perf_counter()
                picked = fps_indices(cloud, n, start, method)
                times[method].append(time.perf_counter() - began)
                radius[method] = coverage_radius(cloud, picked)
            ratios.append(radius["bucket"] / radius["exact"])
        exact, bucket = (1000 * np.median(times[m]) for m in ("exact", "bucket"))
        print(
            f"{args.candidates} -> {n}: exact {exact:.1f} ms, bucket {bucket:.1f} ms "
            f"({exact / bucket:.1f}x); coverage radius bucket/exact: min {min(ratios):.4f} "
            f"median {np.median(ratios):.4f} max {max(ratios):.4f}"
        )


if __name__ == "__main__":
    main()
