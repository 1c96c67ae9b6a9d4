"""Deep visual prompt tuning of a frozen ViT image tower, whichever library built the tower.

`PromptedViT` inserts `prompts` learnable tokens right after the CLS token and, with deep
prompts, replaces them by a fresh set before every block after the first (VPT-deep, as the
public CG3D code does); shallow prompts are inserted once. Either way they are dropped before
pooling, so with 0 prompts the output is exactly the tower's own image features.

A `VitTower` says where in a given tower the prompts go: open_clip's ViT (cg3d.models.clip)
takes them after its `ln_pre`, SLIP's timm ViT (cg3d.models.slip) after the positional
embedding and before `norm_pre`, each as its public prompt-tuning code does.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Tokens = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class VitTower:
    """What prompt tuning needs of a ViT image tower (its weights stay where they are)."""

    embed: Tokens  # (B, 3, S, S) images → (B, 1 + patches, W) tokens, CLS first
    norm_pre: Tokens  # applied once the first prompts are in
    blocks: Sequence[Tokens]  # batch-first transformer blocks, in order
    head: Tokens  # (B, 1 + patches, W) tokens after the blocks → (B, D) image features
    width: int
    patch_area: int  # pixels per patch: scales the prompts' initialisation
    image_size: int


def vpt_bound(width: int, patch_area: int) -> float:
    """VPT's prompt initialisation: uniform in ±this, a Xavier bound of the patch projection
    (fan-in 3 channels × `patch_area` pixels, fan-out `width`)."""
    return math.sqrt(6.0 / float(3 * patch_area + width))


class PromptedViT(nn.Module):
    """Visual prompts around a frozen `VitTower`; `prompts` is (layers, count, width)."""

    def __init__(self, tower: VitTower, prompts: int = 5, deep: bool = True):
        super().__init__()
        self.tower = tower  # a plain attribute: the tower's weights belong to the CLIP model
        self.count, self.deep = prompts, deep
        self.image_size = tower.image_size
        layers = len(tower.blocks) if deep else 1
        bound = vpt_bound(tower.width, tower.patch_area)
        self.prompts = nn.Parameter(
            torch.empty(layers, prompts, tower.width).uniform_(-bound, bound)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tower, n = self.tower, self.count
        x = tower.embed(images)
        if n:
            first = self.prompts[0].to(x.dtype).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], first, x[:, 1:]], dim=1)
        x = tower.norm_pre(x)
        for index, block in enumerate(tower.blocks):
            if n and self.deep and index > 0:
                fresh = self.prompts[index].to(x.dtype).expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :1], fresh, x[:, 1 + n :]], dim=1)
            x = block(x)
        if n:
            x = torch.cat([x[:, :1], x[:, 1 + n :]], dim=1)
        return tower.head(x)
