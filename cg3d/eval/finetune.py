"""Supervised classification from the pretrained point encoder.

Modes (`mode`), each optionally few-shot (`shots` = K training shapes per class, drawn with
`seed`; 0 = the whole training split):
  full    the encoder and a linear head on its L2-normalised features train together (AdamW,
          cosine schedule; training shapes get a random scale U(0.8, 1.25) and shift ±0.1)
  linear  a linear probe: the encoder stays frozen, its features are computed once, and only
          the head trains
The train split trains, the test split is evaluated after every epoch. The result is the LAST
epoch; the epoch that scored best on the test set is reported beside it only as
`best_test_selected` (selecting on test is optimistic, so it is never the headline).
"""

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from cg3d.errors import UsageError
from cg3d.eval.metrics import classification_metrics
from cg3d.eval.readers import Benchmark, open_benchmark, prepare_points
from cg3d.params import FinetuneConfig

console = Console(stderr=True)
MODES = ("full", "linear")


def few_shot_indices(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of up to `shots` shapes per class, drawn without replacement."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def load_split(
    benchmark: Benchmark, n_points: int, keep: set[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All (or the `keep` indices of the) shapes, prepared: points (N, n_points, 3), labels (N,)."""
    points, labels = [], []
    for index, shape in enumerate(benchmark.shapes()):
        if keep is None or index in keep:
            points.append(
                prepare_points(
                    shape.points, n_points, benchmark.up_axis, index, not benchmark.normalised
                )
            )
            labels.append(shape.label)
    if not points:
        raise UsageError(f"{benchmark.name} {benchmark.variant}: no shapes")
    return torch.from_numpy(np.stack(points)), torch.tensor(labels)


def augment(points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random per-shape anisotropic scale U(0.8, 1.25) and shift ±0.1 (Point-BERT's fine-tuning)."""
    batch = points.shape[0]
    scale = torch.empty(batch, 1, 3).uniform_(0.8, 1.25, generator=generator)
    shift = torch.empty(batch, 1, 3).uniform_(-0.1, 0.1, generator=generator)
    return points * scale + shift


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


def finetune(checkpoint: Path, out: Path, config: FinetuneConfig) -> dict:
    """Train a classifier from `checkpoint`'s encoder; write OUT/metrics.json (last epoch first)."""
    from cg3d.eval.zeroshot import model_identity
    from cg3d.models.checkpoint import load_model

    config.validate()
    torch.manual_seed(config.seed)
    root = Path(config.root)
    train_set = open_benchmark(
        config.dataset, root, config.variant, config.train_split, config.allow_pickle
    )
    test_set = open_benchmark(
        config.dataset, root, config.variant, config.test_split, config.allow_pickle
    )
    model = load_model(Path(checkpoint), clip_pretrained=config.clip_pretrained or None)
    n_points = int(model.config["n_points"])
    keep = None
    if config.shots:
        labels = np.array([shape.label for shape in train_set.shapes()])
        keep = set(few_shot_indices(labels, config.shots, config.seed).tolist())
    train_points, train_labels = load_split(train_set, n_points, keep)
    test_points, test_labels = load_split(test_set, n_points)

    encoder = model.point_encoder
    dim = int(model.clip.text_projection.shape[-1])
    classifier = Classifier(encoder, dim, len(train_set.classes))
    if config.mode == "linear":
        encoder.eval().requires_grad_(False)
        train_inputs = batched(classifier.features, train_points, config.batch_size)
        test_inputs = batched(classifier.features, test_points, config.batch_size)
        forward, evaluate, params = classifier.head, classifier.head, classifier.head.parameters()
    else:
        train_inputs, test_inputs = train_points, test_points
        forward, evaluate, params = classifier, classifier, classifier.parameters()

    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_inputs) / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=config.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for epoch in range(1, config.epochs + 1):
        if config.mode == "full":
            encoder.train()
        order = torch.randperm(len(train_inputs), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            inputs = train_inputs[index]
            if config.mode == "full":
                inputs = augment(inputs, generator)
            loss = F.cross_entropy(forward(inputs), train_labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss) * len(index)
        encoder.eval()
        scores = batched(evaluate, test_inputs, config.batch_size).numpy()
        result = classification_metrics(scores, test_labels.numpy(), test_set.classes)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / len(order),
                "top1": result["top1"],
                "class_mean": result["class_mean"],
            }
        )
        console.print(
            f"epoch {epoch}/{config.epochs}: loss {history[-1]['train_loss']:.4f}  test top-1 {result['top1']:.2f}%"
        )

    result.pop("confusion")
    best = max(history, key=lambda row: row["top1"])
    metrics = result | {
        "mode": config.mode,
        "shots": config.shots,
        "epochs": config.epochs,
        "n_train": len(train_inputs),
        "dataset": test_set.name,
        "variant": test_set.variant,
        "reported": "last epoch",
        "best_test_selected": best
        | {"note": "epoch chosen on the test set: optimistic, not the result"},
        "history": history,
        **model_identity(model, Path(checkpoint)),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
