"""Held-out accuracy after each epoch: zero-shot over class prototypes, and point→image."""

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch

from cg3d.errors import UsageError
from cg3d.models.model import CG3D
from cg3d.models.text import check_class_features, class_text_features, templates_label
from cg3d.protocol import templates


def held_out_prototypes(model: CG3D, template_set: str) -> tuple[torch.Tensor, str]:
    """(C, D) class prototypes of `template_set` (the model library's function, as eval's)
    and the label the metrics give them, e.g. "cg3d (63)"."""
    template_list = templates(template_set)
    classes = list(model.config["classes"])
    # a dead text tower's prototypes (zeros, NaN) scored every class alike: a chance-level
    # curve from the first epoch, trained to the end, where eval's check refuses it
    prototypes = check_class_features(
        class_text_features(model, classes, template_list), classes, "held-out prototypes"
    )
    return prototypes, templates_label(template_set, template_list)


@torch.no_grad()
def evaluate(
    model: CG3D,
    batches: Iterable[dict[str, Any]],
    prototypes: torch.Tensor,
    autocast: Callable[[], AbstractContextManager],
    device_images: Callable[[dict[str, Any]], torch.Tensor],
) -> dict[str, float]:
    """Held-out accuracy in %, as eval's top-1 (`dvc metrics show` puts them side by side):
    point→text (zero-shot over class prototypes) and point→image (in batch).
    `device_images` puts a batch's views on the device, CLIP-normalised (`Trainer.images`)."""
    model.eval()
    device = model.device()
    right_text = right_image = total = 0
    for batch in batches:
        with autocast():
            points = model.encode_points(batch["points"].to(device))
            images = model.encode_image(device_images(batch))
        labels = torch.as_tensor(batch["cls"], device=device)
        right_text += int(((points @ prototypes.T).argmax(-1) == labels).sum())
        right_image += int(
            ((points @ images.T).argmax(-1) == torch.arange(len(labels), device=device)).sum()
        )
        total += len(labels)
    model.train()
    if total == 0:
        raise UsageError("the held-out split holds no samples to evaluate on")
    return {
        "point_text_acc": 100 * right_text / total,
        "point_image_acc": 100 * right_image / total,
        "samples": total,
    }
