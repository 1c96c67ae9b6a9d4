"""The tiny model the tests build: random-init CLIP "CG3D-ViT-Micro-32" (32 px images, 64-d
features) and a micro point transformer, in well under a second on a CPU."""

from typing import Any

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
