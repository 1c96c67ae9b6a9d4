"""Class prototypes: the text features a shape's features are compared with to classify it.

One function for every caller: training's held-out accuracy (the `cg3d` training templates by
default) and zero-shot evaluation and `classify` (the 64 ULIP/CLIP templates, or one prompt).
Each class name is put in every template, each caption encoded and L2-normalised, the captions
of a class averaged and the mean renormalised (CLIP's prompt ensemble). Underscores in class
names become spaces, as benchmark folder names (night_stand) are not words CLIP knows.
"""

from typing import Protocol

import torch
import torch.nn.functional as F


class TextModel(Protocol):
    def encode_text(self, texts: list[str]) -> torch.Tensor: ...


def display_name(name: str) -> str:
    return name.replace("_", " ").strip()


def templates_label(name: str, template_list: list[str]) -> str:
    """How a metric names the templates that made its prototypes, e.g. "cg3d (63)"."""
    return f"{name} ({len(template_list)})"


@torch.no_grad()
def class_text_features(
    model: TextModel, classes: list[str], template_list: list[str], batch_size: int = 256
) -> torch.Tensor:
    """(C, D) unit-norm class prototypes: per class, the renormalised mean of its captions.

    Captions are encoded `batch_size` at a time, whatever the number of classes.
    """
    captions = [t.format(display_name(c)) for c in classes for t in template_list]
    features = torch.cat(
        [
            model.encode_text(captions[i : i + batch_size])
            for i in range(0, len(captions), batch_size)
        ]
    )
    features = F.normalize(features.float(), dim=-1)
    per_class = features.view(len(classes), len(template_list), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)
