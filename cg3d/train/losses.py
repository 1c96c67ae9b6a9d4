"""Symmetric InfoNCE over L2-normalised features, across all processes of a DDP run.

Each process scores its own rows against the features of every process (gathered), so the
negatives are the global batch; gradients flow through the local part only (the other parts
get theirs on their own process, and DDP averages), as open_clip's `local_loss`.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_features(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' features concatenated (local part keeps its grad) and this part's offset.

    Batches may differ in size between processes (the last one of an epoch).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([features.shape[0]], device=features.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = features.new_zeros((max(counts), *features.shape[1:]))
    padded[: features.shape[0]] = features.detach()
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    pieces = [part[:count] for part, count in zip(parts, counts, strict=True)]
    pieces[rank] = features
    return torch.cat(pieces), sum(counts[:rank])


def contrastive_loss(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between paired rows of normalised `a` and `b`; also a→b top-1 accuracy."""
    all_a, offset = gather_features(a)
    all_b, _ = gather_features(b)
    labels = torch.arange(a.shape[0], device=a.device) + offset
    logits_ab = logit_scale * a @ all_b.T
    logits_ba = logit_scale * b @ all_a.T
    loss = (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels)) / 2
    accuracy = (logits_ab.argmax(dim=-1) == labels).float().mean()
    return loss, accuracy
