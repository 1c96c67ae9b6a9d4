"""Point-BERT's PointTransformer, as the CG3D paper trains it (`PointTransformerProject`).

The network of the public CG3D code (deeptibhegde/CLIP-goes-3D, models/Point_Transformer.py
and models/dvae.py), parameter for parameter and with its state-dict key names, so that a
released `base_model` state dict loads after stripping DDP's `module.` prefix (its unused
classification head `cls_head_finetune.*` aside):

  Group        FPS `groups` centres, kNN `group_size` points each, xyz relative to the centre
  encoder      mini-PointNet per patch: `first_conv` 3→128→256 (BatchNorm, ReLU), max-pool,
               concat the pooled feature to every point (512), `second_conv` 512→512→256, max-pool
  reduce_dim   256 → width (384)
  cls_token, cls_pos, and pos_embed (centre xyz → 128, GELU → width), added before EVERY block
  blocks       `blocks.blocks.{i}`: pre-norm blocks (norm1, attn.qkv without bias, attn.proj,
               norm2, mlp.fc1 / fc2 with GELU), stochastic depth rising linearly 0 → drop_path
  norm, then concat(CLS token, max over the patch tokens) → `projection` to CLIP's width

Initialisation as the public class: PyTorch's defaults, `cls_token` zeros, `cls_pos` N(0, 1).
The centres are plain FPS from point 0 unless `kernel_fps` (`train.encoder_params`; the
`cg3d-public` preset and converted releases set it): then, as the public `misc.fps`, no point
within √1e-3 of the origin is a centre after point 0.
The point ops are plain PyTorch (cg3d.models.encoders.ops), so this runs on a CPU too.
"""

import torch
import torch.nn.functional as F
from torch import nn

from cg3d.geometry.fps import POINTNET2_SKIP_NORM2
from cg3d.models.encoders import register_encoder, register_size
from cg3d.models.encoders.ops import group_patches, points_for_patches


class Encoder(nn.Module):
    """Point-BERT's patch embedding: (B, G, K, C) patches → (B, G, channels) tokens."""

    def __init__(self, channels: int = 256, hidden: int = 256, in_channels: int = 3):
        super().__init__()
        self.in_channels = in_channels
        self.first_conv = nn.Sequential(
            nn.Conv1d(in_channels, hidden // 2, 1),
            nn.BatchNorm1d(hidden // 2),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden // 2, hidden, 1),
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * hidden, 2 * hidden, 1),
            nn.BatchNorm1d(2 * hidden),
            nn.ReLU(inplace=True),
            nn.Conv1d(2 * hidden, channels, 1),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        batch, groups, size, channels = patches.shape
        x = self.first_conv(patches.reshape(batch * groups, size, channels).transpose(1, 2))
        pooled = x.max(dim=2, keepdim=True).values
        # the pooled feature first, then the point's own: the order of Point-BERT's weights
        x = self.second_conv(torch.cat([pooled.expand(-1, -1, size), x], dim=1))
        return x.max(dim=2).values.reshape(batch, groups, -1)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the residual branch of whole samples, rescale the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention, qkv without bias (Point-BERT's), scale head_dim^-0.5."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        # the same softmax(q kᵀ / √d) v as the public code, fused where the device has a kernel
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, width))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, 4 * width)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class TransformerEncoder(nn.Module):
    """The blocks, with the positional embedding added to the input of every one."""

    def __init__(self, width: int, depth: int, heads: int, drop_path: float):
        super().__init__()
        # on the CPU: a plain list, also when the module is built on the meta device
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(Block(width, heads, rate) for rate in rates)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


@register_encoder("pointbert")
class PointBERT(nn.Module):
    def __init__(
        self,
        out_dim: int,
        groups: int = 64,
        group_size: int = 32,
        encoder_dims: int = 256,
        patch_hidden: int = 256,
        width: int = 384,
        depth: int = 12,
        heads: int = 6,
        drop_path: float = 0.1,
        in_channels: int = 3,
        kernel_fps: bool = False,
    ):
        super().__init__()
        if in_channels not in (3, 6):
            raise ValueError("in_channels must be 3 (xyz) or 6 (xyz, rgb)")
        self.groups, self.group_size, self.in_channels = groups, group_size, in_channels
        # kernel_fps: the centres as the public Group's misc.fps (pointnet2_ops' kernel) picks
        # them, never a point within √1e-3 of the origin after point 0; off: plain FPS (ours)
        self.fps_skip_norm2 = POINTNET2_SKIP_NORM2 if kernel_fps else None
        self.encoder = Encoder(encoder_dims, patch_hidden, in_channels)
        self.reduce_dim = nn.Linear(encoder_dims, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, width))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        self.blocks = TransformerEncoder(width, depth, heads, drop_path)
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(2 * width, out_dim)

    @staticmethod
    def points_needed(params: dict) -> int:
        return points_for_patches(params["groups"], params["group_size"])

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, C ≥ in_channels) points: xyz, then rgb in [0, 1] when in_channels is 6."""
        return self.projection(self.pooled(points))

    def pooled(self, points: torch.Tensor) -> torch.Tensor:
        """(B, 2·width) features before the projection: concat(CLS token, max over patches)."""
        patches, centres = group_patches(
            points[..., : self.in_channels].float(),
            self.groups,
            self.group_size,
            self.fps_skip_norm2,
        )
        tokens = self.reduce_dim(self.encoder(patches))
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centres)], dim=1)
        x = self.norm(self.blocks(x, pos))
        return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)


# The paper's encoder: CG3D's PointTransformerProject (cfgs/ShapeNet55_models/
# PointTransformerVPT.yaml: 64 groups of 32, encoder_dims 256, width 384, 12 blocks, 6 heads,
# drop path 0.1). Until issue 17 this name was the `pointtransformer` architecture, now
# `pointtransformer-v1-base`.
register_size(
    "pointtransformer-base",
    "pointbert",
    groups=64,
    group_size=32,
    encoder_dims=256,
    patch_hidden=256,
    width=384,
    depth=12,
    heads=6,
    drop_path=0.1,
)
# The same network, narrower and shallower: for CPUs
register_size(
    "pointbert-tiny",
    "pointbert",
    groups=64,
    group_size=32,
    encoder_dims=128,
    patch_hidden=64,
    width=128,
    depth=4,
    heads=4,
    drop_path=0.1,
)
# Unit tests: builds and runs in milliseconds on 64-256 points
register_size(
    "pointbert-micro",
    "pointbert",
    groups=8,
    group_size=8,
    encoder_dims=32,
    patch_hidden=32,
    width=32,
    depth=2,
    heads=2,
    drop_path=0.1,
)
