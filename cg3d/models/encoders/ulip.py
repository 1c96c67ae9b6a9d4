"""ULIP's and ULIP-2's point encoder: Point-BERT (as ours) and ULIP's bias-free `pc_projection`.

salesforce/ULIP, models/ULIP_models.py: `encode_pc` is `point_encoder(pc) @ pc_projection`, where
`point_encoder` is models/pointbert/point_encoder.py's `PointTransformer` (ULIP) or
`PointTransformer_Colored` (ULIP-2: the first conv on 6 channels, xyz − centre and rgb). Both end
in concat(CLS token, max over patch tokens) = 2·width (768) features, so the network is our
`pointbert` with its `projection` layer replaced by ULIP's (2·width, out_dim) matrix
`pc_projection` (768→512 against SLIP, 768→1280 against OpenCLIP ViT-bigG-14). Our state-dict
names are ULIP's `point_encoder.*` one for one, plus `pc_projection`: converting a ULIP file
strips `module.point_encoder.` and `module.` and renames nothing else.
"""

import torch
from torch import nn

from cg3d.models.encoders import register_encoder, register_size
from cg3d.models.encoders.pointbert import PointBERT


@register_encoder("pointbert-ulip")
class ULIPPointBERT(PointBERT):
    def __init__(
        self,
        out_dim: int,
        groups: int = 512,
        group_size: int = 32,
        encoder_dims: int = 256,
        patch_hidden: int = 256,
        width: int = 384,
        depth: int = 12,
        heads: int = 6,
        drop_path: float = 0.1,
        in_channels: int = 3,
        kernel_fps: bool = True,
    ):
        super().__init__(
            out_dim, groups, group_size, encoder_dims, patch_hidden, width, depth, heads,
            drop_path, in_channels, kernel_fps,  # ULIP's misc.fps is pointnet2_ops' kernel
        )  # fmt: skip
        del self.projection  # ULIP projects with a bare matrix, no bias
        # ULIP's initialisation: normal, std out_dim^-0.5 (ULIP_models.py)
        self.pc_projection = nn.Parameter(torch.randn(2 * width, out_dim) * out_dim**-0.5)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, C ≥ in_channels) points → (B, out_dim), as ULIP's `encode_pc`."""
        return self.pooled(points) @ self.pc_projection


# ULIP (v1) Point-BERT: models/pointbert/PointTransformer_8192point.yaml (512 groups of 32,
# encoder_dims 256, width 384, 12 blocks, 6 heads, drop path 0.1), xyz only
register_size(
    "ulip-pointbert",
    "pointbert-ulip",
    groups=512,
    group_size=32,
    encoder_dims=256,
    patch_hidden=256,
    width=384,
    depth=12,
    heads=6,
    drop_path=0.1,
    in_channels=3,
)
# ULIP-2 Point-BERT: models/pointbert/ULIP_2_PointBERT_10k_colored_pointclouds.yaml (as ULIP's,
# 18 blocks), the first conv on xyz − centre and rgb
register_size(
    "ulip2-pointbert",
    "pointbert-ulip",
    groups=512,
    group_size=32,
    encoder_dims=256,
    patch_hidden=256,
    width=384,
    depth=18,
    heads=6,
    drop_path=0.1,
    in_channels=6,
)
