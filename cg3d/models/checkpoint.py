"""Checkpoints: `torch.save` of plain state dicts and a config dict, read with weights_only=True.

Layout of a checkpoint file (a dict):
  format       "cg3d-checkpoint-1"
  config       the model's config dict (ModelConfig fields + clip_pretrained_loaded)
  full_clip    True when CLIP was randomly initialised: then `model` holds CLIP's whole state,
               since a fresh random init would differ; with real weights only the trained part
               (point encoder, prompts, logit scale) is stored and CLIP is reloaded by its identity
  model        the state dict (see above)
  training     optional: optimisers, schedulers, RNG states, position (what `--resume` needs)
"""

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cg3d.errors import UsageError
from cg3d.models.clip import RandomClipWarning
from cg3d.models.model import CG3D, ModelConfig, build_model
from cg3d.pipeline.chunks import atomic_path

FORMAT = "cg3d-checkpoint-1"


def save_checkpoint(path: Path, model: CG3D, training: dict[str, Any] | None = None) -> None:
    """Write `model` (and optional training state) to `path` atomically."""
    full_clip = not model.config["clip_pretrained_loaded"]
    state = model.state_dict() if full_clip else model.trainable_state()
    payload = {
        "format": FORMAT,
        "config": model.config,
        "full_clip": full_clip,
        "model": {name: tensor.detach().cpu() for name, tensor in state.items()},
    }
    if training is not None:
        payload["training"] = training
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict at `path`; a missing, corrupt or foreign file is a UsageError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a torch file, unsafe pickle content
        raise UsageError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{path}: not a CG3D checkpoint (no {FORMAT!r} format tag)")
    return payload


def model_from_checkpoint(payload: dict[str, Any], path: Path) -> CG3D:
    """Rebuild the model a checkpoint dict describes and load its weights."""
    config = dict(payload["config"])
    config.pop("clip_pretrained_loaded", None)
    if payload["full_clip"]:
        # CLIP's (random) weights are in the file: build without looking for any
        config |= {"clip_pretrained": "none", "require_pretrained": False}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomClipWarning)
            model = build_model(ModelConfig(**config))
        warnings.warn(
            f"{path} was trained with a RANDOMLY INITIALISED CLIP (its weights are in the file)",
            RandomClipWarning,
            stacklevel=3,
        )
    else:
        model = build_model(ModelConfig(**config | {"require_pretrained": True}))
    try:
        model.load_state_dict(payload["model"], strict=payload["full_clip"])
    except RuntimeError as error:
        raise UsageError(f"{path}: weights do not fit the model it describes ({error})") from None
    model.config = payload["config"]
    return model


def load_model(path: Path, device: str | torch.device = "cpu") -> CG3D:
    """The trained CG3D model in `path`, in eval mode on `device`.

    Raises UsageError naming the file when it is missing, corrupt or not a CG3D checkpoint.
    """
    model = model_from_checkpoint(read_checkpoint(path), Path(path))
    return model.to(device).eval()


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as weights_only-loadable values."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
