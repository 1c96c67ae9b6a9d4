"""One training schema: the model's and the loader's configs are `train:` params (TrainConfig),
field for field, with no defaults of their own (issue 16.2)."""

import dataclasses
import typing

import pytest

from cg3d.models.model import ModelConfig, model_config
from cg3d.params import AugmentConfig, TrainConfig
from cg3d.train.data import LoaderConfig

# The only fields that are not train params: what the shards and the model's preprocessing say.
NOT_PARAMS = {ModelConfig: {"classes"}, LoaderConfig: {"image_size"}}


@pytest.mark.parametrize("derived", [ModelConfig, LoaderConfig], ids=lambda c: c.__name__)
def test_every_field_is_a_train_param_of_the_same_type(derived):
    params = typing.get_type_hints(TrainConfig)
    hints = typing.get_type_hints(derived)
    fields = {f.name for f in dataclasses.fields(derived)} - NOT_PARAMS[derived]
    missing = sorted(fields - set(params))
    assert missing == [], f"{derived.__name__} fields that TrainConfig lacks: {missing}"
    assert {name: hints[name] for name in fields} == {name: params[name] for name in fields}


@pytest.mark.parametrize("derived", [ModelConfig, LoaderConfig], ids=lambda c: c.__name__)
def test_no_field_has_a_default_of_its_own(derived):
    defaulted = [
        f.name
        for f in dataclasses.fields(derived)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert defaulted == []


def test_the_model_config_carries_every_value_of_the_params():
    params = TrainConfig(
        encoder="pointnet2-ssg",
        encoder_params={"width": 8},
        clip_model="CG3D-ViT-Micro-32",
        clip_pretrained="none",
        require_pretrained=True,
        prompts=3,
        deep_prompts=False,
        train_logit_scale=True,
        n_points=1024,
        point_channels=6,
    )
    config = model_config(params, ["cube"])
    assert dataclasses.asdict(config) == {
        "encoder": "pointnet2-ssg",
        "encoder_params": {"width": 8},
        "clip_model": "CG3D-ViT-Micro-32",
        "clip_pretrained": "none",
        "require_pretrained": True,
        "prompts": 3,
        "deep_prompts": False,
        "train_logit_scale": True,
        "n_points": 1024,
        "point_channels": 6,
        "classes": ["cube"],
    }


def test_the_loader_config_carries_every_value_of_the_params():
    augment = AugmentConfig(jitter=False, scale_low=0.5)
    params = TrainConfig(
        n_points=1024,
        batch_size=7,
        workers=0,
        shuffle_buffer=9,
        point_channels=6,
        seed=11,
        augment=augment,
    )
    config = LoaderConfig.of_params(params, 32)
    assert (config.n_points, config.batch_size, config.workers, config.shuffle_buffer) == (
        1024,
        7,
        0,
        9,
    )
    assert (config.point_channels, config.seed, config.image_size) == (6, 11, 32)
    assert config.augment == augment


def test_a_model_config_out_of_the_train_params_bounds_is_one_line():
    from cg3d.errors import UsageError

    good = model_config(TrainConfig(encoder="pointtransformer-micro"), [])
    values = dataclasses.asdict(good) | {"n_points": 0}
    with pytest.raises(
        UsageError, match=r"model config: train\.n_points must be ≥ 1 and ≤ 1048576, got 0"
    ):
        ModelConfig(**values)
