"""Small in-memory batches for the training tests: two classes, cubes and spheres."""

import torch
import yaml

from cg3d.params import TrainConfig
from cg3d.train.loop import BatchList
from tests.models.helpers import tiny_model_config


def shape_points(kind: int, n_points: int, generator: torch.Generator) -> torch.Tensor:
    """Points on a cube surface (kind 0) or a sphere (kind 1), unit scale."""
    points = torch.randn(n_points, 3, generator=generator)
    if kind == 1:
        return points / points.norm(dim=-1, keepdim=True)
    return points / points.abs().max(dim=-1, keepdim=True).values


def make_batches(
    count: int, batch_size: int, n_points: int = 256, image_size: int = 32, seed: int = 0
):
    """`count` batches of labelled cubes/spheres; images are plain tints, one per class."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        cls = torch.randint(0, 2, (batch_size,), generator=generator)
        points = torch.stack([shape_points(int(c), n_points, generator) for c in cls])
        image = torch.randn(batch_size, 3, image_size, image_size, generator=generator) * 0.1
        image[:, 0] += cls.view(-1, 1, 1).float() * 2 - 1
        captions = [f"a {'sphere' if c else 'cube'} number {i}" for i, c in enumerate(cls.tolist())]
        batches.append({"points": points, "image": image, "caption": captions, "cls": cls})
    return BatchList(batches, seed=seed)


CLASSES = ["cube", "sphere"]


def tiny_train_config(**overrides) -> TrainConfig:
    """Train params of the tiny model (tests/models/helpers.py) for a quick CPU run."""
    tiny = tiny_model_config()
    values = dict(
        epochs=2,
        batch_size=8,
        encoder=tiny.encoder,
        encoder_params=tiny.encoder_params,
        clip_model=tiny.clip_model,
        clip_pretrained="none",
        prompts=tiny.prompts,
        n_points=tiny.n_points,
        encoder_lr=1e-3,
        prompt_lr=1e-2,
        warmup_epochs=0.5,
        device="cpu",
    )
    return TrainConfig(**values | overrides)


def params_file(tmp_path, **overrides):
    """A params.yaml of a small `cg3d train` run (a micro PointNet++, random micro CLIP)."""
    train = dict(
        epochs=2,
        batch_size=4,
        encoder="pointnet2",
        encoder_params={"centres": [16, 8], "group_size": 8, "width": 0.125},
        clip_model="CG3D-ViT-Micro-32",
        clip_pretrained="none",
        prompts=2,
        n_points=64,
        workers=0,
        device="cpu",
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": train | overrides}))
    return path
