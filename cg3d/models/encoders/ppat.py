"""OpenShape's point encoder PPAT ("PointBERT" in its model zoo), with its state-dict names.

Colin97/OpenShape_code, src/models/ppat.py (`Projected(PointPatchTransformer(...), Linear)`,
`make` with `scaling: 4`) and src/models/pointnet_util.py (`PointNetSetAbstraction`):

  ppat.sa        PointNet++ set abstraction: `patches` FPS centres; for each, the FIRST
                 `group_size` points by index within `radius` (padded with the first of them:
                 `query_ball_point`, not the nearest); per point (xyz − centre, then the
                 point's features: xyz and rgb) → `mlp_convs.{i}` 1×1 Conv2d, `mlp_bns.{i}`
                 BatchNorm2d, ReLU (64, 64, sa_dim) → max over the group
  ppat.lift      Conv1d(3 + sa_dim → width) on (centre xyz, feature), then LayerNorm
  ppat.cls_token (width,), prepended; no position embedding of any kind
  ppat.transformer.layers.{i}  pre-norm blocks: `0.norm`, `0.fn.to_qkv` (no bias),
                 `0.fn.to_out.0`; `1.norm`, `1.fn.net.0` / `1.fn.net.3` (GELU); no final norm
  proj           Linear(width → out_dim) of the CLS token

The released checkpoints' `state_dict` holds `module.ppat.*` and `module.proj.*`: converting
strips `module.` only. OpenShape's FPS (dgl) starts from a random point; ours from point 0.
"""

import torch
import torch.nn.functional as F
from torch import nn

from cg3d.models.encoders import register_encoder, register_size
from cg3d.models.encoders.ops import ball_query_first, farthest_point_sample, gather_points


class SetAbstraction(nn.Module):
    """One PointNet++ set abstraction level: (B, N, 3) xyz and (B, N, C) features →
    (B, S, 3) centres and (B, S, mlp[-1]) features."""

    def __init__(self, centres: int, radius: float, group_size: int, in_channels: int, mlp):
        super().__init__()
        self.centres, self.radius, self.group_size = centres, radius, group_size
        self.mlp_convs = nn.ModuleList()
        self.mlp_bns = nn.ModuleList()
        last = in_channels
        for channels in mlp:
            self.mlp_convs.append(nn.Conv2d(last, channels, 1))
            self.mlp_bns.append(nn.BatchNorm2d(channels))
            last = channels

    def forward(self, xyz: torch.Tensor, features: torch.Tensor):
        centres = gather_points(xyz, farthest_point_sample(xyz, self.centres))
        index = ball_query_first(centres, xyz, self.radius, self.group_size)
        relative = gather_points(xyz, index) - centres.unsqueeze(2)
        x = torch.cat([relative, gather_points(features, index)], dim=-1)  # (B, S, K, 3 + C)
        x = x.permute(0, 3, 2, 1)  # (B, 3 + C, K, S), the layout of the public convolutions
        for conv, norm in zip(self.mlp_convs, self.mlp_bns, strict=True):
            x = F.relu(norm(conv(x)))
        return centres, x.max(dim=2).values.transpose(1, 2)


class ChannelsLast(nn.Module):
    """(B, C, S) → (B, S, C): the parameter-free step of the public `lift` (its index 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class PreNorm(nn.Module):
    def __init__(self, width: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(width, 3 * heads * head_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * head_dim, width), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q, k, v = (
            t.reshape(batch, tokens, self.heads, -1).transpose(1, 2)
            for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √head_dim) v
        return self.to_out(x.transpose(1, 2).reshape(batch, tokens, -1))


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, width),
            nn.Dropout(0.0),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, head_dim: int, mlp: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(width, Attention(width, heads, head_dim)),
                    PreNorm(width, FeedForward(width, mlp)),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, feed_forward in self.layers:
            x = x + attention(x)
            x = x + feed_forward(x)
        return x


class PointPatchTransformer(nn.Module):
    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        mlp: int,
        sa_dim: int,
        patches: int,
        radius: float,
        group_size: int,
        in_channels: int,
        head_dim: int,
    ):
        super().__init__()
        self.sa = SetAbstraction(patches, radius, group_size, in_channels + 3, [64, 64, sa_dim])
        self.lift = nn.Sequential(
            nn.Conv1d(sa_dim + 3, width, 1), ChannelsLast(), nn.LayerNorm([width])
        )
        self.cls_token = nn.Parameter(torch.randn(width))
        self.transformer = Transformer(width, depth, heads, head_dim, mlp)

    def forward(self, xyz: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        centres, patches = self.sa(xyz, features)
        x = self.lift(torch.cat([centres, patches], dim=-1).transpose(1, 2))
        cls = self.cls_token.expand(x.shape[0], 1, -1)
        return self.transformer(torch.cat([cls, x], dim=1))[:, 0]


@register_encoder("ppat")
class PPAT(nn.Module):
    def __init__(
        self,
        out_dim: int,
        width: int = 512,
        depth: int = 12,
        heads: int = 8,
        head_dim: int = 64,
        mlp: int = 1536,
        sa_dim: int = 256,
        patches: int = 384,
        radius: float = 0.2,
        group_size: int = 64,
        in_channels: int = 6,
    ):
        super().__init__()
        if in_channels not in (3, 6):
            raise ValueError("in_channels must be 3 (xyz) or 6 (xyz, rgb)")
        self.in_channels = in_channels
        self.ppat = PointPatchTransformer(
            width, depth, heads, mlp, sa_dim, patches, radius, group_size, in_channels, head_dim
        )
        self.proj = nn.Linear(width, out_dim)

    @staticmethod
    def points_needed(params: dict) -> int:
        return max(params["patches"], params["group_size"])

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, C ≥ in_channels) points: xyz, then rgb in [0, 1]. The features PPAT groups
        are the point's own xyz and rgb, as OpenShape's loaders give them."""
        points = points[..., : self.in_channels].float()
        return self.proj(self.ppat(points[..., :3], points))


# OpenShape's released PointBERT (`scaling: 4` of ppat.make): width 512, 12 blocks of 8 heads
# of 64, MLP 1536, 384 patches of the first 64 points within 0.2, set abstraction 64-64-256,
# xyz + rgb, projected to ViT-bigG-14's 1280
register_size(
    "openshape-ppat",
    "ppat",
    width=512,
    depth=12,
    heads=8,
    head_dim=64,
    mlp=1536,
    sa_dim=256,
    patches=384,
    radius=0.2,
    group_size=64,
    in_channels=6,
)
