"""The training stage: align a point encoder with a prompt-tuned, frozen CLIP.

`train_stage(shards, out, config)` is what `cg3d train` and the DVC `train` stage run; it
builds the shard loaders and calls `fit`, which takes any iterable of batches
({"points" (B,N,3), "image" (B,3,S,S) preprocessed, "caption" list[str], "cls" (B,)}), so
tests and benchmarks can feed tensors from memory (`BatchList`).

Schedules (`schedule`):
  alternating  the paper's: even updates train the point encoder on point–text + point–image
               (images encoded without grad), odd updates train only the visual prompts on
               image–text; each update consumes `grad_accum` batches.
  joint        one update trains both on the weighted sum of the three losses.
Optimisers: AdamW for the encoder, SGD with momentum for the prompts, both on a cosine
schedule with linear warmup. `OUT/last.pt` is written after every epoch (model, optimisers,
schedulers, RNG states, epoch) and `--resume` continues from it.
"""

import dataclasses
import json
import math
import random
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console

from cg3d.errors import UsageError
from cg3d.models.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from cg3d.models.model import CG3D, build_model, model_config
from cg3d.params import TrainConfig
from cg3d.protocol import templates
from cg3d.train.losses import contrastive_loss
from cg3d.train.rng import rng_state, set_rng_state
from cg3d.train.text_cache import TextEncoder

console = Console(stderr=True)
SCHEDULES = ("alternating", "joint")


class BatchList:
    """An in-memory loader: a list of batches, reordered per epoch by `set_epoch` (seeded)."""

    def __init__(self, batches: list[dict[str, Any]], seed: int = 0):
        self.batches, self.seed, self.order = batches, seed, list(range(len(batches)))

    @property
    def num_batches(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.order = random.Random(self.seed + epoch).sample(
            range(len(self.batches)), len(self.batches)
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self.batches[index] for index in self.order)


def cosine_with_warmup(total: int, warmup: int):
    """LR factor per update: linear warmup to 1, then cosine to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """All-reduce-average the grads of parameters that DDP does not manage (the prompts)."""
    _, size = world()
    if size == 1:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= size


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"train.device: {name} asked for, but no CUDA device is available")
    device = torch.device(name)
    if device.type == "cuda" and dist.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def num_updates(num_batches: int, accum: int) -> int:
    """Updates an epoch holds: whole groups of `accum` batches, the same on every process."""
    count = torch.tensor([num_batches // accum])
    if world()[1] > 1:
        count = count.to(pick_device("auto"))
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
    if int(count.item()) < 1:
        raise UsageError(f"only {num_batches} batches per epoch: fewer than --grad-accum {accum}")
    return int(count.item())


def class_text_features(model: CG3D, classes: list[str], template_set: str) -> torch.Tensor:
    """(C, D) normalised class prototypes: templates over each class name, averaged."""
    prompts = templates(template_set)
    features = []
    with torch.no_grad():
        for name in classes:
            texts = [template.format(name.replace("_", " ")) for template in prompts]
            features.append(F.normalize(model.encode_text(texts).mean(0), dim=-1))
    return torch.stack(features)


@torch.no_grad()
def evaluate(
    model: CG3D, batches: Iterable[dict[str, Any]], prototypes: torch.Tensor, autocast
) -> dict[str, float]:
    """Held-out accuracy: point→text (zero-shot over class prototypes) and point→image (in batch)."""
    model.eval()
    device = model.device()
    right_text = right_image = total = 0
    for batch in batches:
        with autocast():
            points = model.encode_points(batch["points"].to(device))
            images = model.encode_image(batch["image"].to(device))
        labels = torch.as_tensor(batch["cls"], device=device)
        right_text += int(((points @ prototypes.T).argmax(-1) == labels).sum())
        right_image += int(
            ((points @ images.T).argmax(-1) == torch.arange(len(labels), device=device)).sum()
        )
        total += len(labels)
    model.train()
    if total == 0:
        raise UsageError("the held-out split holds no samples to evaluate on")
    return {
        "point_text_acc": right_text / total,
        "point_image_acc": right_image / total,
        "samples": total,
    }


class Trainer:
    """Optimisers, schedules and one update of either schedule, for a built model."""

    def __init__(
        self, model: CG3D, config: TrainConfig, updates_per_epoch: int, device: torch.device
    ):
        self.model, self.config, self.device = model, config, device
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
        encoder_params = list(model.point_encoder.parameters())
        if config.train_logit_scale:
            encoder_params.append(model.clip.logit_scale)
        self.prompt_params = [model.visual.prompts]
        self.optimizers = {
            "encoder": torch.optim.AdamW(
                encoder_params, lr=config.encoder_lr, weight_decay=config.encoder_weight_decay
            ),
            "prompts": torch.optim.SGD(
                self.prompt_params, lr=config.prompt_lr, momentum=config.prompt_momentum
            ),
        }
        total = config.epochs * updates_per_epoch
        warmup = max(1, round(config.warmup_epochs * updates_per_epoch))
        factor = cosine_with_warmup(total, warmup)
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            for name, optimizer in self.optimizers.items()
        }
        self.texts = TextEncoder(model, cache=config.text_cache)

    def losses(self, batch: dict[str, Any], phase: str) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch for `phase` ("encoder", "prompts" or "joint") and its parts."""
        model, config = self.model, self.config
        texts = self.texts(batch["caption"])
        scale = model.logit_scale
        parts: dict[str, torch.Tensor] = {}
        with self.autocast():
            if phase in ("encoder", "joint"):
                points = F.normalize(self.encoder(batch["points"].to(self.device)).float(), dim=-1)
                with torch.no_grad() if phase == "encoder" else nullcontext():
                    images = model.encode_image(batch["image"].to(self.device))
                parts["point_text"] = (
                    contrastive_loss(points, texts, scale)[0] * config.point_text_weight
                )
                parts["point_image"] = (
                    contrastive_loss(points, images, scale)[0] * config.point_image_weight
                )
            if phase in ("prompts", "joint"):
                images = model.encode_image(batch["image"].to(self.device))
                parts["image_text"] = (
                    contrastive_loss(images, texts, scale)[0] * config.image_text_weight
                )
        loss = sum(parts.values())
        logged = {f"loss_{name}": value.item() for name, value in parts.items()}
        return loss, logged | {"loss": loss.item()}

    def update(self, batches: list[dict[str, Any]], step: int) -> dict[str, float]:
        """One optimiser update over `batches` (gradient accumulation); `step` picks the phase."""
        if self.config.schedule == "joint":
            phase, names = "joint", ["encoder", "prompts"]
        else:
            phase = "encoder" if step % 2 == 0 else "prompts"
            names = [phase]
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        logged: dict[str, float] = {}
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            sync = (
                nullcontext()
                if last or not hasattr(self.encoder, "no_sync")
                else self.encoder.no_sync()
            )
            with sync:
                loss, parts = self.losses(batch, phase)
                (loss / len(batches)).backward()
            for key, value in parts.items():
                logged[key] = logged.get(key, 0.0) + value / len(batches)
        average_gradients(self.prompt_params)
        for name in names:
            self.optimizers[name].step()
        with warnings.catch_warnings():
            # in the alternating schedule one optimiser rests every other update, by design
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            for scheduler in self.schedulers.values():
                scheduler.step()
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
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        self.texts.load_state(state["text_cache"])


def _groups(
    batches: Iterable[dict[str, Any]], size: int, count: int
) -> Iterator[list[dict[str, Any]]]:
    """`count` consecutive groups of `size` batches."""
    iterator = iter(batches)
    for _ in range(count):
        group = [next(iterator) for _ in range(size)]
        yield group


def prepare_model(
    config: TrainConfig, classes: list[str], out: Path, resume: bool = False
) -> tuple[CG3D, dict[str, Any] | None]:
    """The model to train and, with `resume` and a checkpoint in `out`, its training state.

    A corrupt `out/last.pt` or one trained with another model config is a UsageError naming it.
    """
    wanted_config = model_config(config, classes)
    seed_everything(config.seed)  # the same initial weights on every process
    path = Path(out) / "last.pt"
    if not resume or not path.exists():
        if resume:
            console.print(f"--resume: no checkpoint at {path} yet, starting from scratch")
        return build_model(wanted_config), None
    payload = read_checkpoint(path)
    if "training" not in payload:
        raise UsageError(f"--resume: {path} holds no training state")
    stored = payload["config"]
    wanted = dataclasses.asdict(wanted_config)
    changed = sorted(
        key for key in wanted if key != "require_pretrained" and stored.get(key) != wanted[key]
    )
    if changed:
        raise UsageError(f"--resume: {path} was trained with a different {changed[0]!r}")
    return model_from_checkpoint(payload, path), payload["training"]


def fit(
    config: TrainConfig,
    out: Path,
    model: CG3D,
    train_batches: Iterable[dict[str, Any]],
    test_batches: Iterable[dict[str, Any]],
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train `model` for `config.epochs`, evaluating and checkpointing every epoch.

    `train_batches` needs `num_batches` (or `len`) and may have `set_epoch(epoch)`;
    `training` is the state `prepare_model` read for a resumed run. Only rank 0 writes
    `out/last.pt`, `out/metrics.json` and the dvclive logs in `out/dvclive`. Returns the metrics.
    """
    from dvclive import Live

    out = Path(out)
    rank, size = world()
    device = pick_device(config.device)
    classes = list(model.config["classes"])
    model.to(device).train()
    if not model.config["clip_pretrained_loaded"]:
        console.print(
            f"[bold red]WARNING: training with a RANDOMLY INITIALISED CLIP ({config.clip_model}); "
            "the results mean nothing outside this run (metrics: clip_pretrained: false)[/]"
        )
    total_batches = getattr(train_batches, "num_batches", None) or len(train_batches)
    updates = num_updates(total_batches, config.grad_accum)
    trainer = Trainer(model, config, updates, device)
    prototypes = class_text_features(model, classes, config.eval_templates)
    first_epoch, step = 0, 0
    if training:
        trainer.load_state(training)
        set_rng_state(training["rng"])
        first_epoch, step = training["epoch"], training["step"]
    else:
        seed_everything(config.seed + rank)
    live = None
    if rank == 0:
        live = Live(
            str(out / "dvclive"), resume=training is not None, save_dvc_exp=False, dvcyaml=None
        )
    metrics: dict[str, Any] = {}
    for epoch in range(first_epoch, config.epochs):
        if hasattr(train_batches, "set_epoch"):
            train_batches.set_epoch(epoch)
        sums: dict[str, list[float]] = {}
        samples, started, without_color = 0, time.perf_counter(), 0
        for group in _groups(train_batches, config.grad_accum, updates):
            for key, value in trainer.update(group, step).items():
                sums.setdefault(key, []).append(value)
            samples += sum(len(batch["caption"]) for batch in group) * size
            without_color += sum(int((~b["has_color"]).sum()) for b in group if "has_color" in b)
            step += 1
        seconds = time.perf_counter() - started
        epoch_metrics = {f"train/{key}": sum(values) / len(values) for key, values in sums.items()}
        epoch_metrics |= {
            "train/samples_per_s": samples / seconds,
            "train/lr_encoder": trainer.schedulers["encoder"].get_last_lr()[0],
            "train/lr_prompts": trainer.schedulers["prompts"].get_last_lr()[0],
            # samples of this rank fed the constant NO_COLOR (no colour of their own)
            "train/samples_without_color": without_color,
        }
        if rank == 0:
            held_out = evaluate(model, test_batches, prototypes, trainer.autocast)
            epoch_metrics |= {
                f"test/{key}": value for key, value in held_out.items() if key != "samples"
            }
            for key, value in epoch_metrics.items():
                live.log_metric(key, value)
            live.next_step()
            metrics = {
                "epoch": epoch + 1,
                "step": step,
                "clip_model": config.clip_model,
                "clip_pretrained": bool(model.config["clip_pretrained_loaded"]),
                "clip_weights": config.clip_pretrained,
                "encoder": config.encoder,
                "schedule": config.schedule,
                "world_size": size,
                "held_out_samples": held_out["samples"],
                "skipped_samples": getattr(train_batches, "skipped", 0),
                "chance_point_text": 1 / len(classes),
                **{key.replace("/", "_"): value for key, value in epoch_metrics.items()},
            }
            training_state = trainer.state() | {
                "rng": rng_state(),
                "epoch": epoch + 1,
                "step": step,
            }
            save_checkpoint(out / "last.pt", model, training_state)
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            console.print(
                f"epoch {epoch + 1}/{config.epochs}: "
                + ", ".join(f"{key} {value:.4g}" for key, value in epoch_metrics.items())
            )
        if size > 1:
            dist.barrier()
    if live is not None:
        live.end()
    return metrics


def init_distributed() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def train_stage(
    shards: Path, out: Path, config: TrainConfig, resume: bool = False
) -> dict[str, Any]:
    """The `train` stage: shards in `shards/{train,test}` → `out/last.pt`, `out/metrics.json`."""
    from cg3d.formats.shards import check_shards, is_remote, read_index
    from cg3d.train.data import ClipPreprocess, LoaderConfig, check_point_channels, make_loader

    config.validate()
    if not is_remote(shards) and not Path(shards).is_dir():  # URLs and `pipe:` stream
        raise UsageError(f"--shards: no such folder {shards}")
    init_distributed()
    rank, size = world()
    classes = list(read_index(shards)["classes"])
    for split in ("train", "test"):
        check_shards(shards, split)
    check_point_channels(shards, config.point_channels)
    model, training = prepare_model(config, classes, out, resume)
    loader_config = LoaderConfig(
        n_points=config.n_points,
        batch_size=config.batch_size,
        workers=config.workers,
        shuffle_buffer=config.shuffle_buffer,
        point_channels=config.point_channels,
        seed=config.seed,
        augment=config.augment,
    )
    preprocess = ClipPreprocess.of_model(model.clip.visual)
    train_batches = make_loader(shards, "train", loader_config, preprocess, True, rank, size)
    test_batches = make_loader(shards, "test", loader_config, preprocess, False)
    return fit(config, out, model, train_batches, test_batches, training)
