"""Optimisers and learning-rate schedules of the training run.

AdamW for the point encoder (and CLIP's temperature when it trains), weight decay on its
weight matrices only; SGD with momentum and weight decay for the visual prompts, as the
paper. Schedules (`make_schedulers`): ours, a cosine with linear warmup stepped once per
update, after clipping the gradient norm, for both; the public runner's, timm's
CosineLRScheduler stepped once per epoch for the encoder and a constant for the prompts.
"""

import math
import warnings
from collections.abc import Callable

import torch

from cg3d.models.model import CG3D
from cg3d.models.prompts import vpt_bound

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


# Learned tokens and positions are embeddings, not weights: we leave both undecayed, as
# biases and normalisation scales. The public add_weight_decay exempts 1-D parameters, biases
# and names containing "token" only, so it decays cls_pos, shape (1, 1, width):
# `train.decay_cls_pos` does the same.
UNDECAYED_NAMES = ("cls_token", "cls_pos")


def decays(name: str, parameter: torch.nn.Parameter, decay_cls_pos: bool = False) -> bool:
    """Whether AdamW decays the encoder parameter `name`: weight matrices and kernels only."""
    exempt = set(UNDECAYED_NAMES) - ({"cls_pos"} if decay_cls_pos else set())
    return parameter.ndim >= 2 and name.rsplit(".", 1)[-1] not in exempt


def make_optimizers(model: CG3D, config) -> dict[str, torch.optim.Optimizer]:
    """{"encoder": AdamW, "prompts": SGD} for `config` (a TrainConfig)."""
    named = list(model.point_encoder.named_parameters())
    decayed = {name for name, p in named if decays(name, p, config.decay_cls_pos)}
    groups = [
        {"params": [p for name, p in named if name in decayed]},
        {"params": [p for name, p in named if name not in decayed], "weight_decay": 0.0},
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
    optimizers: dict[str, torch.optim.Optimizer],
    device: torch.device,
    fused: bool = True,
    foreach: bool = True,
) -> None:
    """Step every optimiser with multi-tensor kernels: fused ones on CUDA (when `fused`),
    foreach ones elsewhere, instead of a loop of small kernels per parameter (`foreach=False`:
    that loop, for measuring the difference).

    Set on the parameter groups, after construction, so it applies to whatever groups
    `make_optimizers` makes; call it again after `load_state_dict` (a checkpoint's groups carry
    the flags of the run that wrote them). Neither changes the update's arithmetic: foreach and
    the per-parameter loop give the same bits on a CPU (tests/train/test_sync_free.py).
    """
    for optimizer in optimizers.values():
        fuse = foreach and fused and device.type == "cuda" and isinstance(optimizer, FUSABLE)
        for group in optimizer.param_groups:
            group["foreach"], group["fused"] = foreach and not fuse, fuse
        if fuse:
            # a fused step keeps its step counter on the parameter's device (a checkpoint's
            # counters, or a foreach run's, are float32 CPU scalars)
            for state in optimizer.state.values():
                if isinstance(state.get("step"), torch.Tensor):
                    state["step"] = state["step"].to(device, torch.float32)


def epoch_cosine(base_lr: float, lr_min: float, cycle: int) -> Callable[[int], float]:
    """LR factor per epoch of the public encoder schedule: timm's CosineLRScheduler (t_initial
    `cycle`, lr_min, no warmup, one cycle) stepped with `step(epoch)` after each epoch, so
    epoch e trains at its value for e - 1, epoch 0 at the base LR; from `cycle` on, lr_min."""

    def factor(epoch: int) -> float:
        t = max(epoch - 1, 0)
        lr = (
            lr_min
            if t >= cycle
            else lr_min + 0.5 * (base_lr - lr_min) * (1 + math.cos(math.pi * t / cycle))
        )
        return lr / base_lr if base_lr > 0 else 1.0

    return factor


class Schedule(torch.optim.lr_scheduler.LambdaLR):
    """A LambdaLR that says what it counts: `per` is "update" (stepped after each update) or
    "epoch" (stepped to the epoch at its start, `begin_epoch`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor, per: str):
        self.per = per
        super().__init__(optimizer, factor)


def make_schedulers(
    optimizers: dict[str, torch.optim.Optimizer], config, updates_per_epoch: int
) -> dict[str, Schedule]:
    """The encoder's and the prompts' schedules (`train.encoder_lr_schedule`,
    `train.prompt_lr_schedule`); the cosines span `cosine_epochs` (0: all) epochs."""
    epochs = config.cosine_epochs or config.epochs
    total = epochs * updates_per_epoch
    warmup = max(1, round(config.warmup_epochs * updates_per_epoch))
    cosine = cosine_with_warmup(total, warmup)
    low = config.encoder_lr_min / config.encoder_lr if config.encoder_lr > 0 else 0.0

    def encoder_cosine(step: int) -> float:
        return low + (1 - low) * cosine(step)

    if config.encoder_lr_schedule == "epoch-cosine":
        encoder = Schedule(
            optimizers["encoder"],
            epoch_cosine(config.encoder_lr, config.encoder_lr_min, epochs),
            "epoch",
        )
    else:
        encoder = Schedule(optimizers["encoder"], encoder_cosine, "update")
    prompts = Schedule(
        optimizers["prompts"],
        (lambda step: 1.0) if config.prompt_lr_schedule == "constant" else cosine,
        "update",
    )
    return {"encoder": encoder, "prompts": prompts}


def step_schedulers(schedulers: dict[str, Schedule]) -> None:
    """After an update: step the schedules that count updates."""
    with warnings.catch_warnings():
        # in the alternating schedule one optimiser rests every other update, by design
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        for scheduler in schedulers.values():
            if scheduler.per == "update":
                scheduler.step()


def begin_epoch_schedules(schedulers: dict[str, Schedule], epoch: int) -> None:
    """At the start of `epoch`: bring the schedules that count epochs to it (on a resumed run
    they are there already: their count is in the checkpoint)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        for scheduler in schedulers.values():
            while scheduler.per == "epoch" and scheduler.last_epoch < epoch:
                scheduler.step()


def prompt_init_bound(width: int, patch_area: int, init: str) -> float:
    """The half-width of the prompts' uniform init: VPT's Xavier bound over the patch
    projection, or the public code's, which writes 3·16 (the patch side) for 3·16·16."""
    return vpt_bound(width, 16 if init == "cg3d-public" else patch_area)


@torch.no_grad()
def init_prompts(model: CG3D, init: str) -> None:
    """Rescale a freshly built model's prompts, drawn U(-b, b) with VPT's bound b, to the bound
    of `init` (`train.prompt_init`): the same uniform draw, so every process gets the same
    prompts and no random number is drawn."""
    tower = model.visual.tower
    vpt = prompt_init_bound(tower.width, tower.patch_area, "vpt")
    model.visual.prompts.mul_(prompt_init_bound(tower.width, tower.patch_area, init) / vpt)


@torch.no_grad()
def clamp_logit_scale(model: CG3D) -> None:
    """Keep a learned temperature within CLIP's range [1, 100]."""
    model.clip.logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))
