"""The tiny model the tests build: random-init CLIP "CG3D-ViT-Micro-32" (32 px images, 64-d
features) and a micro point transformer, in well under a second on a CPU."""

import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from typer.testing import CliRunner

from cg3d.models import clip as clip_module
from cg3d.models.checkpoint import save_checkpoint, write_payload
from cg3d.models.clip import load_clip
from cg3d.models.encoders import build_encoder
from cg3d.models.model import ModelConfig, build_model, model_config
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


def save_fell_back_checkpoint(path: Path) -> Path:
    """A tiny model saved to `path` whose run asked for CLIP tag "openai" and, as on a machine
    with no network, could not have it: CLIP fell back to a random init (its config still names
    "openai" as clip_pretrained, the param). The tag check is what lets "openai" through for
    the micro model (it has no tags); open_clip then finds no such weights, as offline."""
    with (
        mock.patch.object(clip_module, "check_clip_tag", lambda *_: None),
        warnings.catch_warnings(),
        torch.random.fork_rng(),
    ):
        warnings.simplefilter("ignore")
        torch.manual_seed(2)
        model = build_model(tiny_model_config(n_points=64, clip_pretrained="openai"))
    assert model.config["clip_pretrained"] == "openai"
    assert model.config["clip_pretrained_loaded"] is False  # the fallback this stands for
    save_checkpoint(path, model)
    return path


def export_hub_folder(checkpoint: Path, out: Path, *extra: str) -> str:
    """`cg3d export --format hub` of `checkpoint` into `out`; its printed output."""
    from cg3d.cli import app

    args = ["export", "--format", "hub", "--checkpoint", str(checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    return result.output


BIGG, BIGG_TAG, BIGG_DIM = "ViT-bigG-14", "laion2b_s39b_b160k", 1280
N_POINTS = 256


def write_converted_bigg(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A converted-style checkpoint: a micro Point-BERT into bigG's 1280-d space, xyz+rgb."""
    torch.manual_seed(seed)
    encoder = build_encoder("pointtransformer-micro", BIGG_DIM, {"in_channels": 6})
    state = {f"point_encoder.{k}": v for k, v in encoder.state_dict().items()}
    config = {
        "encoder": "pointtransformer-micro",
        "encoder_params": {},
        "clip_model": BIGG,
        "clip_pretrained": BIGG_TAG,
        "require_pretrained": True,
        "prompts": 0,
        "deep_prompts": False,
        "train_logit_scale": False,
        "n_points": N_POINTS,
        "point_channels": 6,
        "classes": [],
        "clip_pretrained_loaded": True,
        "clip_weights": {"kind": "tag", "tag": BIGG_TAG},
        "protocol": "cg3d",
    }
    write_payload(
        path, {"format": "cg3d-checkpoint-1", "config": config, "full_clip": False, "model": state}
    )
    return state


def nested(depth: int) -> list:
    """A list nested `depth` levels deep: [[[...]]]."""
    value: list = []
    for _ in range(depth):
        value = [value]
    return value
