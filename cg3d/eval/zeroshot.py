"""Zero-shot classification: point features against prompt-ensembled class text features.

`zeroshot(checkpoint, out, config)` is what `cg3d eval zeroshot` and the DVC `eval_zeroshot`
stage run. It streams the benchmark in batches (read → prepare → encode), so memory holds one
batch of points plus the (N, C) score matrix, and writes (cg3d.eval.results):
  OUT/metrics.json      numbers only: top1, top3, top5 (each only below the class count),
                        class_mean, n_shapes, tied_top1 (shapes whose top score two classes
                        share to float32 rounding: the lower class index counts, or the one
                        rounding put above), skipped_samples, refused_outside_root,
                        topped_up_shapes (fewer points than fed: some repeated), and
                        shapes_without_color for a colour model
  OUT/about.json        what was measured: dataset, variant, protocol (the zero-shot
                        protocol, cg3d.eval.protocols), templates (which made the class
                        prototypes, "ulip64 (64)"), n_points (fed to the model), checkpoint,
                        encoder, clip_model, clip_pretrained (bool: real weights loaded),
                        clip_weights, color (where a colour model's rgb came from), audit (the
                        leakage audit done on this test set, or "none")
  OUT/per_class.csv     class, shapes, top1: per-class accuracy
  OUT/predictions.csv   one row per shape (key, actual, predicted, protocol): DVC's confusion
                        plot
  OUT/confusion.png     the confusion matrix, rows normalised; with more than
                        CONFUSION_PLOT_CLASSES classes (Objaverse-LVIS's 1,156) a plot says
                        nothing, and OUT/top_confusions.csv lists the most frequent mistakes instead

How shapes are prepared and class text features made is the protocol's (`--protocol`, default
`cg3d`; `cg3d-public` is the public eval.py). Class text features (C classes × the protocol's
templates) are encoded once, in batches, and cached under `text_cache` by CLIP weights and the
protocol's text settings (class names as written, templates, normalisation): the text tower is
frozen, so a second evaluation with the same CLIP (another checkpoint, another run) reads them back.
"""

import functools
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cg3d import terminal
from cg3d.errors import UsageError
from cg3d.eval.metrics import classification_metrics, top1_predictions, topk_accuracies
from cg3d.eval.protocols import CG3D, Protocol, get_protocol
from cg3d.eval.readers import (
    Benchmark,
    color_summary,
    log_topped_up,
    open_benchmark,
    prepare_counted,
)
from cg3d.eval.results import (
    begin_results,
    check_lost,
    check_results_out,
    per_class_rows,
    write_results,
    write_rows,
)
from cg3d.files import atomic_path, shown_name, why_not_a_folder, write_json
from cg3d.formats.npy import read_npy
from cg3d.formats.textfeatures import (
    TextFeatures,
    features_about,
    features_for,
    read_text_features,
)
from cg3d.models.text import alike_features, check_class_features
from cg3d.params import ZeroShotConfig, bound_workers
from cg3d.stopping import (
    Stopwatch,
    pool_stops_whole,
    run_task,
    start_pool_worker,
    start_resource_tracker,
    workers_start_deaf,
)

console = terminal.console(stderr=True)
log = logging.getLogger(__name__)
CONFUSION_PLOT_CLASSES = 100
TOP_CONFUSIONS = 100  # rows of top_confusions.csv


def prepared_shapes(
    benchmark: Benchmark,
    n_points: int,
    limit: int = 0,
    workers: int = 1,
    point_channels: int = 3,
    protocol: Protocol = CG3D,
) -> Iterator[tuple[np.ndarray, int, str]]:
    """(points, label, key) of every shape, prepared in order as `protocol` says (xyz, and rgb
    when the model takes `point_channels` 6); `workers` > 1 prepares them in a process pool
    with a bounded window of shapes in flight, so memory stays flat. The shapes topped up to
    `n_points` are counted in `benchmark.topped_up`; those that cannot be prepared are skipped
    and counted in `benchmark.skipped()`."""

    shapes = itertools.islice(benchmark.shapes(), limit or None)
    protocol = protocol.for_benchmark(benchmark.name)  # its constant colour for this set

    def arguments(index: int, shape) -> tuple:
        up, normalise = benchmark.up_axis, not benchmark.normalised
        return shape.points, n_points, up, index, normalise, shape.colors, point_channels, protocol

    total = min(benchmark.size, limit) if limit else benchmark.size
    workers = bound_workers(workers, jobs=total) if workers > 1 else workers
    if workers <= 1:
        for index, shape in enumerate(shapes):
            compute = functools.partial(prepare_counted, *arguments(index, shape))
            if (prepared := benchmark.prepared(compute, shape.key)) is not None:
                yield prepared, shape.label, shape.key
        return
    # The window holds what the answer needs (future, label, key), not the shapes: a worker
    # returns the topped-up count with the points, so no raw cloud waits here for it.
    window: deque = deque()
    context = multiprocessing.get_context("spawn")
    start_resource_tracker()  # one a SIGHUP to the group cannot kill
    # The workers stop on SIGTERM and SIGHUP as on Ctrl-C (by default they died mid-shape),
    # and exit when this process is killed with -9 (they waited for shapes forever)
    with (
        ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=start_pool_worker,
            initargs=(os.getpid(), workers),
        ) as pool,
        pool_stops_whole(pool),
    ):  # a stop drops the queued shapes (up to 8 a worker)
        for index, shape in enumerate(shapes):
            with workers_start_deaf():
                future = pool.submit(run_task, prepare_counted, *arguments(index, shape))
            window.append((future, shape.label, shape.key))
            if len(window) >= 8 * workers:
                future, label, key = window.popleft()
                if (prepared := benchmark.prepared(future.result, key)) is not None:
                    yield prepared, label, key
        while window:
            future, label, key = window.popleft()
            if (prepared := benchmark.prepared(future.result, key)) is not None:
                yield prepared, label, key


def iter_point_batches(
    benchmark: Benchmark,
    n_points: int,
    batch_size: int,
    limit: int = 0,
    workers: int = 1,
    point_channels: int = 3,
    protocol: Protocol = CG3D,
) -> Iterator[tuple[torch.Tensor, np.ndarray, list[str]]]:
    """(points (B, n_points, point_channels), labels (B,), keys) batches of prepared shapes;
    under a protocol that feeds short clouds as they are (`min_points_fed`), a batch ends
    early where the next shape's number of points differs."""
    points, labels, keys = [], [], []
    shapes = prepared_shapes(benchmark, n_points, limit, workers, point_channels, protocol)
    for prepared, label, key in shapes:
        if points and len(prepared) != len(points[0]):
            yield torch.from_numpy(np.stack(points)), np.array(labels), keys
            points, labels, keys = [], [], []
        points.append(prepared)
        labels.append(label)
        keys.append(key)
        if len(points) == batch_size:
            yield torch.from_numpy(np.stack(points)), np.array(labels), keys
            points, labels, keys = [], [], []
    if points:
        yield torch.from_numpy(np.stack(points)), np.array(labels), keys


def model_identity(model, checkpoint: Path) -> dict:
    """Which checkpoint and which CLIP weights produced a result (every about.json says so)."""
    from cg3d.models.clip import clip_about

    config = model.config
    return {
        "checkpoint": str(checkpoint),
        "encoder": config["encoder"],
        **clip_about(config),  # as training's about.json says it
    }


def unit_features(features: torch.Tensor, what: str) -> torch.Tensor:
    """`features` (normalised by the model) if every row has length 1; else a UsageError.
    Weights that are finite but large overflow the encoder (a row of 1e37s has an infinite
    length): normalising gave rows of zeros, every class scored 0 and the first one won, so
    an eval reported chance-level numbers with exit 0."""
    lengths = features.float().norm(dim=-1)
    bad = ~((lengths - 1).abs() <= 1e-3)  # NaN is bad too
    if bad.any():
        raise UsageError(
            f"{what}: {int(bad.sum())} of {len(features)} features of a batch are not unit "
            f"vectors (length {float(lengths[bad][0]):g}): the model's weights overflow "
            "(damaged or rescaled?)"
        )
    return features


def protocol_n_points(model, protocol: Protocol) -> int:
    """Points fed to the model: the protocol's number, or the model's own (0)."""
    return protocol.n_points or int(model.config["n_points"])


def distinct_texts(text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct rows of the (C, D) `text_features`, each class's row among them), for
    `class_scores`: once per benchmark, not per batch (LVIS: 1,156 rows, 14 ms on a CPU)."""
    return torch.unique(text_features, dim=0, return_inverse=True)


def class_scores(features: torch.Tensor, texts: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(N, C) scores: each of `features` · each class's text feature, `texts` from
    `distinct_texts`. Identical text features (identical prompts, equal bit for bit) get
    identical columns, so that the tie rule (the lower class index) decides them: a float32
    matmul can round two equal columns apart (CPU, 17 classes, a batch of 7 shapes: 1.1e-8),
    and the column rounding put up won."""
    distinct, column = texts
    return (features @ distinct.T)[:, column]


def check_alike_classes(classes: list[str], text_features: torch.Tensor, where: str) -> None:
    """Log the classes whose text features are identical, naming the first two: their prompts
    are one text to CLIP (the same words, or names so long that the first 77 tokens of the
    prompts agree and the rest is cut), so a shape of either is counted for the first. The
    tied_top1 count said so only after the run, naming no class. Every class alike is refused:
    a template whose '{}' falls past CLIP's 77 tokens gave every class one prompt, and the run
    scored chance with exit 0."""
    alike = alike_features(text_features)
    if alike is None:
        return
    first, second = (shown_name(classes[index]) for index in alike)
    distinct = len(torch.unique(text_features, dim=0))
    if distinct == 1:
        raise UsageError(
            f"{where}: all {len(classes)} classes have one text feature, as {first} and "
            f"{second}: their prompts are one text to CLIP (a template whose '{{}}' falls past "
            "the 77 tokens CLIP reads, or names alike for as long)"
        )
    log.warning(
        "%d classes have the text features of another, as %s and %s: their prompts are one "
        "text to CLIP (the same words, or the same first 77 tokens, the rest cut); a shape of "
        "either is counted for the first",
        len(classes) - distinct,
        first,
        second,
    )


@torch.no_grad()
def score_benchmark(
    model, benchmark: Benchmark, config: ZeroShotConfig, text_features=None, label: str = ""
):
    """(scores (N, C), labels (N,), keys): every shape's normalised point feature · every
    class's text feature (a cosine under a normalising protocol); the argmax is the guess.
    The shapes topped up are logged in one line under `label` (default: the benchmark's name;
    the benchmark harness names the model too)."""
    protocol = get_protocol(config.protocol)
    benchmark.check_choice("zero-shot")
    n_points = protocol_n_points(model, protocol)
    if text_features is None:
        text_features = cached_text_features(
            model,
            protocol.written_names(benchmark.classes, benchmark.folder_names, benchmark.name),
            protocol,
            Path(config.text_cache) if config.text_cache else None,
        )
    check_class_features(text_features, benchmark.classes, benchmark.name)
    check_alike_classes(benchmark.classes, text_features, benchmark.name)
    texts = distinct_texts(text_features)
    total = min(benchmark.size, config.limit) if config.limit else benchmark.size
    scores, labels, keys = [], [], []
    device = model.device()
    with terminal.LoggedProgress(console=console, transient=True) as progress:
        task = progress.add_task(f"zero-shot {benchmark.name}", total=total)
        for points, batch_labels, batch_keys in iter_point_batches(
            benchmark,
            n_points,
            config.batch_size,
            config.limit,
            config.workers,
            int(model.config["point_channels"]),
            protocol,
        ):
            features = unit_features(model.encode_points(points.to(device)), "the point encoder")
            scores.append(class_scores(features, texts).cpu().numpy())
            labels.append(batch_labels)
            keys.extend(batch_keys)
            progress.advance(task, len(batch_keys))
    if not keys:
        raise benchmark.no_shapes(f"{benchmark.name}: no shapes to evaluate")
    log_topped_up(label or benchmark.name, benchmark.topped_up, len(keys), n_points)
    return np.concatenate(scores), np.concatenate(labels), keys


def text_cache_key(model, names: list[str], protocol: Protocol) -> str | None:
    """What class prototypes depend on: CLIP's model and weights, and the protocol's text
    settings (the class names as it writes them, its templates, whether it normalises).
    None when CLIP has no named weights (a random init lives only in its checkpoint)."""
    config = model.config
    if not config.get("clip_pretrained_loaded"):
        return None
    text = [names, list(protocol.templates), protocol.normalise_text, protocol.class_names]
    identity = [config["clip_model"], config.get("clip_weights"), *text]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def check_text_cache(cache: str, option: str) -> None:
    """UsageError when the text cache folder `cache` ('' none) is there but no folder: a file
    or FIFO failed its first write, after the model loaded (a random CLIP caches nothing, so
    only runs with real weights met it)."""
    if cache and os.path.lexists(cache) and (why := why_not_a_folder(cache)):
        raise UsageError(f"{option}: {cache} {why}")


def cached_text_features(
    model, names: list[str], protocol: Protocol, cache: Path | None
) -> torch.Tensor:
    """The protocol's class features of `names` (written as it writes them), read from
    `cache/<key>.npy` when an earlier run wrote it."""
    key = text_cache_key(model, names, protocol) if cache is not None else None
    path = cache / f"{key}.npy" if key else None
    cached = _cached_rows(path, len(names)) if path is not None else None
    if cached is not None:
        return torch.from_numpy(cached).to(model.device())
    features = protocol.class_features(model, names)
    if path is not None:
        _write_cache_entry(path, features.float().cpu().numpy())
    return features


def _write_cache_entry(path: Path, features: np.ndarray) -> None:
    """Cache `features` at `path`; a cache that cannot be written (a read-only or full disk,
    an absent HOME's folder on a compute node) is skipped with one warning: the features are
    in memory, and the run's own outputs are written elsewhere."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.save(handle, features, allow_pickle=False)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        message = f"text cache {path.parent} not written ({reason}): no cache this run"
        warnings.warn(message, stacklevel=2)


def _cached_rows(path: Path, rows: int) -> np.ndarray | None:
    """The (rows, D) finite float features cached at `path`; None (encode anew, overwrite) for
    anything else: a cache folder is shared and outlives runs, so a damaged or planted entry
    (a header claiming 10^12 rows, an object array, NaN) must not end or skew the run."""
    try:
        features = read_npy(path)
    except (OSError, ValueError):  # absent, not .npy, a header bigger than the file
        return None
    usable = features.ndim == 2 and features.shape[0] == rows and features.dtype.kind == "f"
    return features if usable and np.isfinite(features).all() else None


def file_text_features(
    model, classes: list[str], found: TextFeatures | None
) -> torch.Tensor | None:
    """The rows of the text-features file `found` (`read_text_features`) for `classes`, fitted
    to `model` (None: no file given)."""
    if found is None:
        return None
    from cg3d.models.clip import clip_embed_dim
    from cg3d.models.text import display_name

    dim = clip_embed_dim(model.config["clip_model"])
    features = features_for(found, classes, dim, display_name, model.config["clip_model"])
    return torch.from_numpy(features).to(model.device())


def top_confusions(confusion: np.ndarray, classes: list[str], top: int) -> list[dict]:
    """The `top` most frequent (actual, predicted) mistakes, with their share of the class:
    most first, then in (actual, predicted) order. Only the cells that hold a mistake (at most
    one a shape) are sorted: a sort of all C² cells took 18 s and 1.6 GB for 10k classes."""
    confusion = np.asarray(confusion, dtype=np.int64)
    cells = np.flatnonzero(confusion)  # ascending: the stable sort keeps this order in a tie
    actuals, guesses = np.unravel_index(cells, confusion.shape)
    mistaken = actuals != guesses
    cells, actuals, guesses = cells[mistaken], actuals[mistaken], guesses[mistaken]
    counts = confusion.flat[cells]
    order = np.argsort(-counts, kind="stable")[:top]
    shapes = confusion.sum(axis=1)
    rows = []
    for actual, predicted, count in zip(
        actuals[order].tolist(), guesses[order].tolist(), counts[order].tolist(), strict=True
    ):
        share = 100.0 * count / shapes[actual]
        rows.append(
            {
                "actual": classes[actual],
                "predicted": classes[predicted],
                "count": count,
                "share_of_actual": round(float(share), 2),
            }
        )
    return rows


def audit_summary(audit: str) -> dict | str:
    """What the metrics say about leakage: the audit's counts, or that none was done."""
    if not audit:
        return "none"
    from cg3d.eval.audit import read_audit

    return read_audit(Path(audit))


def zeroshot(
    checkpoint: Path, out: Path, config: ZeroShotConfig, text_features: Path | None = None
) -> dict:
    """Evaluate `checkpoint` zero-shot on the configured set; write OUT/metrics.json,
    OUT/about.json and plots; return both files' keys (and per_class).

    `text_features`: class features from a file (cg3d.formats.textfeatures) instead of the
    model's text tower, which is then never built.
    """
    from cg3d.eval.plots import confusion_plot
    from cg3d.models.checkpoint import load_model

    config.validate()
    check_results_out(out, "eval zeroshot")
    protocol = get_protocol(config.protocol)  # an unknown name fails before anything loads
    benchmark = open_benchmark(
        config.dataset, Path(config.root), config.variant, config.split, config.allow_pickle
    )
    # the user's files read before the model loads: a wrong one fails in seconds
    audit = audit_summary(config.audit)
    check_text_cache(config.text_cache, "eval.zeroshot.text_cache")
    # read once, here; its fit to the model once that is loaded
    found = read_text_features(Path(text_features)) if text_features is not None else None
    model = load_model(Path(checkpoint), clip_pretrained=config.clip_pretrained or None)
    classes = file_text_features(model, benchmark.classes, found)
    clock = Stopwatch()
    scores, labels, keys = score_benchmark(model, benchmark, config, classes)
    seconds = clock.seconds()
    n_points = protocol_n_points(model, protocol)
    metrics = classification_metrics(scores, labels, benchmark.classes)
    metrics |= topk_accuracies(scores, labels, len(benchmark.classes), (3,))
    if metrics["tied_top1"]:  # torch.topk (the public codes) may have decided them otherwise
        log.warning(
            "%d shapes score highest for two classes at once, to float32 rounding (identical "
            "class prompts?): each counted for the first of them, or the one rounding put above",
            metrics["tied_top1"],
        )
    confusion = metrics.pop("confusion")
    channels = int(model.config["point_channels"])
    colour_numbers, colour_about = color_summary(channels, benchmark.color, benchmark.uncolored)
    metrics |= {
        "skipped_samples": benchmark.skipped(),
        "refused_outside_root": benchmark.refused(),  # of those: paths outside --root
        "topped_up_shapes": benchmark.topped_up,
        **colour_numbers,
    }
    about = {
        "dataset": benchmark.name,
        "variant": benchmark.variant,
        "protocol": protocol.name,
        # which made the class prototypes
        "templates": f"file {text_features}" if text_features else protocol.templates_label(),
        **({"text_features": features_about(found)} if found else {}),
        "n_points": n_points,
        **model_identity(model, Path(checkpoint)),
        **colour_about,
        "audit": audit,
    }
    out = Path(out)
    headline = {k: v for k, v in metrics.items() if k != "per_class"}
    per_class = per_class_rows(metrics["per_class"], confusion)
    begin_results(out, "eval zeroshot")
    # timings differ between machines: untracked (gitignored), never in the tracked metrics
    timing = {"seconds": seconds, "shapes_per_second": metrics["n_shapes"] / seconds}
    write_json(out / "run.json", timing)
    predicted = top1_predictions(scores)
    names = benchmark.classes
    rows = [
        {"key": key, "actual": names[actual], "predicted": names[guess], "protocol": protocol.name}
        for key, actual, guess in zip(keys, labels, predicted, strict=True)
    ]
    write_rows(out / "predictions.csv", rows)
    # One of the two: the other, an earlier run's into this folder (of another class count),
    # would stay beside these numbers as if it were theirs.
    if len(benchmark.classes) > CONFUSION_PLOT_CLASSES:
        (out / "confusion.png").unlink(missing_ok=True)
        write_rows(out / "top_confusions.csv", top_confusions(confusion, names, TOP_CONFUSIONS))
    else:
        (out / "top_confusions.csv").unlink(missing_ok=True)
        title = f"{benchmark.name} {benchmark.variant}: top-1 {metrics['top1']:.1f}%"
        confusion_plot(confusion, benchmark.classes, out / "confusion.png", title)
    write_results(out, headline, about, per_class=per_class)  # the numbers last
    where = f"{benchmark.name} at {config.root}, split {config.split}"
    check_lost(
        benchmark.skipped(), metrics["n_shapes"], config.max_lost, "eval.zeroshot.max_lost", where
    )
    return metrics | about
