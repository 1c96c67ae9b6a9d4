"""Text features of captions. The text tower is frozen, so each caption is encoded once.

With `cache=True` every distinct caption goes through CLIP's text tower once per run and is
kept on the device; training on 63 templates × C classes then encodes 63·C captions in all,
instead of one batch of captions per step.
"""

from typing import Any

import torch

from cg3d.models.model import CG3D


class TextEncoder:
    """Callable: list of captions → (B, D) normalised text features, without grad."""

    def __init__(self, model: CG3D, cache: bool = True):
        self.model, self.cache = model, cache
        self.features: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> torch.Tensor:
        if not self.cache:
            return self.model.encode_text(list(captions))
        missing = sorted(set(captions) - self.features.keys())
        if missing:
            for caption, feature in zip(missing, self.model.encode_text(missing), strict=True):
                self.features[caption] = feature
        return torch.stack([self.features[caption] for caption in captions])

    def state(self) -> dict[str, Any]:
        """The cache, for a checkpoint (a resumed run then sees bit-identical text features)."""
        captions = sorted(self.features)
        features = (
            torch.stack([self.features[c] for c in captions]).cpu() if captions else torch.zeros(0)
        )
        return {"captions": captions, "features": features}

    def load_state(self, state: dict[str, Any]) -> None:
        device = self.model.device()
        self.features = {
            c: f.to(device) for c, f in zip(state["captions"], state["features"], strict=True)
        }
