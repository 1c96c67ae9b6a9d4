"""Zero-shot classification: point features against prompt-ensembled class text features.

`zeroshot(checkpoint, out, config)` is what `cg3d eval zeroshot` and the DVC `eval_zeroshot`
stage run. It streams the benchmark in batches (read → prepare → encode), so memory holds one
batch of points plus the (N, C) score matrix, and writes:
  OUT/metrics.json      top1, top5, class_mean, per_class, n_shapes, dataset, variant,
                        checkpoint, clip_model, clip_pretrained (bool: real weights loaded), clip_weights
  OUT/predictions.csv   one row per shape (key, actual, predicted): DVC's confusion plot
  OUT/confusion.png     the confusion matrix, rows normalised
"""

import csv
import functools
import itertools
import json
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from cg3d.errors import UsageError
from cg3d.eval.metrics import classification_metrics
from cg3d.eval.prompts import class_text_features, prompt_templates
from cg3d.eval.readers import Benchmark, open_benchmark, prepare_points
from cg3d.params import ZeroShotConfig

console = Console(stderr=True)


def prepared_shapes(
    benchmark: Benchmark, n_points: int, limit: int = 0, workers: int = 1
) -> Iterator[tuple[np.ndarray, int, str]]:
    """(points, label, key) of every shape, prepared in order; `workers` > 1 prepares them in a
    process pool with a bounded window of shapes in flight, so memory stays flat."""

    shapes = itertools.islice(benchmark.shapes(), limit or None)

    def options(index: int) -> tuple:
        return benchmark.up_axis, index, not benchmark.normalised

    if workers <= 1:
        for index, shape in enumerate(shapes):
            compute = functools.partial(prepare_points, shape.points, n_points, *options(index))
            yield _checked(compute, benchmark, shape.key), shape.label, shape.key
        return
    window: deque = deque()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for index, shape in enumerate(shapes):
            future = pool.submit(prepare_points, shape.points, n_points, *options(index))
            window.append((future, shape.label, shape.key))
            if len(window) >= 8 * workers:
                future, label, key = window.popleft()
                yield _checked(future.result, benchmark, key), label, key
        while window:
            future, label, key = window.popleft()
            yield _checked(future.result, benchmark, key), label, key


def _checked(compute: Callable[[], np.ndarray], benchmark: Benchmark, key: str) -> np.ndarray:
    """The prepared points, or a UsageError naming the shape that could not be prepared."""
    try:
        return compute()
    except ValueError as error:
        raise UsageError(f"{benchmark.name}: shape {key}: {error}") from None


def iter_point_batches(
    benchmark: Benchmark, n_points: int, batch_size: int, limit: int = 0, workers: int = 1
) -> Iterator[tuple[torch.Tensor, np.ndarray, list[str]]]:
    """(points (B, n_points, 3), labels (B,), keys) batches of prepared shapes."""
    points, labels, keys = [], [], []
    for prepared, label, key in prepared_shapes(benchmark, n_points, limit, workers):
        points.append(prepared)
        labels.append(label)
        keys.append(key)
        if len(points) == batch_size:
            yield torch.from_numpy(np.stack(points)), np.array(labels), keys
            points, labels, keys = [], [], []
    if points:
        yield torch.from_numpy(np.stack(points)), np.array(labels), keys


def model_identity(model, checkpoint: Path) -> dict:
    """Which checkpoint and which CLIP weights produced a result (every metrics file says so)."""
    config = model.config
    return {
        "checkpoint": str(checkpoint),
        "encoder": config["encoder"],
        "clip_model": config["clip_model"],
        # As in the training metrics: a bool, and the weights by name.
        "clip_pretrained": bool(config["clip_pretrained_loaded"]),
        "clip_weights": config["clip_pretrained"]
        if config["clip_pretrained_loaded"]
        else "none (random init)",
    }


@torch.no_grad()
def score_benchmark(model, benchmark: Benchmark, config: ZeroShotConfig, text_features=None):
    """(scores (N, C), labels (N,), keys): cosine similarity of every shape to every class."""
    if text_features is None:
        text_features = class_text_features(
            model, benchmark.classes, prompt_templates(config.single_prompt)
        )
    total = min(benchmark.size, config.limit) if config.limit else benchmark.size
    scores, labels, keys = [], [], []
    device = model.device()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"zero-shot {benchmark.name}", total=total)
        for points, batch_labels, batch_keys in iter_point_batches(
            benchmark,
            int(model.config["n_points"]),
            config.batch_size,
            config.limit,
            config.workers,
        ):
            features = model.encode_points(points.to(device))
            scores.append((features @ text_features.T).cpu().numpy())
            labels.append(batch_labels)
            keys.extend(batch_keys)
            progress.advance(task, len(batch_keys))
    if not keys:
        raise UsageError(f"{benchmark.name}: no shapes to evaluate")
    return np.concatenate(scores), np.concatenate(labels), keys


def zeroshot(checkpoint: Path, out: Path, config: ZeroShotConfig) -> dict:
    """Evaluate `checkpoint` zero-shot on the configured set; write OUT/metrics.json and plots."""
    from cg3d.eval.plots import confusion_plot
    from cg3d.models.checkpoint import load_model

    config.validate()
    benchmark = open_benchmark(
        config.dataset, Path(config.root), config.variant, config.split, config.allow_pickle
    )
    model = load_model(Path(checkpoint), clip_pretrained=config.clip_pretrained or None)
    started = time.perf_counter()
    scores, labels, keys = score_benchmark(model, benchmark, config)
    seconds = time.perf_counter() - started
    metrics = classification_metrics(scores, labels, benchmark.classes)
    confusion = np.array(metrics.pop("confusion"))
    metrics |= {
        "dataset": benchmark.name,
        "variant": benchmark.variant,
        "prompts": config.single_prompt or "ulip64 ensemble",
        **model_identity(model, Path(checkpoint)),
        "shapes_per_second": metrics["n_shapes"] / seconds,
        "skipped_samples": benchmark.skipped(),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    predicted = np.argsort(-scores, axis=1, kind="stable")[:, 0]
    with (out / "predictions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "actual", "predicted"])
        for key, actual, guess in zip(keys, labels, predicted, strict=True):
            writer.writerow([key, benchmark.classes[actual], benchmark.classes[guess]])
    title = f"{benchmark.name} {benchmark.variant}: top-1 {metrics['top1']:.1f}%"
    confusion_plot(confusion, benchmark.classes, out / "confusion.png", title)
    return metrics
