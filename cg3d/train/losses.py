"""Symmetric InfoNCE over L2-normalised features, across all processes of a DDP run.

Each process scores its own rows against the features of every process, so the negatives are
the global batch (open_clip's `local_loss`). The gather keeps the autograd graph
(`gather_with_grad`): a row of this process is also a negative in every other process's loss,
and the backward of the gather sends those terms back to it. With DDP averaging the parameter
gradients over the processes, each process then gets the gradient of the global-batch loss, as
one process on the whole batch would (tests/train/test_ddp.py). Gathering detached copies
instead gives the same loss value but drops those terms from the gradient. With
`gather=False` (`train.gather_negatives: false`, the public runner's) each process contrasts
its rows with its own batch only.

The logits and the loss are always float32, even inside an autocast region: under bf16
autocast `scale · a @ b.T` would be a bf16 matmul (logit errors up to 0.24 at scale 100,
about 0.5 % gradient error, measured on a GPU).
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from cg3d.train.distributed import all_gather_ints, world


class _GatherWithGrad(torch.autograd.Function):
    """All processes' rows, concatenated; backward: each process's rows get the sum over the
    processes of the gradients of their copies."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, counts: tuple[int, ...], rank: int) -> torch.Tensor:
        ctx.rows = (sum(counts[:rank]), sum(counts[: rank + 1]))
        # all_gather needs one shape: pad to the largest batch (the last one of an epoch may
        # be smaller on some process)
        padded = features.new_zeros((max(counts), *features.shape[1:]))
        padded[: features.shape[0]] = features
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone(memory_format=torch.contiguous_format)  # reduced in place: a copy
        dist.all_reduce(grad)
        start, stop = ctx.rows
        return grad[start:stop], None, None


def gather_features(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' features concatenated, differentiable, and this process's row offset.

    The row counts go over the host group (`distributed.all_gather_ints`): read back from the
    GPU, they would make every loss wait for the kernels queued before it."""
    rank, size = world()
    if size == 1:
        return features, 0
    counts = tuple(all_gather_ints(features.shape[0]))
    return _GatherWithGrad.apply(features, counts, rank), sum(counts[:rank])


def contrastive_loss(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, gather: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between paired rows of normalised `a` and `b`, in float32 whatever
    autocast says; also a→b top-1 accuracy. `gather`: negatives from every process."""
    with torch.autocast(a.device.type, enabled=False):
        a, b, logit_scale = a.float(), b.float(), logit_scale.float()
        all_a, offset = gather_features(a) if gather else (a, 0)
        all_b, _ = gather_features(b) if gather else (b, 0)
        labels = torch.arange(a.shape[0], device=a.device) + offset
        logits_ab = logit_scale * a @ all_b.T
        logits_ba = logit_scale * b @ all_a.T
        loss = (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels)) / 2
        accuracy = (logits_ab.argmax(dim=-1) == labels).float().mean()
    return loss, accuracy
