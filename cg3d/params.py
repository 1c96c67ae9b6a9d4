"""The one params schema: each section of params.yaml is a dataclass here, checked in one place.

A param is a field with a default and a help text (`param(...)`); its type, bounds and choices
are checked by `check` before any work, so a wrong value is one line naming `section.key`. The
CLI builds every stage command's options from these fields (`cg3d.options`), DVC passes the
params file (`--params params.yaml`), and `--set section.key=value` overrides any value.
Adding a param is a field here and its use in the stage.

This module stays light (no numpy, torch or bpy) so that `cg3d --help` is instant.
"""

import contextlib
import dataclasses
import math
import os
import re
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from cg3d.errors import UsageError
from cg3d.files import shown_name

T = TypeVar("T")
# How much of a bad value an error quotes (`shown_name`): a params file of a 900 KB string gave
# a 900 KB error "line".
SHOWN_LIMIT = 200

EXECUTORS = ("local", "ray")
SOURCES = ("synthetic", "modelnet", "shapenet", "objaverse", "folder")
ENGINES = {"workbench": "BLENDER_WORKBENCH", "cycles": "CYCLES"}
CYCLES_DEVICES = ("cpu", "cuda", "optix")
TEMPLATE_SETS = ("cg3d", "ulip64")
FPS_METHODS = ("bucket", "exact")
CLIP_OVERRIDE_HELP = (
    "CLIP weights instead of those the checkpoint names: an open_clip tag or a file "
    "(checked against the checkpoint's record)."
)
MAX_RESOLUTION = 4096  # Blender allocates several float buffers of this squared: bound it
MAX_VIEWS = 1000  # render.views; also the most views a cameras.json may list
# Every number of train.encoder_params (width, depth, groups, ...): the registered sizes use at
# most 512; a checkpoint naming width 10^7 would allocate tens of GB before anything reads it.
MAX_ENCODER_PARAM = 4096
# Every worker param: far above any machine's CPUs (they are bounded by those at use too,
# `bound_workers`), far below what exhausts a process's file descriptors.
MAX_WORKERS = 512
# Samples in one shard, for `pack.shard_size` and every count an index.json gives: a count
# read from a file drives loops and lost-sample arithmetic, so it is bounded (10^12 hung
# `cg3d inspect` and the loaders). A sample is 10s of KB: 10^6 is a 10+ GB shard.
MAX_SHARD_SAMPLES = 1_000_000
# Labels one classification may ask for (`cg3d.app.api`): the template ensemble encodes 64
# captions each (1,000 labels took 40 s on a CPU); LVIS, the largest benchmark, has 1,156.
MAX_LABELS = 2048
# Every integer param without a bound of its own: past int64, islice (`eval.zeroshot.limit`),
# numpy and torch raise OverflowError or ValueError tracebacks.
INT64_MAX = 2**63 - 1
# eval.zeroshot.max_lost and eval.retrieval.max_lost (`eval.results.check_lost`)
MAX_LOST_HELP = (
    "Largest share of the split's samples that may be lost (undecodable, in an unreadable "
    "shard, outside --root) for the run to succeed; past it the metrics are written and the "
    "command fails. 1: any."
)
# Every seed: numpy's legacy and torch's generators take 0..2^32-1 (numpy raises on -1).
SEED_MAX = 2**32 - 1
# Learning rates, weight decays and loss weights: far above any real run's, far below float32's
# 3.4e38 (a larger one overflows inside the optimiser's step: a RuntimeError traceback).
MAX_RATE = 1e3
# Samples one loader worker holds to shuffle (`train.shuffle_buffer`): the configs use 600-2000.
# A held sample is its raw members (points, views: 100s of KB), so 10^5 is already 10s of GB
# per worker; a larger value held the whole split in each worker's memory.
MAX_SHUFFLE_BUFFER = 100_000


def param(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    option: bool = True,
) -> Any:
    """A field of a params section: its default, help text and allowed values.

    `low`/`high` bound numbers (inclusive), `choices` lists a string's values; `option=False`
    keeps the field out of the command line (still settable with --set).
    """
    metadata = {"help": help, "low": low, "high": high, "choices": choices, "option": option}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    if isinstance(default, type) and dataclasses.is_dataclass(default):  # a nested section
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


class Section:
    """A params section: checked when made, and by `validate()` after a change."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check(self, self.section)


@dataclass
class MeshesConfig(Section):
    """`meshes:`, the meshes stage: list a source, validate every mesh, write the manifest."""

    section: ClassVar[str] = "meshes"

    source: str = param("synthetic", "Where meshes come from.", choices=SOURCES)
    root: str = param("", "The source's folder (unused by synthetic).")
    per_class: int = param(
        0, "synthetic: objects per class (0: 60); others: at most this many (0: all).", low=0
    )
    seed: int = param(0, "Seed of the synthetic shapes and of seeded splits.", low=0, high=SEED_MAX)
    test_fraction: float = param(
        0.2, "Share of each class in test, for seeded splits.", low=0.0, high=0.999999
    )
    split_file: str = param("", "shapenet: all.csv, or a folder with train.txt and test.txt.")
    annotations: str = param("", "objaverse: JSON of category → uid list (LVIS) or uid → category.")
    chunk_size: int = param(1000, "Objects per validation chunk.", low=1)
    workers: int = param(0, "Parallel chunks; 0: one per CPU.", low=0, high=MAX_WORKERS)
    executor: str = param("local", "local (process pool) or ray.", choices=EXECUTORS)
    exclude: str = param(
        "",
        "A file of objects to leave out before any work: object ids, uids (file stems, ShapeNet "
        "model folders) or paths, one a line, or a JSON list or {category: [uids]} (LVIS).",
    )
    up_axis: str = param(
        "auto",
        "The files' up axis (y, z, -y, -z, x, -x); auto: the source's, else the format's (glTF +Y).",
        choices=("auto", "y", "z", "-y", "-z", "x", "-x"),
    )


@dataclass
class SampleConfig(Section):
    """`sample:`, area-weighted surface samples then farthest point sampling, per object."""

    section: ClassVar[str] = "sample"

    points: int = param(8192, "Points per object (farthest point sampling).", low=1)
    chunk_size: int = param(1000, "Objects per part file.", low=1)
    normals: bool = param(False, "Also store face normals (after xyz, and rgb with colors).")
    fps: str = param(
        "bucket",
        "Farthest point sampling: bucket (fpsample's QuickFPS, fast) or exact (the Point-BERT "
        "loop's picks).",
        choices=FPS_METHODS,
    )
    colors: bool = param(
        False,
        "Also store the colour at each point (xyz, rgb in [0, 1]: texture, vertex, material).",
    )
    seed: int = param(0, "Seed of the per-object random generators.", low=0, high=SEED_MAX)
    workers: int = param(0, "Parallel chunks; 0: one per CPU.", low=0, high=MAX_WORKERS)
    executor: str = param("local", "local (process pool) or ray.", choices=EXECUTORS)
    timeout: float = param(
        120.0,
        "Seconds per object read by Blender before its worker is killed (time stopped, as by "
        "Ctrl-Z or a suspended job, does not count).",
        low=1e-3,
    )

    def validate(self) -> None:
        super().validate()
        channels = 3 + 3 * self.normals + 3 * self.colors
        if self.chunk_size * self.points * channels >= 2**31:  # Arrow list offsets are int32
            raise UsageError(
                f"sample.chunk_size × sample.points × {channels} must stay below 2^31 floats "
                "per part file"
            )


@dataclass
class RenderConfig(Section):
    """`render:`, orbit views of every object in headless Blender."""

    section: ClassVar[str] = "render"

    views: int = param(4, "Views per object.", low=1, high=MAX_VIEWS)
    resolution: int = param(224, "Square image size in pixels.", low=8, high=MAX_RESOLUTION)
    engine: str = param(
        "workbench", "workbench (fast) or cycles (path tracing).", choices=tuple(ENGINES)
    )
    samples: int = param(16, "Cycles samples per pixel.", low=1, high=65536)
    cycles_device: str = param(
        "cpu",
        "Where Cycles renders: cpu, or the GPU through a CUDA or OptiX device (the stage "
        "fails at start when this machine has none); workbench ignores it.",
        choices=CYCLES_DEVICES,
    )
    chunk_size: int = param(200, "Objects per part file.", low=1)
    seed: int = param(0, "Seed of the per-object cameras.", low=0, high=SEED_MAX)
    workers: int = param(2, "Blender processes; 0: one per CPU.", low=0, high=MAX_WORKERS)
    executor: str = param("local", "local (threads) or ray (actors).", choices=EXECUTORS)
    timeout: float = param(
        120.0,
        "Seconds per object before its Blender is killed (time stopped, as by Ctrl-Z or a "
        "suspended job, does not count).",
        low=1e-3,
    )
    worker_memory: float = param(
        0.0,
        "GiB each Blender process may allocate (an object needing more is a failure row, and "
        "the next object gets a fresh Blender); 0: 3/4 of this machine's memory, shared by "
        "the workers.",
        low=0.0,
        high=1 << 20,
    )
    background: str = param(
        "white", "white (RGB) or transparent (RGBA).", choices=("white", "transparent")
    )
    elevation_min: float = param(0.0, "Lowest camera elevation, degrees.", low=-90.0, high=90.0)
    elevation_max: float = param(30.0, "Highest camera elevation, degrees.", low=-90.0, high=90.0)
    azimuth_jitter: float = param(
        0.5, "Random azimuth shift, as a fraction of the even spacing (0–1).", low=0.0, high=1.0
    )
    fov_deg: float = param(40.0, "Camera field of view, degrees.", low=1.0, high=179.0)

    def validate(self) -> None:
        super().validate()
        if self.elevation_min > self.elevation_max:
            raise UsageError(
                f"render.elevation_min ({self.elevation_min}) must be ≤ render.elevation_max "
                f"({self.elevation_max})"
            )

    def worker_settings(self) -> dict:
        """What a Blender process needs to set up its scene."""
        return {
            "engine": self.engine,
            "samples": self.samples,
            "cycles_device": self.cycles_device,
            "resolution": self.resolution,
            "fov_deg": self.fov_deg,
        }


@dataclass
class CaptionConfig(Section):
    """`caption:`, captions per object from the class name (and, optionally, its synonyms)."""

    section: ClassVar[str] = "caption"

    templates: str = param(
        "cg3d", "cg3d (63 training templates) or ulip64 (64 zero-shot).", choices=TEMPLATE_SETS
    )
    seed: int = param(0, "Seed of the per-object caption order.", low=0, high=SEED_MAX)
    synonyms: bool = param(
        False,
        "Also caption with the taxonomy's synonyms (ShapeNet's: a phone's include 'cell',"
        " 'mobile'); off: the class name only, as the paper.",
    )


@dataclass
class PackConfig(Section):
    """`pack:`, WebDataset shards of points, views and captions."""

    section: ClassVar[str] = "pack"

    shard_size: int = param(1000, "Samples per shard.", low=1, high=MAX_SHARD_SAMPLES)
    workers: int = param(0, "Shards written in parallel; 0: one per CPU.", low=0, high=MAX_WORKERS)


@dataclass
class AugmentConfig(Section):
    """`train.augment:`, the point augmentation policy: each op switched on or off, applied to a
    sample with its probability (`_prob`), with its range. The order is fixed (the public
    code's): on the drawn points before farthest point sampling, a 90° turn about up, a uniform
    turn about up, a perturbation rotation, jitter, a share moved to the origin, input dropout;
    after it, per-axis scale then translation. `cg3d.train.augment.POLICIES` names the
    policies: `cg3d` (these defaults) and `cg3d-public` (configs/cg3d-public.yaml)."""

    section: ClassVar[str] = "train.augment"

    rotate_90: bool = param(False, "A turn about the up axis (+Y) by 0, 90, 180 or 270°.")
    rotate_90_prob: float = param(1.0, "Probability of the 90° turn.", low=0.0, high=1.0)
    rotate_up: bool = param(True, "A uniform rotation about the up axis (+Y).")
    rotate_up_prob: float = param(1.0, "Probability of the rotation about up.", low=0.0, high=1.0)
    perturb: bool = param(True, "A small rotation about every axis.")
    perturb_prob: float = param(1.0, "Probability of the perturbation.", low=0.0, high=1.0)
    perturb_sigma: float = param(0.06, "Radians.", low=0.0)
    perturb_clip: float = param(0.18, "Radians.", low=0.0)
    jitter: bool = param(True, "Gaussian noise on positions.")
    jitter_prob: float = param(1.0, "Probability of the jitter.", low=0.0, high=1.0)
    jitter_sigma: float = param(0.01, "Noise sigma.", low=0.0)
    jitter_clip: float = param(0.05, "Noise clip.", low=0.0)
    drop_to_origin: bool = param(
        False, "Move drop_to_origin_share × N points, drawn with replacement, to the origin."
    )
    drop_to_origin_prob: float = param(1.0, "Probability of the move.", low=0.0, high=1.0)
    drop_to_origin_share: float = param(
        0.1, "Draws as a share of the points (0.1: about 9.5 % distinct).", low=0.0, high=1.0
    )
    dropout: bool = param(
        False,
        "PointNet++ input dropout: up to dropout_max of the points replaced by the first "
        "(not in the public CG3D code).",
    )
    dropout_prob: float = param(1.0, "Probability of the dropout.", low=0.0, high=1.0)
    dropout_max: float = param(0.875, "Largest share dropped.", low=0.0, high=1.0)
    scale: bool = param(True, "Per-axis scale U(scale_low, scale_high), after FPS.")
    scale_prob: float = param(1.0, "Probability of the scale.", low=0.0, high=1.0)
    scale_low: float = param(2.0 / 3.0, "Lowest scale.", low=0.0)
    scale_high: float = param(3.0 / 2.0, "Highest scale.", low=0.0)
    translate: bool = param(True, "Per-axis shift U(-translate_range, translate_range), after FPS.")
    translate_prob: float = param(1.0, "Probability of the shift.", low=0.0, high=1.0)
    translate_range: float = param(0.2, "Largest shift.", low=0.0)
    color_jitter: bool = param(
        False, "Jitter the rgb of coloured points (brightness and contrast), clipped to [0, 1]."
    )
    color_brightness: float = param(0.1, "Largest brightness shift of rgb.", low=0.0, high=1.0)
    color_contrast: float = param(0.2, "Contrast factor U(1 - this, 1 + this).", low=0.0, high=1.0)


@dataclass
class TrainConfig(Section):
    """`train:`, the point encoder and visual prompts against CLIP. Optimiser defaults are the
    paper's (docs/design.md)."""

    section: ClassVar[str] = "train"

    epochs: int = param(100, "Epochs.", low=1)
    batch_size: int = param(64, "Batch size per process.", low=1)
    grad_accum: int = param(1, "Batches per optimiser update.", low=1)
    # model
    encoder: str = param(
        "pointtransformer-base",
        "Point encoder: a named size of cg3d.models.encoders (pointtransformer-base: the paper's "
        "Point-BERT; pointbert-tiny; pointtransformer-tiny; pointnet2-ssg).",
    )
    encoder_params: dict[str, Any] = param(
        {}, "Overrides of the named size's parameters.", option=False
    )
    clip_model: str = param("ViT-B-16", "open_clip model name (e.g. ViT-B-16) or SLIP-ViT-B-16.")
    clip_pretrained: str = param(
        "openai",
        "open_clip tag (e.g. openai), a weights file (SLIP's: slip_base_100ep.pt), or none.",
    )
    require_pretrained: bool = param(False, "Fail instead of training with a random-init CLIP.")
    prompts: int = param(5, "Learnable visual prompt tokens.", low=0, high=1024)
    deep_prompts: bool = param(True, "Replace the prompts before every transformer block.")
    train_logit_scale: bool = param(False, "Learn CLIP's temperature (frozen in the paper).")
    n_points: int = param(8192, "Points per sample fed to the encoder.", low=1, high=1 << 20)
    point_channels: int = param(
        3,
        "Encoder input: 3 (xyz) or 6 (xyz, rgb: shards sampled with sample.colors).",
        low=3,
        high=6,
    )
    # optimisation
    schedule: str = param(
        "alternating", "alternating (the paper's) or joint.", choices=("alternating", "joint")
    )
    point_text_weight: float = param(1.0, "Weight of the point–text loss.", low=0.0, high=MAX_RATE)
    point_image_weight: float = param(
        1.0, "Weight of the point–image loss.", low=0.0, high=MAX_RATE
    )
    image_text_weight: float = param(1.0, "Weight of the image–text loss.", low=0.0, high=MAX_RATE)
    encoder_lr: float = param(
        5e-5, "AdamW learning rate of the point encoder.", low=0.0, high=MAX_RATE
    )
    encoder_weight_decay: float = param(
        0.05,
        "AdamW weight decay of the encoder's weight matrices (not biases, norms, tokens).",
        low=0.0,
        high=MAX_RATE,
    )
    prompt_lr: float = param(2e-3, "SGD learning rate of the prompts.", low=0.0, high=MAX_RATE)
    prompt_momentum: float = param(0.9, "SGD momentum of the prompts.", low=0.0, high=1.0)
    prompt_weight_decay: float = param(
        1e-4, "SGD weight decay of the prompts.", low=0.0, high=MAX_RATE
    )
    grad_clip: float = param(
        10.0, "Clip each update's gradient norm (per optimiser) to this; 0: no clipping.", low=0.0
    )
    warmup_epochs: float = param(1.0, "Linear warmup, in epochs.", low=0.0)
    # How the public CG3D runner trains, where it differs from ours (configs/cg3d-public.yaml
    # sets the public values; README "Reproduce the public code")
    encoder_lr_schedule: str = param(
        "cosine",
        "cosine: per update, after the warmup, down to encoder_lr_min; epoch-cosine: timm's "
        "CosineLRScheduler stepped once after each epoch, so epoch e trains at the value of e - 1 "
        "(the public runner's, without warmup).",
        choices=("cosine", "epoch-cosine"),
    )
    encoder_lr_min: float = param(
        0.0,
        "Where the encoder's cosine ends (the public timm schedule: 1e-6).",
        low=0.0,
        high=MAX_RATE,
    )
    cosine_epochs: int = param(
        0,
        "Epochs the cosines span (0: train.epochs); later epochs stay at the end value (the "
        "public config: 100, with 101 epochs trained).",
        low=0,
    )
    prompt_lr_schedule: str = param(
        "cosine",
        "cosine: the encoder's per-update cosine to 0; constant: prompt_lr throughout (the "
        "public config's duplicated scheduler: key leaves its prompt scheduler None).",
        choices=("cosine", "constant"),
    )
    phase_parity: str = param(
        "run",
        "alternating: the phase of an update by its index in the run, or in its epoch (epoch: "
        "the public runner's idx % 2, restarted each epoch).",
        choices=("run", "epoch"),
    )
    prompt_steps_run_encoder: bool = param(
        False,
        "On prompt updates also run the point encoder forward without grad, so that BatchNorm's "
        "running statistics see every batch (the public runner computes every loss each step).",
    )
    decay_cls_pos: bool = param(
        False, "Weight-decay the encoder's cls_pos (the public add_weight_decay does)."
    )
    prompt_init: str = param(
        "vpt",
        "Prompt init U(-b, b): vpt, b = √(6 / (3·patch_area + width)); cg3d-public, "
        "b = √(6 / (3·16 + width)) (the public code's patch side for its area).",
        choices=("vpt", "cg3d-public"),
    )
    gather_negatives: bool = param(
        True,
        "Under DDP, contrast each row against every process's batch (the global batch); false: "
        "against its own process's batch only (the public runner: 64 negatives, not 512 on 8 GPUs).",
    )
    text_cache: bool = param(True, "Cache caption features (the text tower is frozen).")
    log_every: int = param(
        50,
        "Read the running losses back from the device every this many updates (progress "
        "bar); each read waits for the GPU.",
        low=1,
    )
    compile: bool = param(
        False, "torch.compile the point encoder and the prompted image tower (for GPUs)."
    )
    text_targets: str = param(
        "captions",
        "What points and images train towards: captions (the paper's), or class_prototypes "
        "(each caption's class, template-averaged: for a random-init text tower).",
        choices=("captions", "class_prototypes"),
    )
    # data
    workers: int = param(2, "Loader worker processes.", low=0, high=MAX_WORKERS)
    shuffle_buffer: int = param(
        1000,
        "Samples in each worker's shuffle buffer (each held in memory, 100s of KB: at most "
        f"{MAX_SHUFFLE_BUFFER:,}; the configs use 600-2000).",
        low=1,
        high=MAX_SHUFFLE_BUFFER,
    )
    read_timeout: float = param(
        60.0,
        "Seconds a remote shard (URL, pipe:) may send nothing before it counts as unreadable "
        "(time stopped, as by Ctrl-Z or a suspended job, does not count).",
        low=0.1,
    )
    replacement_draws: int = param(
        0,
        "0: the stored points, each once, n_points of them by FPS from a seeded start; N: first "
        "draw N with replacement (the public dataset: 8192, ~37 % duplicates), augment, then FPS "
        "as pointnet2_ops' kernel (from the first draw, never a point within √1e-3 of the origin).",
        low=0,
        high=1 << 20,
    )
    point_normalisation: str = param(
        "stored",
        "stored: the points as the shards hold them (bounding-box centre, unit sphere); "
        "centroid: first re-centred on their centroid and scaled to the unit sphere, as the public "
        "dataset's pc_norm does to every file before it draws.",
        choices=("stored", "centroid"),
    )
    view_choice: str = param(
        "random",
        "random: a random view of each object every epoch; fixed: one view per object, picked "
        "once by the seed (the public dataset picks it when built).",
        choices=("random", "fixed"),
    )
    view_background: str = param(
        "white",
        "Transparent views: white (composited on white) or drop_alpha (the colour stored under "
        "alpha, black in Blender's renders: the public loader's convert('RGB')).",
        choices=("white", "drop_alpha"),
    )
    augment: AugmentConfig = param(AugmentConfig, "Point augmentations.", option=False)
    eval_templates: str = param(
        "cg3d", "Templates of the held-out accuracy's class prototypes.", choices=TEMPLATE_SETS
    )
    seed: int = param(
        0, "Seed of initial weights, shuffling and augmentations.", low=0, high=SEED_MAX
    )
    device: str = param("auto", "auto (cuda if available), cpu, cuda or cuda:N.")

    def validate(self) -> None:
        super().validate()
        check_device(self.device, "train.device", ("auto", "cpu", "cuda"))
        for name, value in self.encoder_params.items():
            numbers = value if isinstance(value, list) else [value]
            if any(isinstance(n, int | float) and not 0 <= n <= MAX_ENCODER_PARAM for n in numbers):
                raise UsageError(
                    f"train.encoder_params.{name} must be between 0 and {MAX_ENCODER_PARAM}, "
                    f"got {value!r:.40}"
                )


def batch_problem(config: TrainConfig, train_samples: int, where: str, processes: int = 1) -> str:
    """'' when `train_samples` fill at least one update of `config` on each of `processes`;
    else the one line that says so and how to fix it (issue 26: 16 samples against
    batch_size 32 used to fail at train with "only 0 batches per epoch")."""
    per_update = config.batch_size * config.grad_accum * processes
    if train_samples >= per_update:
        return ""
    fit = max(train_samples // (config.grad_accum * processes), 1)
    return (
        f"{where} holds {train_samples} training samples, fewer than one update of "
        f"train.batch_size {config.batch_size} × train.grad_accum {config.grad_accum}"
        + (f" × {processes} processes" if processes > 1 else "")
        + f": set train.batch_size to {fit} or less (--set train.batch_size={fit}), "
        "or add training data"
    )


@dataclass
class ZeroShotConfig(Section):
    """`eval.zeroshot:`, zero-shot classification of a benchmark or our shards."""

    section: ClassVar[str] = "eval.zeroshot"

    dataset: str = param("shards", "A benchmark reader name (see `cg3d eval zeroshot --help`).")
    root: str = param("data/shards", "The shards folder, or the benchmark's files.")
    split: str = param("test", "Split to evaluate.")
    variant: str = param("", "scanobjectnn: obj_only | obj_bg | pb_t50_rs.")
    batch_size: int = param(32, "Shapes per forward pass.", low=1)
    protocol: str = param(
        "cg3d",
        "Zero-shot protocol (cg3d.eval.protocols): prompts, class names, text and point "
        "normalisation, FPS; cg3d-public: the public CG3D eval.py.",
    )
    allow_pickle: bool = param(
        False, "Allow reading ULIP's .dat pickle: unpickling a tampered file runs arbitrary code."
    )
    limit: int = param(0, "First N shapes only (0: all).", low=0)
    workers: int = param(
        1, "Processes preparing shapes (unit sphere + FPS).", low=1, high=MAX_WORKERS
    )
    clip_pretrained: str = param("", CLIP_OVERRIDE_HELP)
    audit: str = param(
        "", "The `cg3d audit` output folder for this test set; its counts go into the metrics."
    )
    text_cache: str = param(
        ".cache/cg3d/text",
        "Folder caching class text features by CLIP weights, classes and templates; '': none.",
    )
    max_lost: float = param(0.5, MAX_LOST_HELP, low=0.0, high=1.0)


@dataclass
class RetrievalConfig(Section):
    """`eval.retrieval:`, point↔text and point↔image retrieval on our shards."""

    section: ClassVar[str] = "eval.retrieval"

    split: str = param("test", "Split to evaluate.")
    batch_size: int = param(32, "Objects per forward pass.", low=1)
    grid_queries: int = param(3, "Queries per direction in the picture grid.", low=0)
    limit: int = param(0, "First N objects only (0: all).", low=0)
    clip_pretrained: str = param("", CLIP_OVERRIDE_HELP)
    max_lost: float = param(0.5, MAX_LOST_HELP, low=0.0, high=1.0)


@dataclass
class EvalConfig(Section):
    """`eval:`, evaluation of a trained checkpoint."""

    section: ClassVar[str] = "eval"

    zeroshot: ZeroShotConfig = param(ZeroShotConfig, "Zero-shot.", option=False)
    retrieval: RetrievalConfig = param(RetrievalConfig, "Retrieval.", option=False)


@dataclass
class FinetuneConfig(Section):
    """`finetune:`, classification from the pretrained encoder."""

    section: ClassVar[str] = "finetune"

    dataset: str = param("shards", "A benchmark reader name (see `cg3d eval zeroshot --help`).")
    root: str = param("data/shards", "The shards folder, or the benchmark's files.")
    variant: str = param("", "scanobjectnn: obj_only | obj_bg | pb_t50_rs.")
    train_split: str = param("train", "Split to train on.")
    test_split: str = param("test", "Split to test on.")
    mode: str = param(
        "full",
        "full, or linear (a logistic-regression probe on frozen features, fitted by L-BFGS).",
        choices=("full", "linear"),
    )
    shots: int = param(0, "Few-shot: K training shapes per class (0: all).", low=0)
    epochs: int = param(10, "full: epochs.", low=1)
    lr: float = param(1e-4, "full: AdamW learning rate.", low=1e-12, high=MAX_RATE)
    weight_decay: float = param(0.05, "full: AdamW weight decay.", low=0.0, high=MAX_RATE)
    batch_size: int = param(
        32, "Batch size (full: of training; linear: of feature extraction).", low=1
    )
    probe_l2: float = param(
        1e-4,
        "linear: L2 penalty λ of the probe; L-BFGS minimises mean cross-entropy + λ/2·‖W‖².",
        low=0.0,
        high=1e6,  # the top of CLIP's sweep; 1e300 made the objective NaN
    )
    probe_iterations: int = param(
        1000, "linear: L-BFGS iterations at most (CLIP's paper: 1000).", low=1
    )
    seed: int = param(0, "Seed of the few-shot draw and of training.", low=0, high=SEED_MAX)
    allow_pickle: bool = param(False, "Allow reading ULIP's .dat pickle (trusted files only).")
    clip_pretrained: str = param("", CLIP_OVERRIDE_HELP)

    def validate(self) -> None:
        super().validate()
        if self.train_split == self.test_split:  # a score of the shapes it was fitted to
            raise UsageError(
                f"finetune.test_split: {self.test_split!r} is finetune.train_split too; "
                "test on shapes it does not train on"
            )


@dataclass
class SceneConfig(Section):
    """`scene:`, a text query's heat map over a scene point cloud."""

    section: ClassVar[str] = "scene"

    regions: int = param(64, "Number of regions (FPS centres).", low=1)
    region_points: int = param(4096, "Scene points per region (kNN of the centre).", low=1)
    max_points: int = param(200_000, "Larger scenes are subsampled to this many first.", low=1)
    batch_size: int = param(16, "Regions per forward pass.", low=1)
    up_axis: str = param("y", "The scene's up axis.", choices=("y", "z"))
    top: int = param(5, "Best regions printed.", low=1)
    seed: int = param(0, "Seed of the subsampling.", low=0, high=SEED_MAX)
    clip_pretrained: str = param("", CLIP_OVERRIDE_HELP)


@dataclass
class IndexConfig(Section):
    """`index:`, a retrieval index: every object of a shard set embedded once (`cg3d index`)."""

    section: ClassVar[str] = "index"

    splits: str = param("", "Comma-separated splits to index (empty: every split of the shards).")
    batch_size: int = param(32, "Objects per forward pass.", low=1)
    thumbnail: int = param(
        128, "Size in pixels of the first view kept per object for galleries (0: none).", low=0
    )
    device: str = param("cpu", "cpu, cuda or cuda:N.")
    clip_pretrained: str = param("", CLIP_OVERRIDE_HELP)

    def validate(self) -> None:
        super().validate()
        check_device(self.device, "index.device")


@dataclass
class DemoConfig(Section):
    """`demo:`, the local web demo (`cg3d demo`), served on 127.0.0.1 only."""

    section: ClassVar[str] = "demo"

    port: int = param(7860, "Port on 127.0.0.1 (0: any free port).", low=0, high=65535)
    max_upload_mb: float = param(
        50.0, "Uploads larger than this many MiB are refused.", low=0.001, high=4096.0
    )
    top: int = param(5, "Labels shown per upload.", low=1, high=100)
    max_labels: int = param(
        64,
        "Labels a visitor may type per request (each is 64 text encodings; requests are served "
        "one at a time). The checkpoint's own classes are always allowed.",
        low=1,
        high=MAX_LABELS,
    )
    gallery: int = param(8, "Index objects shown per query.", low=1, high=100)
    views: int = param(4, "Views rendered of an uploaded mesh (0: none).", low=0, high=24)
    resolution: int = param(224, "Size in pixels of the rendered views.", low=16, high=1024)
    up_axis: str = param(
        "y", "The up axis of uploaded files.", choices=("y", "z", "-y", "-z", "x", "-x")
    )
    device: str = param("cpu", "cpu, cuda or cuda:N.")
    clip_pretrained: str = param("", CLIP_OVERRIDE_HELP)

    def validate(self) -> None:
        super().validate()
        check_device(self.device, "demo.device")


def check_device(value: str, name: str, names: tuple[str, ...] = ("cpu", "cuda")) -> None:
    """A torch device the section allows: one of `names` or cuda:N; else one line naming the
    parameter, before a model loads (torch's own error came after it, as a traceback)."""
    if value not in names and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise UsageError(f"{name} must be {', '.join(names)} or cuda:N, got {value!r}")


@dataclass
class Params(Section):
    """The whole of params.yaml."""

    section: ClassVar[str] = ""

    meshes: MeshesConfig = param(MeshesConfig, "", option=False)
    sample: SampleConfig = param(SampleConfig, "", option=False)
    render: RenderConfig = param(RenderConfig, "", option=False)
    caption: CaptionConfig = param(CaptionConfig, "", option=False)
    pack: PackConfig = param(PackConfig, "", option=False)
    train: TrainConfig = param(TrainConfig, "", option=False)
    eval: EvalConfig = param(EvalConfig, "", option=False)
    finetune: FinetuneConfig = param(FinetuneConfig, "", option=False)
    scene: SceneConfig = param(SceneConfig, "", option=False)
    index: IndexConfig = param(IndexConfig, "", option=False)
    demo: DemoConfig = param(DemoConfig, "", option=False)


def cpu_count(root: Path = Path("/")) -> int:
    """The CPUs this process may use: those it may run on (its affinity: taskset, a cpuset,
    Slurm's binding), at most its cgroup's CPU quota rounded up (`docker --cpus=4`, Slurm's
    `--cpus-per-task` under a cgroup: 4 CPUs' time on a 64-core host, which affinity alone
    counts as 64). Every worker count and thread count of cg3d comes from here. `root`: the
    file system's root, a fake one for tests."""
    cpus = _affinity_count()
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def _affinity_count() -> int:
    """The CPUs this process may run on, a quota aside (what OpenMP and BLAS count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# The variables the math libraries read for their thread pools when they load: OpenMP (torch's
# CPU kernels, fpsample), MKL, OpenBLAS and BLIS (numpy), Apple's Accelerate, numexpr, Mesa's
# llvmpipe (Blender's workbench rasteriser).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "LP_NUM_THREADS",
)


def is_thread_count(name: str, value: str) -> bool:
    """Whether `value` of thread variable `name` is one its library reads: a positive integer
    (OpenMP's also a list of them, one a nesting level: `4,2`)."""
    parts = value.split(",") if name == "OMP_NUM_THREADS" else [value]
    return all(part.isascii() and part.isdigit() and int(part) > 0 for part in parts)


def drop_bad_thread_variables() -> list[str]:
    """Remove from this process's environment (and so its children's) the thread variables
    set to what no library reads as a count of threads; returns them as `NAME='value'` (an
    empty one is unset, and not returned). Left in place, OMP_NUM_THREADS=abc (or 0, -1) made
    libgomp print "Invalid value for environment variable" in every process that loads it, and
    MKL_NUM_THREADS=-1 (or abc) made torch compute on one thread whatever the CPUs."""
    dropped = []
    for name in THREAD_VARIABLES:
        value = os.environ.get(name)
        if value is not None and not is_thread_count(name, value):
            del os.environ[name]
            if value:
                dropped.append(f"{name}={value!r}")
    return dropped


def thread_variables(threads: int) -> dict[str, str]:
    """The environment that keeps the math libraries of a process started with it at most
    `threads` threads each (at least 1): the variables set here to a smaller number are kept.
    Empty when `threads` is not below the CPUs the libraries count themselves (their
    defaults, torch's physical cores among them, stay as they were: the same numbers)."""
    threads = max(1, threads)
    if threads >= _affinity_count():
        return {}
    kept = {}
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "")
        small = value.isascii() and value.isdigit() and 0 < int(value) <= threads
        kept[name] = value if small else str(threads)
    return kept


def limit_threads(threads: int) -> None:
    """At most `threads` threads for each math library of this process and of the processes it
    starts (`thread_variables`; torch and pyarrow, if already loaded, set directly). A
    `docker --cpus=4` container on 64 cores ran 64 torch threads; N pool workers each ran a
    thread per CPU (N x oversubscribed)."""
    threads = max(1, threads)
    os.environ.update(thread_variables(threads))
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() > threads:
        torch.set_num_threads(threads)
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None and pyarrow.cpu_count() > threads:
        pyarrow.set_cpu_count(threads)


@contextlib.contextmanager
def threads_limited(threads: int) -> Iterator[None]:
    """`limit_threads` for a block, then put back as it was: the variables, and the thread
    counts of a torch or pyarrow loaded before the block. `cg3d.cli.main` called in-process
    (a notebook, a script looping over configs) under a CPU quota left the caller's torch on
    the quota's threads and the variables set for every process it started after. A torch
    first loaded inside the block read the variables as it loaded, and keeps their count."""
    variables = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    torch, pyarrow = sys.modules.get("torch"), sys.modules.get("pyarrow")
    torch_threads = torch.get_num_threads() if torch is not None else None
    pyarrow_threads = pyarrow.cpu_count() if pyarrow is not None else None
    limit_threads(threads)
    try:
        yield
    finally:
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if torch_threads is not None and torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
        if pyarrow_threads is not None and pyarrow.cpu_count() != pyarrow_threads:
            pyarrow.set_cpu_count(pyarrow_threads)


# The most open files `open_files_raised` asks for: a hard limit of millions (a container's
# default) would let a leak run long before it is seen, and select()-based code breaks past 1024
# anyway; 65536 is far above what any stage's workers, shards and pipes take.
MAX_OPEN_FILES = 1 << 16


@contextlib.contextmanager
def open_files_raised() -> Iterator[None]:
    """The soft limit of open files (`ulimit -n`, RLIMIT_NOFILE) raised to the hard one (at most
    `MAX_OPEN_FILES`) for the block, as Go's runtime, the JVM and Ray do: a login node's soft
    1024 (PAM's limits.conf) or a lower one stopped a stage whose workers, Blender pipes and
    shards needed more ("Too many open files"), where the hard limit let the user raise it
    without asking. What the hard limit still refuses is one line (`errors.resource_limit_line`).
    Put back afterwards for a caller that runs `cg3d.cli.main` in-process."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    raised = soft != resource.RLIM_INFINITY and soft < wanted
    if raised:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError):  # a kernel's nr_open below it: keep the soft limit
            raised = False
    try:
        yield
    finally:
        if raised:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def memory_limit(root: Path = Path("/")) -> int:
    """Bytes of memory this process may use: the machine's, at most its cgroup's limit
    (`docker --memory=16g`, a Slurm job's cgroup): what the kernel's OOM killer enforces."""
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_memory_limit(root)
    return machine if limit is None else min(machine, limit)


CGROUP_MOUNT = "sys/fs/cgroup"


def _cgroup_folders(root: Path, controller: str) -> list[Path]:
    """The folders of this process's cgroup and of each cgroup above it, for `controller`
    ("cpu", "memory"), read from /proc/self/cgroup: cgroup v2's one hierarchy (`0::/path`)
    and v1's per-controller ones (`4:cpu,cpuacct:/path`). A limit of any of them applies.
    In a container the cgroup's path is often not under the container's mount (its own
    cgroup is mounted as the root): the folders that exist are returned, the mount's root
    last. Nothing (never an error) when the files are absent or odd."""
    try:
        lines = (root / "proc/self/cgroup").read_text(errors="replace").splitlines()
    except (OSError, ValueError):
        return []
    folders: list[Path] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3 or not fields[2].startswith("/"):
            continue
        names = fields[1].split(",")
        if fields[0] == "0" and fields[1] == "":
            mounts = [root / CGROUP_MOUNT, root / CGROUP_MOUNT / "unified"]
        elif controller in names:
            mounts = [root / CGROUP_MOUNT / fields[1], root / CGROUP_MOUNT / controller]
        else:
            continue
        parts = [part for part in fields[2].split("/") if part and part not in (".", "..")]
        for mount in mounts:
            for depth in range(len(parts), -1, -1):
                folder = mount.joinpath(*parts[:depth])
                if folder.is_dir() and folder not in folders:
                    folders.append(folder)
    return folders


def _read_numbers(path: Path) -> list[str]:
    """The words of a small cgroup file ([] when absent or unreadable)."""
    try:
        return path.read_text(errors="replace")[:200].split()
    except (OSError, ValueError):
        return []


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The CPUs' time this process's cgroups allow (the smallest quota / period: 4.0 for
    `docker --cpus=4`), None without a quota. cgroup v2 `cpu.max` ("400000 100000", "max
    100000") and v1 `cpu.cfs_quota_us` (-1: none) / `cpu.cfs_period_us`."""
    quotas = []
    for folder in _cgroup_folders(root, "cpu"):
        words = _read_numbers(folder / "cpu.max")
        if not words:
            words = _read_numbers(folder / "cpu.cfs_quota_us")[:1]
            words += _read_numbers(folder / "cpu.cfs_period_us")[:1]
        if len(words) >= 2 and _is_int(words[0]) and _is_int(words[1]):
            quota, period = int(words[0]), int(words[1])
            if quota > 0 and period > 0:
                quotas.append(quota / period)
    return min(quotas) if quotas else None


def cgroup_memory_limit(root: Path = Path("/")) -> int | None:
    """The bytes this process's cgroups allow (the smallest `memory.max`, v1
    `memory.limit_in_bytes`), None without a limit ("max", or v1's page-rounded 2^63)."""
    limits = []
    for folder in _cgroup_folders(root, "memory"):
        words = _read_numbers(folder / "memory.max") or _read_numbers(
            folder / "memory.limit_in_bytes"
        )
        if words and _is_int(words[0]) and 0 < int(words[0]) < 2**60:
            limits.append(int(words[0]))
    return min(limits) if limits else None


def _is_int(word: str) -> bool:
    return word.isascii() and word.lstrip("-").isdigit()


def bound_workers(requested: int, executor: str = "local", jobs: int | None = None) -> int:
    """The workers a stage runs for a worker param: `requested` (0: one per CPU), at most the
    CPUs this process may use, and at most `jobs` when known (a worker without a job only
    costs its start-up). The one rule of every worker param, at use (the schema bounds them by
    `MAX_WORKERS`): a million asked for is the machine's CPUs, never a million processes. A
    Ray cluster named by RAY_ADDRESS has its own CPUs, which this machine cannot count."""
    workers = requested or cpu_count()
    if not (executor == "ray" and os.environ.get("RAY_ADDRESS")):
        workers = min(workers, cpu_count())
    if jobs is not None:
        workers = min(workers, max(jobs, 1))
    return max(workers, 1)


# --- reading and checking ------------------------------------------------------------------


# A params file is a few hundred lines of a few levels: these bounds are far above any real one
# and keep a hostile file (a 10,000-deep nesting, megabytes of text) from costing anything.
MAX_PARAMS_BYTES = 1 << 20
MAX_YAML_DEPTH = 32


class _ParamsLoader(yaml.SafeLoader):
    """The one YAML reading of params (files and --set values): plain data only. Aliases are
    refused (a billion-laughs file expands exponentially through them, and no param needs
    one), nesting is bounded, and a key given twice in one mapping is an error naming both
    lines, not a silent last-wins."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            problem = f"YAML aliases (*{event.anchor}) are not allowed in params"
            raise yaml.composer.ComposerError(None, None, problem, event.start_mark)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            problem = f"nested deeper than {MAX_YAML_DEPTH} levels"
            raise yaml.composer.ComposerError(None, None, problem, self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201
        seen: dict = {}
        for key_node, _ in node.value:
            # `<<:` copies a mapping into this one: no param needs it, and it hid keys given twice
            if key_node.tag == "tag:yaml.org,2002:merge":
                problem = "YAML merge keys (<<) are not allowed in params"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen.setdefault(key, line)
            except TypeError:  # an unhashable key: PyYAML's own error says so below
                continue
            if first is not None:
                problem = f"key {key!r} appears twice (lines {first} and {line})"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


# Plain scalars read by YAML 1.2's core schema, as DVC reads params.yaml (ruamel, YAML 1.2), not
# PyYAML's YAML 1.1: `lr: 1e-4` was the string "1e-4" (1.1 floats need a dot), refused as "must be
# a number"; `clip_model: no`, `on`, `off`, `yes` were booleans (a name "no" became False), and
# `017` octal 15, `1:30` the integer 90, `2026-01-01` a date; DVC's params diff showed the other
# reading.
_CORE_TAGS = ("bool", "int", "float", "timestamp")
_CORE_RESOLVERS = [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
]
_ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag.rpartition(":")[2] not in _CORE_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _ParamsDumper(yaml.SafeDumper):
    """The writing of params (`write_resolved`): a string either reading would take for
    something else is quoted, so the file reads back the same here (YAML 1.2: "1e3", "0x10")
    and in a YAML 1.1 reader such as `yaml.safe_load` ("no", "on", "017")."""


_ParamsDumper.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()
}
for _kind, _pattern, _first in _CORE_RESOLVERS:
    for _schema in (_ParamsLoader, _ParamsDumper):
        _schema.add_implicit_resolver(
            f"tag:yaml.org,2002:{_kind}", re.compile(_pattern), list(_first)
        )


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """A core-schema integer: decimal (017 is 17, not PyYAML's octal 15), 0o octal, 0x hex."""
    text = loader.construct_scalar(node)
    base = {"0o": 8, "0x": 16}.get(text[:2], 10)
    return int(text[2:] if base != 10 else text, base)


_ParamsLoader.add_constructor("tag:yaml.org,2002:int", _core_int)


def parse_yaml(text: str) -> Any:
    """`text` read as params YAML (see `_ParamsLoader`); yaml.YAMLError when it is not."""
    loader = _ParamsLoader(text)
    try:
        return loader.get_single_data()
    except ValueError as error:  # an integer past Python's 4300 digits: int() refuses it
        problem = str(error).split(";")[0]
        raise yaml.constructor.ConstructorError(None, None, problem, None) from None
    finally:
        loader.dispose()


def _yaml_problem(error: yaml.YAMLError) -> str:
    """ "(line N): what" of a YAML error, as one line."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark is not None else ""
    problem = getattr(error, "problem", None) or type(error).__name__
    return f"{where}: {problem}"


def read_yaml(path: Path) -> dict[str, Any]:
    """A params file's mapping; a missing, oversized or malformed file is one line naming it."""
    from cg3d.files import require_regular_file

    path = Path(path)
    require_regular_file(
        path, f"--params: no such file {path}", "--params"
    )  # a FIFO would block the read
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PARAMS_BYTES + 1)
        if len(data) > MAX_PARAMS_BYTES:
            raise UsageError(f"{path}: larger than {MAX_PARAMS_BYTES} bytes, not a params file")
        values = parse_yaml(data.decode())
    except yaml.YAMLError as error:
        raise UsageError(f"{path}: not valid YAML{_yaml_problem(error)}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read ({error})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UsageError(
            f"{path}: a params file is a mapping of sections, got a {type(values).__name__}"
        )
    return values


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _is_section(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _type_name(kind: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(kind, "a mapping" if typing.get_origin(kind) is dict else str(kind))


def _convert(value: Any, kind: Any, key: str) -> Any:
    """`value` as a `kind` field wants it, or a UsageError naming `key`."""
    if _is_section(kind):
        if not isinstance(value, dict):
            raise UsageError(
                f"{key} must be a mapping of its parameters, got {shown_name(value, SHOWN_LIMIT)}"
            )
        return build(kind, value, key)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(kind)
    if ok is None and typing.get_origin(kind) is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if not ok:
        raise UsageError(f"{key} must be {_type_name(kind)}, got {shown_name(value, SHOWN_LIMIT)}")
    return float(value) if kind is float else value


def _finite(value: Any) -> bool:
    """No NaN or infinity in a value, nor in a mapping's or list's values (encoder_params):
    no param of this schema means anything by them."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(item) for item in value)
    return True


def build(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Section `cls` from a mapping: defaults for what it omits, every value converted and
    checked; an unknown key or a wrong type is a UsageError naming `where.key`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(
            f"{_key(where, unknown[0])}: unknown parameter (known: {', '.join(sorted(names))})"
        )
    converted = {
        name: _convert(value, hints[name], _key(where, name)) for name, value in values.items()
    }
    section = cls(**converted)
    section.validate()
    return section


def check_names(values: dict[str, Any], cls: type, where: str) -> None:
    """Every key of `values` names a field of `cls`, and so on down its sections: a command
    reads only its own section, so a key at the wrong level (`points:` at the top of the file,
    not under `sample:`) or misspelt in another section was never read, and never said so."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in names:
            known = ", ".join(sorted(names))
            # DVC reads any params file a stage names: a stage of the user's own need not
            # share this one
            own = "; your own stages' params go in a file of their own" if not where else ""
            raise UsageError(f"{_key(where, str(key))}: unknown parameter (known: {known}){own}")
        if _is_section(hints[key]) and isinstance(value, dict):
            check_names(value, hints[key], _key(where, key))


def check(section: Any, where: str) -> None:
    """Types, bounds and choices of every field of `section` (a params dataclass)."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        key, value, meta = _key(where, f.name), getattr(section, f.name), f.metadata
        if _is_section(hints[f.name]):
            if not isinstance(value, hints[f.name]):
                raise UsageError(
                    f"{key} must be a mapping of its parameters, got {shown_name(value, SHOWN_LIMIT)}"
                )
            value.validate()
            continue
        _convert(value, hints[f.name], key)
        if not _finite(value):  # NaN passes every bound (all comparisons are false)
            raise UsageError(f"{key} must be finite, got {shown_name(value, SHOWN_LIMIT)}")
        if meta.get("choices") and value not in meta["choices"]:
            raise UsageError(
                f"{key} must be one of {', '.join(meta['choices'])}, got {shown_name(value, SHOWN_LIMIT)}"
            )
        low, high = meta.get("low"), meta.get("high")
        if hints[f.name] is int and high is None:
            high = INT64_MAX
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = " and ".join(
                text
                for text in (
                    f"≥ {low}" if low is not None else "",
                    f"≤ {high}" if high is not None else "",
                )
                if text
            )
            raise UsageError(f"{key} must be {bounds}, got {shown_name(value, SHOWN_LIMIT)}")


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`["train.epochs=3", "train.augment.jitter=false"]` → a nested mapping (values as YAML)."""
    nested: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--set: expected section.key=value, got {shown_name(assignment, SHOWN_LIMIT)}"
            )
        try:
            value = parse_yaml(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        *parents, leaf = key.strip().split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise UsageError(f"--set: {key} sets inside a value that is not a section")
        target[leaf] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` laid over it, section by section."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def section_values(tree: dict[str, Any], path: str, where: str) -> dict[str, Any]:
    """The mapping at dotted `path` of a params tree (empty when absent)."""
    values: Any = tree
    for part in path.split("."):
        values = values.get(part) if isinstance(values, dict) else None
        if values is None:
            return {}
    if not isinstance(values, dict):
        raise UsageError(
            f"{where}: {path} must be a mapping of its parameters, got {shown_name(values, SHOWN_LIMIT)}"
        )
    return values


def load_section(
    cls: type[T],
    path: str,
    params_file: Path | None = None,
    assignments: list[str] | None = None,
    options: dict[str, Any] | None = None,
) -> T:
    """Section `path` (e.g. "sample", "eval.zeroshot") as a checked `cls`.

    Layers, later wins: the schema's defaults, `params_file` (only when given: no file is
    read implicitly), `--set` assignments, then command-line options that were given (not None).
    """
    tree = read_yaml(params_file) if params_file is not None else {}
    try:
        check_names(tree, Params, "")
    except UsageError as error:
        raise UsageError(f"{error} ({params_file})") from None
    values = dict(section_values(tree, path, str(params_file)))
    assigned = parse_assignments(assignments or [])
    unknown = sorted(set(assigned) - {f.name for f in dataclasses.fields(Params)})
    if unknown:
        raise UsageError(f"--set: unknown section {unknown[0]!r}")
    try:
        check_names(assigned, Params, "")
    except UsageError as error:
        raise UsageError(f"--set {error}") from None
    values = merge(values, section_values(assigned, path, "--set"))
    values |= {key: value for key, value in (options or {}).items() if value is not None}
    try:
        return build(cls, values, path)
    except UsageError as error:
        raise UsageError(f"{error}{f' ({params_file})' if params_file else ''}") from None


def load_params(params_file: Path) -> Params:
    """The whole params file, every section checked (`cg3d params check`)."""
    tree = read_yaml(params_file)
    try:
        return build(Params, tree, "")
    except UsageError as error:
        raise UsageError(f"{error} ({params_file})") from None


def write_resolved(path: Path, section: str, config: Any) -> Path:
    """The params a run used, as YAML next to its outputs (timm's args.yaml)."""
    from cg3d.files import atomic_path

    tree: dict[str, Any] = {}
    target = tree
    *parents, leaf = section.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = dataclasses.asdict(config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.dump(tree, Dumper=_ParamsDumper, sort_keys=False))
    return path


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` that are command-line options."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("option", True)]


def field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]
