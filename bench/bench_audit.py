"""Choosing the leakage audit's same-shape threshold (cg3d.eval.audit), and what it catches.

Distances between shape descriptors of
  same:     a synthetic mesh and itself rotated about +Y, rescaled, shifted, resampled with
            another point count and seed, and noised (σ of the unit-sphere radius);
  distinct: two different synthetic objects (same class or not: all pairs).
Prints the quantiles of both and how many of each fall under candidate thresholds.

    python bench/bench_audit.py [--per-class 12] [--noise 0.005]
"""

import argparse
import itertools
import time

import numpy as np

from cg3d.eval.audit import DEFAULT_THRESHOLD, shape_descriptor
from cg3d.geometry.frame import normalization
from cg3d.geometry.sampling import sample_surface
from cg3d.pipeline.sources.synthetic import GENERATORS, make_object


def points_of(vertices, faces, count, seed):
    rng = np.random.default_rng(seed)
    centre, scale = normalization(vertices)
    return sample_surface((vertices - centre) * scale, faces, count, rng, False)


def transformed(points, rng, noise):
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    noisy = points + rng.normal(scale=noise, size=points.shape)  # points in the unit sphere
    return noisy @ rotation.T * rng.uniform(0.3, 3.0) + rng.uniform(-1, 1, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--noise", type=float, default=0.005)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    originals, copies = [], []
    for class_name in GENERATORS:
        for index in range(args.per_class):
            vertices, faces = make_object(class_name, index, 0)
            originals.append(shape_descriptor(points_of(vertices, faces, 2048, index)))
            counts = int(rng.choice([2048, 4096, 8192, 10000]))
            copy = transformed(points_of(vertices, faces, counts, 1000 + index), rng, args.noise)
            copies.append(shape_descriptor(copy))
    seconds = time.perf_counter() - started
    originals, copies = np.stack(originals), np.stack(copies)
    same = np.linalg.norm(originals - copies, axis=1)
    classes = [c for c in GENERATORS for _ in range(args.per_class)]
    pairs = list(itertools.combinations(range(len(originals)), 2))
    distinct = np.array([np.linalg.norm(originals[i] - originals[j]) for i, j in pairs])
    same_class = np.array([classes[i] == classes[j] for i, j in pairs])
    quantiles = (0.0, 0.01, 0.5, 0.99, 1.0)
    print(f"{len(originals)} objects, {len(distinct)} distinct pairs; {seconds:.1f} s")
    print("same     quantiles", np.round(np.quantile(same, quantiles), 4))
    print("distinct quantiles", np.round(np.quantile(distinct, quantiles), 4))
    print("  other class     ", np.round(np.quantile(distinct[~same_class], quantiles), 4))
    for threshold in sorted({0.03, 0.04, 0.05, 0.06, 0.08, DEFAULT_THRESHOLD}):
        caught = (same < threshold).mean()
        under = distinct < threshold
        print(
            f"threshold {threshold:.2f}: same caught {caught:.1%}; distinct pairs under: "
            f"{under.sum()} ({(under & ~same_class).sum()} of different classes)"
        )


if __name__ == "__main__":
    main()
