"""Optimisers and learning-rate schedules of the training run.

AdamW for the point encoder (and CLIP's temperature when it trains), weight decay on its
weight matrices only; SGD with momentum and weight decay for the visual prompts, as the
paper; both on a cosine schedule with linear warmup, stepped once per update, after clipping
the gradient norm.
"""

import math
import warnings
from collections.abc import Callable

import torch

from cg3d.models.model import CG3D

# CLIP's ceiling on its learned temperature (open_clip clamps ln(scale) to ln 100 every step):
# beyond it the softmax saturates and training becomes unstable.
MAX_LOGIT_SCALE = 100.0


def cosine_with_warmup(total: int, warmup: int) -> Callable[[int], float]:
    """LR factor per update: linear warmup to 1, then cosine to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# Learned tokens and positions are embeddings, not weights: the public add_weight_decay
# leaves them undecayed, as it does biases and normalisation scales.
UNDECAYED_NAMES = ("cls_token", "cls_pos")


def decays(name: str, parameter: torch.nn.Parameter) -> bool:
    """Whether AdamW decays the encoder parameter `name`: weight matrices and kernels only."""
    return parameter.ndim >= 2 and name.rsplit(".", 1)[-1] not in UNDECAYED_NAMES


def make_optimizers(model: CG3D, config) -> dict[str, torch.optim.Optimizer]:
    """{"encoder": AdamW, "prompts": SGD} for `config` (a TrainConfig)."""
    named = list(model.point_encoder.named_parameters())
    groups = [
        {"params": [p for name, p in named if decays(name, p)]},
        {"params": [p for name, p in named if not decays(name, p)], "weight_decay": 0.0},
    ]
    if config.train_logit_scale:
        # As CLIP: the temperature trains without weight decay, which would pull it towards 1.
        groups.append({"params": [model.clip.logit_scale], "weight_decay": 0.0})
    return {
        "encoder": torch.optim.AdamW(
            groups, lr=config.encoder_lr, weight_decay=config.encoder_weight_decay
        ),
        "prompts": torch.optim.SGD(
            [model.visual.prompts],
            lr=config.prompt_lr,
            momentum=config.prompt_momentum,
            weight_decay=config.prompt_weight_decay,
        ),
    }


def clip_gradients(
    optimizer: torch.optim.Optimizer, max_norm: float, foreach: bool | None = None
) -> None:
    """Scale the gradients of `optimizer`'s parameters to a total norm of at most `max_norm`
    (0: leave them), as the public code clips each phase's parameters before its step.

    `foreach`: the norms and the scaling as multi-tensor kernels (a few launches for all the
    parameters instead of two per parameter); None: torch's choice (foreach on CUDA only).
    Either way nothing is read back to the host, and on a CPU both give the same bits."""
    if max_norm > 0:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=foreach)


# Optimisers with a fused (one kernel per step) implementation on CUDA
FUSABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def use_fast_kernels(
    optimizers: dict[str, torch.optim.Optimizer], device: torch.device, fused: bool = True
) -> None:
    """Step every optimiser with multi-tensor kernels: fused ones on CUDA (when `fused`),
    foreach ones elsewhere, instead of a loop of small kernels per parameter.

    Set on the parameter groups, after construction, so it applies to whatever groups
    `make_optimizers` makes; call it again after `load_state_dict` (a checkpoint's groups carry
    the flags of the run that wrote them). Neither changes the update's arithmetic: foreach and
    the per-parameter loop give the same bits on a CPU (tests/train/test_sync_free.py).
    """
    for optimizer in optimizers.values():
        fuse = fused and device.type == "cuda" and isinstance(optimizer, FUSABLE)
        for group in optimizer.param_groups:
            group["foreach"], group["fused"] = not fuse, fuse
        if fuse:
            # a fused step keeps its step counter on the parameter's device (a checkpoint's
            # counters, or a foreach run's, are float32 CPU scalars)
            for state in optimizer.state.values():
                if isinstance(state.get("step"), torch.Tensor):
                    state["step"] = state["step"].to(device, torch.float32)


def make_schedulers(
    optimizers: dict[str, torch.optim.Optimizer], config, updates_per_epoch: int
) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
    """One cosine-with-warmup schedule per optimiser over `config.epochs` epochs of updates."""
    total = config.epochs * updates_per_epoch
    warmup = max(1, round(config.warmup_epochs * updates_per_epoch))
    factor = cosine_with_warmup(total, warmup)
    return {
        name: torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        for name, optimizer in optimizers.items()
    }


def step_schedulers(schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR]) -> None:
    with warnings.catch_warnings():
        # in the alternating schedule one optimiser rests every other update, by design
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        for scheduler in schedulers.values():
            scheduler.step()


@torch.no_grad()
def clamp_logit_scale(model: CG3D) -> None:
    """Keep a learned temperature within CLIP's range [1, 100]."""
    model.clip.logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))
