"""The tiny model the tests build: random-init CLIP "CG3D-ViT-Micro-32" (32 px images, 64-d
features) and a micro point transformer, in well under a second on a CPU."""

from pathlib import Path
from typing import Any

import torch
from typer.testing import CliRunner

from cg3d.models.clip import load_clip
from cg3d.models.model import ModelConfig, model_config
from cg3d.params import TrainConfig

# The train params of the tiny model (the rest are TrainConfig's defaults).
TINY_MODEL: dict[str, Any] = dict(
    encoder="pointtransformer-micro",
    clip_model="CG3D-ViT-Micro-32",
    clip_pretrained="none",
    prompts=2,
    n_points=256,
)


def tiny_model_config(**overrides: Any) -> ModelConfig:
    """The tiny model's config with `overrides` (train params, or `classes`)."""
    classes = overrides.pop("classes", ["cube", "sphere"])
    return model_config(TrainConfig(**TINY_MODEL | overrides), classes)


def save_random_clip(path: Path, seed: int) -> Path:
    """A small random CLIP saved as a local weights file, standing in for real weights."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clip = load_clip("CG3D-ViT-Micro-32", "none")
    torch.save(clip.model.state_dict(), path)
    return path


def export_hub_folder(checkpoint: Path, out: Path, *extra: str) -> str:
    """`cg3d export --format hub` of `checkpoint` into `out`; its printed output."""
    from cg3d.cli import app

    args = ["export", "--format", "hub", "--checkpoint", str(checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    return result.output
