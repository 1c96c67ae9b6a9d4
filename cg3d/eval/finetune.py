"""Supervised classification from the pretrained point encoder.

Modes (`mode`), each optionally few-shot (`shots` = K training shapes per class, drawn with
`seed`; 0 = the whole training split; a class with fewer gives all it has, and metrics.json
counts such classes, and the test classes with no training shape: `training_coverage`):
  full    the encoder and a linear head on its L2-normalised features train together (AdamW,
          cosine schedule; training shapes get a random scale U(0.8, 1.25) and shift ±0.1)
  linear  a linear probe: the encoder stays frozen, its L2-normalised features are computed
          once, and a multinomial logistic regression is fitted on them to convergence by
          full-batch L-BFGS (CLIP's paper), its L2 penalty `probe_l2` (`fit_probe`); an SGD
          schedule of a few epochs leaves such a head far from its optimum
The train split trains. In full mode the test split is evaluated after every epoch and the
result is the LAST epoch (OUT/metrics.json, per_class.csv; OUT/about.json says what was
measured: mode, shots, the model, the dataset); every epoch is a row of
OUT/history.csv, and the epoch that scored best on the test set is reported only in
OUT/details.json as `best_test_selected` (selecting on test is optimistic, so it is never the
headline). In linear mode the fitted probe is tested once; details.json holds its fit.
"""

import logging
import math
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cg3d import terminal
from cg3d.eval.metrics import classification_metrics
from cg3d.eval.readers import (
    Benchmark,
    color_summary,
    log_topped_up,
    open_benchmark,
    prepare_counted,
)
from cg3d.eval.results import begin_results, check_results_out, per_class_rows, write_results
from cg3d.params import FinetuneConfig

console = terminal.console(stderr=True)
log = logging.getLogger(__name__)
MODES = ("full", "linear")


def few_shot_indices(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of up to `shots` shapes per class, drawn without replacement."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def load_split(
    benchmark: Benchmark, n_points: int, keep: set[int] | None = None, point_channels: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """All (or the `keep` indices of the) shapes, prepared: points (N, n_points,
    point_channels), labels (N,); those topped up to `n_points` are counted in
    `benchmark.topped_up` (and logged once); those that cannot be prepared are skipped and
    counted in `benchmark.skipped()`."""
    points, labels = [], []
    for index, shape in enumerate(benchmark.shapes()):
        if keep is None or index in keep:
            up, normalise = benchmark.up_axis, not benchmark.normalised
            compute = partial(
                prepare_counted,
                shape.points,
                n_points,
                up,
                index,
                normalise,
                shape.colors,
                point_channels,
            )
            if (prepared := benchmark.prepared(compute, shape.key)) is not None:
                points.append(prepared)
                labels.append(shape.label)
    if not points:
        raise benchmark.no_shapes(f"{benchmark.name} {benchmark.variant}: no shapes")
    log_topped_up(
        f"{benchmark.name} {benchmark.variant}", benchmark.topped_up, len(points), n_points
    )
    return torch.from_numpy(np.stack(points)), torch.tensor(labels)


def augment(points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random per-shape anisotropic scale U(0.8, 1.25) and shift ±0.1 (Point-BERT's
    fine-tuning) of xyz; rgb columns are left as they are."""
    batch = points.shape[0]
    scale = torch.empty(batch, 1, 3).uniform_(0.8, 1.25, generator=generator)
    shift = torch.empty(batch, 1, 3).uniform_(-0.1, 0.1, generator=generator)
    return torch.cat([points[..., :3] * scale + shift, points[..., 3:]], dim=-1)


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, dim: int, n_classes: int):
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(dim, n_classes)

    def features(self, points: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(points).float(), dim=-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(points))


@torch.no_grad()
def batched(function, tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [function(tensor[i : i + batch_size]) for i in range(0, len(tensor), batch_size)]
    )


def probe_objective(
    head: nn.Linear, features: torch.Tensor, labels: torch.Tensor, l2: float
) -> torch.Tensor:
    """Mean cross-entropy + l2/2 · ‖W‖²; the bias is not penalised (as scikit-learn's)."""
    return F.cross_entropy(head(features), labels) + 0.5 * l2 * head.weight.square().sum()


def fit_probe(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, l2: float, iterations: int
) -> tuple[nn.Linear, dict]:
    """A multinomial logistic regression on `features`, fitted to convergence as CLIP's paper
    does: full-batch L-BFGS with a strong-Wolfe line search, from zero weights (the objective
    is convex, so the start only matters when l2 = 0 and the classes are separable).
    Returns the head (float32) and {iterations, objective, gradient}: the L-BFGS iterations
    run, the final objective and its largest gradient entry (near 0 once converged)."""
    features = features.double()  # the tolerances below are finer than float32 resolves
    head = nn.Linear(features.shape[1], n_classes, dtype=torch.float64)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimiser = torch.optim.LBFGS(
        head.parameters(),
        max_iter=iterations,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad(set_to_none=True)
        loss = probe_objective(head, features, labels, l2)
        loss.backward()
        return loss

    optimiser.step(closure)
    objective = closure().item()
    gradient = max(float(p.grad.abs().max()) for p in head.parameters())
    ran = optimiser.state[head.weight]["n_iter"]
    return head.float(), {"iterations": ran, "objective": objective, "gradient": gradient}


def open_splits(config: FinetuneConfig) -> tuple[Benchmark, Benchmark]:
    """The (train, test) benchmarks the config names."""
    root = Path(config.root)
    return tuple(
        open_benchmark(config.dataset, root, config.variant, split, config.allow_pickle)
        for split in (config.train_split, config.test_split)
    )


def training_coverage(
    train_labels: np.ndarray, test_labels: np.ndarray, classes: list[str], shots: int
) -> dict[str, int]:
    """What the training shapes leave out, for metrics.json: `test_classes_untrained`, the
    classes with test shapes but no training shape (their test shapes cannot be classified
    right), and with `shots` `classes_below_shots`, the classes trained on fewer than `shots`
    shapes (a split that short of a class gives all it has). Both are logged by name: a
    few-shot result otherwise reads as K shots of every class."""
    trained = np.bincount(train_labels, minlength=len(classes))
    tested = np.bincount(test_labels, minlength=len(classes)) > 0
    untrained = np.flatnonzero(tested & (trained == 0))
    coverage = {"test_classes_untrained": len(untrained)}
    if len(untrained):
        names = ", ".join(classes[c] for c in untrained[:5]) + ("..." if len(untrained) > 5 else "")
        log.warning("%d test classes have no training shape (%s)", len(untrained), names)
    if shots:
        below = np.flatnonzero((trained > 0) & (trained < shots))
        coverage["classes_below_shots"] = len(below)
        if len(below):
            names = ", ".join(f"{classes[c]} {trained[c]}" for c in below[:5])
            names += "..." if len(below) > 5 else ""
            log.warning(
                "%d classes have fewer than %d training shapes (%s)", len(below), shots, names
            )
    return coverage


def few_shot_keep(train_set: Benchmark, config: FinetuneConfig) -> set[int] | None:
    """The training shapes to keep: `shots` per class, or None for all of them."""
    if not config.shots:
        return None
    labels = np.array([shape.label for shape in train_set.shapes()])
    return set(few_shot_indices(labels, config.shots, config.seed).tolist())


def train_epoch(
    classifier: Classifier,
    points: torch.Tensor,
    labels: torch.Tensor,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    batch_size: int,
) -> float:
    """One pass over the augmented training shapes in a seeded random order; the mean loss."""
    order = torch.randperm(len(points), generator=generator)
    total = 0.0
    classifier.encoder.train()
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        loss = F.cross_entropy(classifier(augment(points[index], generator)), labels[index])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        total += float(loss) * len(index)
    classifier.encoder.eval()
    return total / len(order)


def fit_full(
    classifier: Classifier,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    classes: list[str],
    config: FinetuneConfig,
) -> tuple[list[dict], dict]:
    """Train encoder and head for `config.epochs` on (points, labels), testing after each:
    (one history row per epoch, the last epoch's classification metrics)."""
    (train_points, train_labels), (test_points, test_labels) = train, test
    optimiser = torch.optim.AdamW(
        classifier.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_points) / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=config.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for epoch in range(1, config.epochs + 1):
        loss = train_epoch(
            classifier,
            train_points,
            train_labels,
            optimiser,
            schedule,
            generator,
            config.batch_size,
        )
        scores = batched(classifier, test_points, config.batch_size).numpy()
        result = classification_metrics(scores, test_labels.numpy(), classes)
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss,
                "top1": result["top1"],
                "class_mean": result["class_mean"],
            }
        )
        console.print(
            f"epoch {epoch}/{config.epochs}: loss {loss:.4f}  test top-1 {result['top1']:.2f}%"
        )
    return history, result


def fit_linear(
    classifier: Classifier,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    classes: list[str],
    config: FinetuneConfig,
) -> tuple[dict, dict]:
    """Freeze the encoder, compute its features once and fit the probe on them:
    (the fit's summary, the test's classification metrics)."""
    (train_points, train_labels), (test_points, test_labels) = train, test
    classifier.encoder.eval().requires_grad_(False)
    train_features = batched(classifier.features, train_points, config.batch_size)
    head, probe = fit_probe(
        train_features,
        train_labels,
        classifier.head.out_features,
        config.probe_l2,
        config.probe_iterations,
    )
    classifier.head = head
    scores = batched(classifier, test_points, config.batch_size).numpy()
    result = classification_metrics(scores, test_labels.numpy(), classes)
    console.print(
        f"probe: {probe['iterations']} L-BFGS iterations, objective {probe['objective']:.4f}"
        f"  test top-1 {result['top1']:.2f}%"
    )
    return probe, result


def finetune(checkpoint: Path, out: Path, config: FinetuneConfig) -> dict:
    """Train a classifier from `checkpoint`'s encoder; write OUT/metrics.json (the last epoch,
    or the fitted probe), about.json (what was measured), per_class.csv, details.json (the
    test-selected epoch, or the probe's fit) and, in full mode, history.csv; return them all."""
    from cg3d.eval.zeroshot import model_identity
    from cg3d.models.checkpoint import load_model
    from cg3d.models.clip import clip_embed_dim

    config.validate()
    check_results_out(out, "finetune")
    torch.manual_seed(config.seed)
    train_set, test_set = open_splits(config)
    train_set.check_choice("fine-tuning")  # before the model loads: one class was 100 %
    model = load_model(Path(checkpoint), clip_pretrained=config.clip_pretrained or None)
    n_points, channels = int(model.config["n_points"]), int(model.config["point_channels"])
    keep = few_shot_keep(train_set, config)
    train = load_split(train_set, n_points, keep, channels)
    test = load_split(test_set, n_points, point_channels=channels)
    # said before training, not after it: a run of many epochs is stopped once it is known
    coverage = training_coverage(train[1].numpy(), test[1].numpy(), test_set.classes, config.shots)
    # from the teacher's config: a bigG teacher's tower is not built for a number
    dim = clip_embed_dim(model.config["clip_model"])
    classifier = Classifier(model.point_encoder, dim, len(train_set.classes))
    if config.mode == "full":
        history, last = fit_full(classifier, train, test, test_set.classes, config)
        best = max(history, key=lambda row: row["top1"])
        details = {
            "best_test_selected": best
            | {"note": "epoch chosen on the test set: optimistic, not the result"}
        }
        how = {"epochs": config.epochs, "reported": "last epoch"}
    else:
        probe, last = fit_linear(classifier, train, test, test_set.classes, config)
        history, details = None, {"probe": probe}
        how = {"probe_l2": config.probe_l2, "reported": "fitted probe"}

    confusion = last.pop("confusion")
    colour_numbers, colour_about = color_summary(channels, test_set.color, test_set.uncolored)
    headline = {k: v for k, v in last.items() if k != "per_class"} | {
        "n_train": len(train[0]),
        **coverage,
        "skipped_samples": train_set.skipped() + test_set.skipped(),
        "refused_outside_root": train_set.refused() + test_set.refused(),
        "topped_up_shapes": train_set.topped_up + test_set.topped_up,
        **colour_numbers,
    }
    about = {
        "mode": config.mode,
        "shots": config.shots,
        **how,
        "dataset": test_set.name,
        "variant": test_set.variant,
        "n_points": n_points,
        **colour_about,
        **model_identity(model, Path(checkpoint)),
    }
    per_class = per_class_rows(last["per_class"], confusion)
    begin_results(Path(out), "finetune")
    write_results(Path(out), headline, about, details, per_class, history)
    everything = headline | about | details
    return everything | {"per_class": last["per_class"], "history": history or []}
