"""The model library: point encoders, the prompt-tuned CLIP, the CG3D model, checkpoints.

Like open_clip's `src/open_clip` beside its trainer: evaluation, classification and the API
import this package, never `cg3d.train` (the shard loader and the training loop).

    from cg3d.models import load_model
    model = load_model("runs/train/last.pt", "cuda", clip_pretrained=None)
    features = model.encode_points(points)  # (B, N, 3) → (B, D), in CLIP's space

The names below are imported on first use, so that importing `cg3d.models.commands` for the
CLI does not import torch (`cg3d --help` stays instant).
"""

import importlib
from typing import Any

_EXPORTS = {
    "CG3D": "model",
    "ModelConfig": "model",
    "build_model": "model",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
    "export_checkpoint": "checkpoint",
    "encoder_names": "encoders",
    "RandomClipWarning": "clip",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
