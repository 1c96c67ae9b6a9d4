"""PointNet++ SSG (single-scale grouping) classification backbone, in plain PyTorch.

Two set-abstraction levels (FPS centres, ball query, shared MLP on relative coordinates plus
features, max-pool), then a global level over all remaining points, then an MLP head to
CLIP's width. `width` scales every layer (PointNet++'s own sizes at width 1.0).
"""

import torch
from torch import nn

from cg3d.models.encoders import register_encoder, register_size
from cg3d.models.encoders.ops import ball_group, farthest_point_sample, gather_points


def shared_mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for inputs, outputs in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Conv2d(inputs, outputs, 1), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SetAbstraction(nn.Module):
    """One SSG level; `centres=None` groups all points into one (the global level)."""

    def __init__(self, centres: int | None, radius: float, group_size: int, sizes: list[int]):
        super().__init__()
        self.centres, self.radius, self.group_size = centres, radius, group_size
        self.mlp = shared_mlp(sizes)

    def forward(self, xyz: torch.Tensor, features: torch.Tensor | None):
        if self.centres is None:
            grouped = xyz.unsqueeze(1)
            if features is not None:
                grouped = torch.cat([grouped, features.unsqueeze(1)], dim=-1)
            new_xyz = xyz.mean(dim=1, keepdim=True)
        else:
            new_xyz = gather_points(xyz, farthest_point_sample(xyz, self.centres))
            index = ball_group(new_xyz, xyz, self.radius, self.group_size)
            grouped = gather_points(xyz, index) - new_xyz.unsqueeze(2)
            if features is not None:
                grouped = torch.cat([grouped, gather_points(features, index)], dim=-1)
        # (B, M, K, C) → (B, C, M, K) → max over the K neighbours → (B, M, C')
        pooled = self.mlp(grouped.permute(0, 3, 1, 2)).max(dim=-1).values
        return new_xyz, pooled.transpose(1, 2)


@register_encoder("pointnet2")
class PointNet2(nn.Module):
    def __init__(
        self,
        out_dim: int,
        centres: tuple[int, int] = (512, 128),
        radii: tuple[float, float] = (0.2, 0.4),
        group_size: int = 32,
        width: float = 1.0,
        dropout: float = 0.4,
        in_channels: int = 3,
    ):
        super().__init__()
        if in_channels not in (3, 6):
            raise ValueError("in_channels must be 3 (xyz) or 6 (xyz, rgb)")
        self.in_channels = in_channels

        def scaled(*sizes: int) -> list[int]:
            return [max(8, int(size * width)) for size in sizes]

        first, second, third = scaled(64, 64, 128), scaled(128, 128, 256), scaled(256, 512, 1024)
        self.levels = nn.ModuleList(
            [
                SetAbstraction(centres[0], radii[0], group_size, [in_channels, *first]),
                SetAbstraction(centres[1], radii[1], group_size, [3 + first[-1], *second]),
                SetAbstraction(None, 0.0, 0, [3 + second[-1], *third]),
            ]
        )
        hidden = scaled(512)[0]
        self.head = nn.Sequential(
            nn.Linear(third[-1], hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    @staticmethod
    def points_needed(params: dict) -> int:
        """The first level picks `centres[0]` centres and `group_size` neighbours of the cloud."""
        return max(params["centres"][0], params["group_size"])

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, C ≥ in_channels) points: xyz, then rgb in [0, 1] when in_channels is 6."""
        points = points[..., : self.in_channels].float()
        xyz, features = points[..., :3], (points[..., 3:] if self.in_channels > 3 else None)
        for level in self.levels:
            xyz, features = level(xyz, features)
        return self.head(features.squeeze(1))


# PointNet++'s own SSG classification sizes
register_size(
    "pointnet2-ssg",
    "pointnet2",
    centres=(512, 128),
    radii=(0.2, 0.4),
    group_size=32,
    width=1.0,
)
# Unit tests: two small levels over 64+ points, an eighth of the widths
register_size("pointnet2-micro", "pointnet2", centres=(16, 8), group_size=8, width=0.125)
