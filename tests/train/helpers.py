"""Small in-memory batches for the training tests: two classes, cubes and spheres."""

import torch

from cg3d.train.loop import BatchList


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
