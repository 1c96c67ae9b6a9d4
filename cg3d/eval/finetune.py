"""Supervised classification from the pretrained point encoder.

Modes (`mode`), each optionally few-shot (`shots` = K training shapes per class, drawn with
`seed`; 0 = the whole training split):
  full    the encoder and a linear head on its L2-normalised features train together (AdamW,
          cosine schedule; training shapes get a random scale U(0.8, 1.25) and shift ±0.1)
  linear  a linear probe: the encoder stays frozen, its features are computed once, and only
          the head trains
The train split trains, the test split is evaluated after every epoch. The result is the LAST
epoch (OUT/metrics.json, per_class.csv); every epoch is a row of OUT/history.csv, and the
epoch that scored best on the test set is reported only in OUT/details.json as
`best_test_selected` (selecting on test is optimistic, so it is never the headline).
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from cg3d.errors import UsageError
from cg3d.eval.metrics import classification_metrics
from cg3d.eval.readers import Benchmark, color_summary, open_benchmark, prepare_points
from cg3d.eval.results import per_class_rows, write_results
from cg3d.params import FinetuneConfig

console = Console(stderr=True)
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
    point_channels), labels (N,)."""
    points, labels = [], []
    for index, shape in enumerate(benchmark.shapes()):
        if keep is None or index in keep:
            up, normalise = benchmark.up_axis, not benchmark.normalised
            prepared = prepare_points(
                shape.points, n_points, up, index, normalise, shape.colors, point_channels
            )
            points.append(prepared)
            labels.append(shape.label)
    if not points:
        raise UsageError(f"{benchmark.name} {benchmark.variant}: no shapes")
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


@dataclass
class Trainable:
    """What trains in a mode: its inputs (points, or frozen features), the function from an
    input batch to class logits, and the parameters the optimiser moves."""

    train_inputs: torch.Tensor
    test_inputs: torch.Tensor
    logits: Callable[[torch.Tensor], torch.Tensor]
    parameters: Iterable[nn.Parameter]


def trainable(
    classifier: Classifier,
    mode: str,
    train_points: torch.Tensor,
    test_points: torch.Tensor,
    batch_size: int,
) -> Trainable:
    """`full` trains encoder and head on points; `linear` freezes the encoder, computes its
    features once, and trains the head alone on them."""
    if mode == "full":
        return Trainable(train_points, test_points, classifier, classifier.parameters())
    classifier.encoder.eval().requires_grad_(False)
    return Trainable(
        batched(classifier.features, train_points, batch_size),
        batched(classifier.features, test_points, batch_size),
        classifier.head,
        classifier.head.parameters(),
    )


def open_splits(config: FinetuneConfig) -> tuple[Benchmark, Benchmark]:
    """The (train, test) benchmarks the config names."""
    root = Path(config.root)
    return tuple(
        open_benchmark(config.dataset, root, config.variant, split, config.allow_pickle)
        for split in (config.train_split, config.test_split)
    )


def few_shot_keep(train_set: Benchmark, config: FinetuneConfig) -> set[int] | None:
    """The training shapes to keep: `shots` per class, or None for all of them."""
    if not config.shots:
        return None
    labels = np.array([shape.label for shape in train_set.shapes()])
    return set(few_shot_indices(labels, config.shots, config.seed).tolist())


def train_epoch(
    run: Trainable,
    labels: torch.Tensor,
    optimiser,
    schedule,
    augmented: bool,
    generator: torch.Generator,
    batch_size: int,
) -> float:
    """One pass over the training inputs in a seeded random order; the mean loss."""
    order = torch.randperm(len(run.train_inputs), generator=generator)
    total = 0.0
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        inputs = run.train_inputs[index]
        if augmented:
            inputs = augment(inputs, generator)
        loss = F.cross_entropy(run.logits(inputs), labels[index])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        total += float(loss) * len(index)
    return total / len(order)


def fit(
    classifier: Classifier,
    run: Trainable,
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    classes: list[str],
    config: FinetuneConfig,
) -> tuple[list[dict], dict]:
    """Train for `config.epochs`, testing after each: (one history row per epoch, the last
    epoch's classification metrics)."""
    optimiser = torch.optim.AdamW(run.parameters, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(run.train_inputs) / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=config.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(config.seed)
    full = config.mode == "full"
    history = []
    for epoch in range(1, config.epochs + 1):
        if full:
            classifier.encoder.train()
        loss = train_epoch(
            run, train_labels, optimiser, schedule, full, generator, config.batch_size
        )
        classifier.encoder.eval()
        scores = batched(run.logits, run.test_inputs, config.batch_size).numpy()
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


def finetune(checkpoint: Path, out: Path, config: FinetuneConfig) -> dict:
    """Train a classifier from `checkpoint`'s encoder; write OUT/metrics.json (the last epoch),
    per_class.csv, history.csv and details.json (the test-selected epoch); return them all."""
    from cg3d.eval.zeroshot import model_identity
    from cg3d.models.checkpoint import load_model

    config.validate()
    torch.manual_seed(config.seed)
    train_set, test_set = open_splits(config)
    model = load_model(Path(checkpoint), clip_pretrained=config.clip_pretrained or None)
    n_points, channels = int(model.config["n_points"]), int(model.config["point_channels"])
    keep = few_shot_keep(train_set, config)
    train_points, train_labels = load_split(train_set, n_points, keep, channels)
    test_points, test_labels = load_split(test_set, n_points, point_channels=channels)
    dim = int(model.clip.text_projection.shape[-1])
    classifier = Classifier(model.point_encoder, dim, len(train_set.classes))
    run = trainable(classifier, config.mode, train_points, test_points, config.batch_size)
    history, last = fit(classifier, run, train_labels, test_labels, test_set.classes, config)

    confusion = last.pop("confusion")
    best = max(history, key=lambda row: row["top1"])
    headline = {k: v for k, v in last.items() if k != "per_class"} | {
        "mode": config.mode,
        "shots": config.shots,
        "epochs": config.epochs,
        "n_train": len(run.train_inputs),
        "dataset": test_set.name,
        "variant": test_set.variant,
        "reported": "last epoch",
        "skipped_samples": train_set.skipped() + test_set.skipped(),
        "refused_outside_root": train_set.refused() + test_set.refused(),
        **color_summary(test_set, channels),
        **model_identity(model, Path(checkpoint)),
    }
    details = {
        "best_test_selected": best
        | {"note": "epoch chosen on the test set: optimistic, not the result"}
    }
    per_class = per_class_rows(last["per_class"], confusion)
    write_results(Path(out), headline, details, per_class, history)
    return headline | details | {"per_class": last["per_class"], "history": history}
