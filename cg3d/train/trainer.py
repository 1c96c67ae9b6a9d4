"""One optimiser update of either schedule, for a built model.

Schedules (`train.schedule`):
  alternating  the paper's: even updates train the point encoder on point–text + point–image
               (images encoded without grad), odd updates train only the visual prompts on
               image–text; each update consumes `grad_accum` batches. The phase goes by the
               update's index in the run, or in its epoch (`phase_parity: epoch`, the public
               runner's `idx % 2`); `prompt_steps_run_encoder` also runs the encoder forward
               on prompt updates, without grad, so BatchNorm's running statistics see them.
  joint        one update trains both on the weighted sum of the three losses.

Whatever autocast does to the towers, the logits and losses are float32 (`contrastive_loss`).
"""

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cg3d.models.model import CG3D
from cg3d.models.text import class_text_features
from cg3d.protocol import templates
from cg3d.train.augment import scale_and_shift
from cg3d.train.distributed import average_gradients, world
from cg3d.train.losses import contrastive_loss
from cg3d.train.optim import (
    begin_epoch_schedules,
    clamp_logit_scale,
    clip_gradients,
    make_optimizers,
    make_schedulers,
    step_schedulers,
    use_fast_kernels,
)
from cg3d.train.text_cache import TextEncoder


@dataclass(frozen=True)
class Levers:
    """How the update runs, each switchable on its own so that bench/bench_gpu.py can measure
    them one by one; none changes the update's numbers (tests/train/test_sync_free.py).

    foreach   clipping and optimiser steps as multi-tensor kernels (False: per parameter)
    fused     fused optimiser steps on CUDA (foreach elsewhere)
    prefetch  the loop copies the next batch to the device while the current one computes
    compile   torch.compile of the point encoder and the prompted image tower (`train.compile`)
    compile_mode  torch.compile's mode ("reduce-overhead": with CUDA graphs)
    """

    foreach: bool = True
    fused: bool = True
    prefetch: bool = True
    compile: bool = False
    compile_mode: str = "default"

    @classmethod
    def of_params(cls, config) -> "Levers":
        """The levers of a run's params: all on, compiling when `train.compile` says so."""
        return cls(compile=config.compile)


def text_targets(model: CG3D, config) -> torch.Tensor | None:
    """(C, D) per-class targets for `text_targets: class_prototypes`, else None (captions).

    A caption is a template around the class name. Through a randomly initialised text tower
    its feature is dominated by the template (same template, other class: cosine 0.90; same
    class, other template: 0.68, on the default CLIP), which no shape can predict; the class
    prototype (the caption features averaged over the templates, as zero-shot prompts are)
    keeps what a caption says about the shape.
    """
    if config.text_targets != "class_prototypes":
        return None
    classes = list(model.config["classes"])
    return class_text_features(model, classes, templates(config.eval_templates))


class Trainer:
    """Optimisers, schedules and one update of either schedule, for a built model."""

    def __init__(
        self,
        model: CG3D,
        config,
        updates_per_epoch: int,
        device: torch.device,
        levers: Levers | None = None,
    ):
        self.model, self.config, self.device = model, config, device
        self.levers = levers or Levers.of_params(config)
        self.normalizer = None  # CLIP's normalisation, made at the first uint8 batch
        if self.levers.compile:
            compile_towers(model, self.levers.compile_mode)
        self.autocast = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
            if device.type == "cuda"
            else nullcontext
        )
        self.encoder = model.point_encoder
        if world()[1] > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.encoder = torch.nn.parallel.DistributedDataParallel(
                model.point_encoder, device_ids=ids
            )
        # Parameters outside DDP whose gradients the processes average themselves: the prompts,
        # and a trained temperature (else each process would learn its own)
        self.shared_params = [model.visual.prompts]
        if config.train_logit_scale:
            self.shared_params.append(model.clip.logit_scale)
        self.optimizers = make_optimizers(model, config)
        self.fast_kernels()
        self.schedulers = make_schedulers(self.optimizers, config, updates_per_epoch)
        self.texts = TextEncoder(model, cache=config.text_cache)
        self.class_targets = text_targets(model, config)
        self.epoch_start = 0  # the step of the current epoch's first update (`begin_epoch`)

    def begin_epoch(self, epoch: int, step: int) -> None:
        """Before the first update of `epoch`, which is update `step` of the run: the phase
        parity of `phase_parity: epoch` restarts here, and per-epoch schedules move on."""
        self.epoch_start = step
        begin_epoch_schedules(self.schedulers, epoch)

    def fast_kernels(self) -> None:
        """The optimisers' kernels by the levers: foreach/fused, or one parameter at a time."""
        use_fast_kernels(self.optimizers, self.device, self.levers.fused, self.levers.foreach)

    def images(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's images on the device, CLIP-normalised: uint8 pixels (the loader's, a
        quarter of float32's bytes to copy) are normalised there; float ones came normalised."""
        images = batch["image"].to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:
            if self.normalizer is None:
                self.normalizer = pixel_normalizer(self.model)
            images = self.normalizer.normalize(images)
        return images

    def points(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's points on the device, ready for the encoder: a training batch's carry
        their per-sample scale and shift (the augmentation after FPS), applied here to the
        whole batch (on a copy: the batch stays as the loader gave it)."""
        points = batch["points"].to(self.device, non_blocking=True)
        if "scale" not in batch:
            return points
        if points is batch["points"]:
            points = points.clone()
        scale = batch["scale"].to(self.device, non_blocking=True)
        shift = batch["shift"].to(self.device, non_blocking=True)
        return scale_and_shift(points, scale, shift)

    def losses(
        self, batch: dict[str, Any], phase: str
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one batch for `phase` ("encoder", "prompts" or "joint") and its parts,
        detached 0-d tensors on the device (reading them back would wait for the GPU).

        Each image goes through the prompted image tower once, with grad only when the prompts
        train in this phase.
        """
        model, config = self.model, self.config
        if self.class_targets is None:
            texts = self.texts(batch["caption"])
        else:
            texts = self.class_targets[torch.as_tensor(batch["cls"], device=self.device)]
        scale = model.logit_scale
        train_encoder = phase in ("encoder", "joint")
        train_prompts = phase in ("prompts", "joint")
        parts: dict[str, torch.Tensor] = {}
        with self.autocast():
            with nullcontext() if train_prompts else torch.no_grad():
                images = model.encode_image(self.images(batch))
            gather = config.gather_negatives
            if train_encoder:
                points = F.normalize(self.encoder(self.points(batch)).float(), dim=-1)
                parts["point_text"] = (
                    contrastive_loss(points, texts, scale, gather)[0] * config.point_text_weight
                )
                parts["point_image"] = (
                    contrastive_loss(points, images, scale, gather)[0] * config.point_image_weight
                )
            elif config.prompt_steps_run_encoder:
                self.encoder_forward_only(batch)
            if train_prompts:
                parts["image_text"] = (
                    contrastive_loss(images, texts, scale, gather)[0] * config.image_text_weight
                )
        loss = sum(parts.values())
        logged = {f"loss_{name}": value.detach() for name, value in parts.items()}
        return loss, logged | {"loss": loss.detach()}

    @torch.no_grad()
    def encoder_forward_only(self, batch: dict[str, Any]) -> None:
        """The point encoder on a prompt update's batch, output unused: in training mode its
        BatchNorm layers update their running statistics (the public runner's encoder sees
        every batch); no grad, so no parameter moves."""
        self.encoder(self.points(batch))

    def phase(self, step: int) -> tuple[str, list[str]]:
        """The phase of update `step` and the optimisers it steps."""
        if self.config.schedule == "joint":
            return "joint", ["encoder", "prompts"]
        index = step - self.epoch_start if self.config.phase_parity == "epoch" else step
        phase = "encoder" if index % 2 == 0 else "prompts"
        return phase, [phase]

    def update(self, batches: list[dict[str, Any]], step: int) -> dict[str, torch.Tensor]:
        """One optimiser update over `batches` (gradient accumulation); `step` picks the phase.
        Returns the mean losses as 0-d device tensors: nothing in an update waits for the GPU
        (the loop reads the losses every `train.log_every` updates)."""
        phase, names = self.phase(step)
        # every optimiser, stepped or not: a gradient of the resting phase (the temperature's in
        # a prompt update) must not carry over into the next update
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        logged: dict[str, torch.Tensor] = {}
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            # DDP all-reduces the encoder's grads on the last batch of the group only
            sync = (
                nullcontext()
                if last or not hasattr(self.encoder, "no_sync")
                else self.encoder.no_sync()
            )
            with sync:
                loss, parts = self.losses(batch, phase)
                (loss / len(batches)).backward()
            for key, value in parts.items():
                share = value.double() / len(batches)  # float64, as the Python floats were
                logged[key] = logged[key] + share if key in logged else share
        average_gradients(self.shared_params)
        for name in names:
            clip_gradients(self.optimizers[name], self.config.grad_clip, self.levers.foreach)
            self.optimizers[name].step()
        if self.config.train_logit_scale:
            clamp_logit_scale(self.model)
        step_schedulers(self.schedulers)
        return logged

    def state(self) -> dict[str, Any]:
        return {
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: sch.state_dict() for name, sch in self.schedulers.items()},
            "text_cache": self.texts.state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.fast_kernels()  # the checkpoint's groups carry the kernels of the run that wrote it
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        self.texts.load_state(state["text_cache"])


def pixel_normalizer(model: CG3D):
    """The model's CLIP normalisation (the `ClipPreprocess` of its image tower), whose
    `normalize` takes uint8 pixels on any device."""
    from cg3d.train.data import ClipPreprocess  # the loader's module: imported when used

    return ClipPreprocess.of_model(model.clip.visual)


def compile_towers(model: CG3D, mode: str = "default") -> None:
    """torch.compile the point encoder and the prompted image tower in place (`Module.compile`:
    the modules and their state-dict keys stay as they are, checkpoints unchanged)."""
    model.point_encoder.compile(mode=mode)
    model.visual.compile(mode=mode)
