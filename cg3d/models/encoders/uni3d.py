"""Uni3D's point encoder: Point-BERT patches through the blocks of a timm EVA ViT.

baaivision/Uni3D, models/point_encoder.py (`PointcloudEncoder`) and models/uni3d.py
(`create_uni3d`: `timm.create_model(pc_model)`), with its state-dict names:

  encoder        Point-BERT's mini-PointNet on (xyz − centre, rgb) patches: `first_conv`
                 6→128→256, `second_conv` 512→512→encoder_dims (512); 512 FPS centres, kNN 64
  encoder2trans  encoder_dims → width
  cls_token, cls_pos, pos_embed (centre xyz → 128, GELU → width), added ONCE, before the blocks
  visual         the timm EVA model (`Eva`); only `pos_drop`, `blocks`, `norm` and `fc_norm` run,
                 the blocks without rotary embedding; its patch embedding, position embedding,
                 CLS token and classifier head are in the state dict but unused
  trans2embed    width → out_dim, of the normalised CLS token

The sizes are scripts/inference.sh's: tiny eva02_tiny_patch14_224 (192), small
eva02_small_patch14_224 (384), base eva02_base_patch14_448 (768), large eva02_large_patch14_448
(1024), giant eva_giant_patch14_560 (1408); each `Eva` is built with the arguments of timm's
model function of that name (timm 0.9.7, the version Uni3D pins, gives the same state dict as
the timm installed here, key for key) and the number of classes of its default pretrained tag.
Released files hold `module` → `point_encoder.*` and `logit_scale`: converting strips
`point_encoder.` (and DDP's `module.`) only.
"""

import torch
from torch import nn

from cg3d.geometry.fps import POINTNET2_SKIP_NORM2
from cg3d.models.encoders import register_encoder, register_size
from cg3d.models.encoders.ops import group_patches, points_for_patches
from cg3d.models.encoders.pointbert import Encoder


@register_encoder("uni3d")
class Uni3D(nn.Module):
    def __init__(
        self,
        out_dim: int,
        groups: int = 512,
        group_size: int = 64,
        encoder_dims: int = 512,
        width: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp_ratio: float = 4 * 2 / 3,
        swiglu_mlp: bool = True,
        scale_mlp: bool = False,
        qkv_fused: bool = True,
        img_size: int = 224,
        patch_size: int = 14,
        num_classes: int = 0,
        in_channels: int = 6,
        kernel_fps: bool = True,
    ):
        super().__init__()
        if in_channels != 6:
            raise ValueError("Uni3D takes 6 channels (xyz, rgb): point_channels must be 6")
        self.groups, self.group_size = groups, group_size
        # Group's fps is pointnet2_ops' kernel: centres skip points near the origin
        self.fps_skip_norm2 = POINTNET2_SKIP_NORM2 if kernel_fps else None
        self.encoder = Encoder(encoder_dims, 256, in_channels)
        self.encoder2trans = nn.Linear(encoder_dims, width)
        self.trans2embed = nn.Linear(width, out_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, width))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        # timm's EVA as Uni3D creates it; the rotary embedding is left out (Uni3D calls each
        # block without it), which changes no weight. timm is imported here, not with the
        # registry: it adds half a second to every command that names an encoder.
        from timm.models.eva import Eva

        self.visual = Eva(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=width,
            depth=depth,
            num_heads=heads,
            mlp_ratio=mlp_ratio,
            swiglu_mlp=swiglu_mlp,
            scale_mlp=scale_mlp,
            qkv_fused=qkv_fused,
            num_classes=num_classes,
        )

    @staticmethod
    def points_needed(params: dict) -> int:
        return points_for_patches(params["groups"], params["group_size"])

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 6) points: xyz, then rgb in [0, 1] → (B, out_dim), as Uni3D's `encode_pc`."""
        patches, centres = group_patches(
            points[..., :6].float(), self.groups, self.group_size, self.fps_skip_norm2
        )
        tokens = self.encoder2trans(self.encoder(patches))
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centres)], dim=1)
        x = self.visual.pos_drop(x + pos)
        for block in self.visual.blocks:
            x = block(x)
        return self.trans2embed(self.visual.fc_norm(self.visual.norm(x[:, 0])))


# scripts/inference.sh: 512 groups of 64, pc-encoder-dim 512, embed-dim 1024 (EVA02-E-14-plus);
# the EVA arguments of timm's eva02_*/eva_giant_* model functions
_UNI3D = dict(groups=512, group_size=64, encoder_dims=512, in_channels=6)
_EVA02_SMALL = dict(mlp_ratio=4 * 2 / 3, swiglu_mlp=True, img_size=224, num_classes=0)
_EVA02_448 = dict(
    mlp_ratio=4 * 2 / 3, swiglu_mlp=True, scale_mlp=True, qkv_fused=False, img_size=448,
    num_classes=1000,
)  # fmt: skip
register_size("uni3d-ti", "uni3d", **_UNI3D, width=192, depth=12, heads=3, **_EVA02_SMALL)
register_size("uni3d-s", "uni3d", **_UNI3D, width=384, depth=12, heads=6, **_EVA02_SMALL)
register_size("uni3d-b", "uni3d", **_UNI3D, width=768, depth=12, heads=12, **_EVA02_448)
register_size("uni3d-l", "uni3d", **_UNI3D, width=1024, depth=24, heads=16, **_EVA02_448)
register_size(
    "uni3d-g",
    "uni3d",
    **_UNI3D,
    width=1408,
    depth=40,
    heads=16,
    mlp_ratio=6144 / 1408,
    swiglu_mlp=False,
    img_size=560,
    num_classes=1000,
)
