"""Zero-shot evaluation throughput (shapes/s): cg3d's batched path against the naive ways.

    python bench/bench_eval.py [--shapes 64] [--naive-shapes 4] [--batch-size 32]

Model: the default `train` section of params.yaml (PointTransformer, CG3D-ViT-Tiny-64 CLIP at
random init, 2048 points); classes: ModelNet40's 40 names × the 64 ensemble templates. Inputs:
ModelNet-like shapes of 10,000 points, as the modelnet40_normal_resampled files hold.

Rows, all computing the same scores:
  naive: text per shape      one shape at a time, the class text features re-encoded for every
                             shape (40 × 64 prompts through the text tower each time)
  one at a time, cached text batch size 1, class text features encoded once
  cg3d: batched, cached text `score_benchmark`: batches of --batch-size, text encoded once
  cg3d: … + N prepare workers  the same, shapes prepared (unit sphere + FPS) in N processes
A second table times the model alone on already prepared points (one at a time vs batched),
since on a CPU the preparation (FPS 10,000 → 2,048), the same in every row, dominates.
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cg3d.eval.protocols import CG3D
from cg3d.eval.readers import Benchmark, Shape, prepare_points
from cg3d.eval.zeroshot import ZeroShotConfig, score_benchmark
from cg3d.models.model import build_model, model_config
from cg3d.models.text import class_text_features
from cg3d.params import load_section
from cg3d.protocol import class_names
from cg3d.train.loop import TrainConfig


def synthetic_benchmark(count: int, seed: int = 0) -> Benchmark:
    rng = np.random.default_rng(seed)
    clouds = [rng.normal(size=(10_000, 3)) * rng.uniform(0.5, 2.0, 3) for _ in range(count)]
    classes = class_names("modelnet40")

    def shapes():
        for index, cloud in enumerate(clouds):
            yield Shape(f"shape_{index}", cloud, index % len(classes))

    return Benchmark("synthetic", "bench", classes, count, shapes)


@torch.no_grad()
def one_at_a_time(model, bench: Benchmark, count: int, cached_text: torch.Tensor | None) -> float:
    """Seconds for `count` shapes scored singly; text re-encoded per shape when not cached."""
    n_points = int(model.config["n_points"])
    started = time.perf_counter()
    for index, shape in enumerate(bench.shapes()):
        if index == count:
            break
        text = cached_text
        if text is None:
            text = class_text_features(model, bench.classes, list(CG3D.templates))
        points = torch.from_numpy(prepare_points(shape.points, n_points, seed=index))[None]
        (model.encode_points(points) @ text.T).numpy()
    return time.perf_counter() - started


def timed_scoring(
    model, bench: Benchmark, text: torch.Tensor, batch_size: int, workers: int
) -> float:
    started = time.perf_counter()
    score_benchmark(
        model, bench, ZeroShotConfig(batch_size=batch_size, workers=workers), text_features=text
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=64)
    parser.add_argument(
        "--naive-shapes", type=int, default=4, help="shapes for the slow per-shape-text row"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="prepare processes of the last row")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = load_section(TrainConfig, "train", Path("params.yaml"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(model_config(config, class_names("modelnet40")))
    n_points = int(model.config["n_points"])
    bench = synthetic_benchmark(args.shapes)

    started = time.perf_counter()
    for index, shape in enumerate(bench.shapes()):
        prepare_points(shape.points, n_points, seed=index)
    prepare_s = (time.perf_counter() - started) / args.shapes

    started = time.perf_counter()
    text = class_text_features(model, bench.classes, list(CG3D.templates))
    text_s = time.perf_counter() - started

    naive_s = one_at_a_time(model, bench, args.naive_shapes, None) / args.naive_shapes
    single_s = one_at_a_time(model, bench, args.shapes, text) / args.shapes
    batched_s = timed_scoring(model, bench, text, args.batch_size, 1) / args.shapes
    pooled_s = timed_scoring(model, bench, text, args.batch_size, args.workers) / args.shapes

    prepared = torch.from_numpy(
        np.stack([prepare_points(s.points, n_points, seed=i) for i, s in enumerate(bench.shapes())])
    )
    with torch.no_grad():
        started = time.perf_counter()
        for points in prepared:
            model.encode_points(points[None]) @ text.T
        encode_single_s = (time.perf_counter() - started) / args.shapes
        started = time.perf_counter()
        for start in range(0, len(prepared), args.batch_size):
            model.encode_points(prepared[start : start + args.batch_size]) @ text.T
        encode_batched_s = (time.perf_counter() - started) / args.shapes

    print(
        f"model: {config.encoder} {config.encoder_params}, CLIP {config.clip_model}, {n_points} points"
    )
    print(f"class text features (40 classes × 64 templates): {text_s:.2f} s, once per evaluation")
    print(f"prepare one shape (unit sphere + FPS 10,000 → {n_points}): {1000 * prepare_s:.1f} ms")
    print()
    print("| method | shapes | ms / shape | shapes/s | speed-up vs naive |")
    print("|---|---:|---:|---:|---:|")
    rows = [
        ("naive: text per shape, one at a time", args.naive_shapes, naive_s),
        ("one at a time, cached text", args.shapes, single_s),
        (f"cg3d: batched ({args.batch_size}), cached text", args.shapes, batched_s),
        (f"cg3d: batched, cached text, {args.workers} prepare workers", args.shapes, pooled_s),
    ]
    for name, shapes, seconds in rows:
        print(
            f"| {name} | {shapes} | {1000 * seconds:.1f} | {1 / seconds:.2f} | {naive_s / seconds:.1f}× |"
        )
    print()
    print("| model only (prepared points) | ms / shape | shapes/s | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| one at a time | {1000 * encode_single_s:.1f} | {1 / encode_single_s:.2f} | 1.0× |")
    print(
        f"| batched ({args.batch_size}) | {1000 * encode_batched_s:.1f} | {1 / encode_batched_s:.2f} "
        f"| {encode_single_s / encode_batched_s:.1f}× |"
    )


if __name__ == "__main__":
    main()
