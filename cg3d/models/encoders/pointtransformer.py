"""A Point-BERT-style PointTransformer (this project's first; the paper's exact one is pointbert).

Points are cut into `groups` local patches (FPS centres, kNN `group_size` neighbours each,
coordinates relative to the centre); a mini-PointNet turns each patch into a token; a
standard pre-norm transformer with learned positional embeddings of the centres mixes the
tokens; the output is concat(CLS token, max-pool of the patch tokens), projected to CLIP's width.
"""

import torch
from torch import nn

from cg3d.models.encoders import register_encoder, register_size
from cg3d.models.encoders.ops import group_patches, points_for_patches


class MiniPointNet(nn.Module):
    """Point-BERT's patch embedding: shared MLP, max-pool, concat global, MLP, max-pool.

    Point-BERT's sizes are hidden=256 (3→128→256, then 512→512→width).
    """

    def __init__(self, width: int, hidden: int = 256, in_channels: int = 3):
        super().__init__()
        half, double = hidden // 2, 2 * hidden
        self.in_channels = in_channels
        self.first = nn.Sequential(
            nn.Conv1d(in_channels, half, 1),
            nn.BatchNorm1d(half),
            nn.ReLU(inplace=True),
            nn.Conv1d(half, hidden, 1),
        )
        self.second = nn.Sequential(
            nn.Conv1d(double, double, 1),
            nn.BatchNorm1d(double),
            nn.ReLU(inplace=True),
            nn.Conv1d(double, width, 1),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        batch, groups, size, _ = patches.shape
        x = self.first(patches.reshape(batch * groups, size, self.in_channels).transpose(1, 2))
        pooled = x.max(dim=2, keepdim=True).values
        x = self.second(torch.cat([pooled.expand(-1, -1, size), x], dim=1))
        return x.max(dim=2).values.reshape(batch, groups, -1)


@register_encoder("pointtransformer")
class PointTransformer(nn.Module):
    def __init__(
        self,
        out_dim: int,
        groups: int = 64,
        group_size: int = 32,
        width: int = 384,
        depth: int = 12,
        heads: int = 6,
        dropout: float = 0.0,
        patch_hidden: int = 256,
        in_channels: int = 3,
    ):
        super().__init__()
        if in_channels not in (3, 6):
            raise ValueError("in_channels must be 3 (xyz) or 6 (xyz, rgb)")
        self.groups, self.group_size, self.in_channels = groups, group_size, in_channels
        self.patch_embed = MiniPointNet(width, patch_hidden, in_channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            4 * width,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(2 * width, out_dim)

    @staticmethod
    def points_needed(params: dict) -> int:
        return points_for_patches(params["groups"], params["group_size"])

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, C ≥ in_channels) points: xyz, then rgb in [0, 1] when in_channels is 6."""
        patches, centres = group_patches(
            points[..., : self.in_channels].float(), self.groups, self.group_size
        )
        tokens = self.patch_embed(patches)
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centres)], dim=1)
        x = self.norm(self.blocks(x + pos))
        return self.proj(torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1))


# Until issue 17 `pointtransformer-base`: Point-BERT's sizes, but the position embedded once,
# no reduce_dim and no stochastic depth (the paper's network is now pointbert's
# `pointtransformer-base`)
register_size(
    "pointtransformer-v1-base",
    "pointtransformer",
    groups=64,
    group_size=32,
    width=384,
    depth=12,
    heads=6,
    patch_hidden=256,
)
# The CPU default of params.yaml: the same patches, a narrower and shallower transformer
register_size(
    "pointtransformer-tiny",
    "pointtransformer",
    groups=64,
    group_size=32,
    width=128,
    depth=4,
    heads=4,
    patch_hidden=64,
)
# Unit tests: builds and runs in milliseconds on 64-256 points
register_size(
    "pointtransformer-micro",
    "pointtransformer",
    groups=8,
    group_size=8,
    width=32,
    depth=1,
    heads=2,
    patch_hidden=32,
)
