"""The shard loader: WebDataset shards (`cg3d pack` output) → training and eval batches.

`shards` is the pack output folder, or a URL / `pipe:` prefix (object storage); the shards are
read by `cg3d.formats.shards`, which says how names are put under the prefix.

Splitting, so that multi-GPU multi-worker runs see every sample exactly once per epoch:
- across ranks, whole shards are dealt once to balance sample counts (fixed per rank, so
  every rank knows its batch count up front; the training loop takes the minimum); with
  fewer shards than ranks, every rank reads every shard and keeps every world_size-th sample;
- across the workers of a rank, its shards are shuffled per epoch (seed + epoch) and dealt
  round-robin; with fewer shards than workers, each worker keeps every workers-th sample
  (open_clip's pitfall: idle workers and bunched samples when shards are few);
- each worker shuffles within a buffer; the main process cuts exact batches.
Keys are object ids, which never contain dots (webdataset cuts keys at the first dot).
A sample that fails to decode, or the rest of a shard that cannot be read, is skipped with a
log line and counted (`Loader.skipped`).

Points are fed by the sample's recorded layout (meta.json's `channels`), never by position:
xyz, then rgb when the model takes 6 channels (`point_channels`); normals are never fed. A
sample without colour of its own gets the constant `NO_COLOR` and `has_color` false in its
batch, so the training loop counts them; shards with no rgb column at all are refused before
training by `check_point_channels`.

What a worker does and what is left to the device: a worker decodes, augments up to FPS and
stacks a batch's points and uint8 views into one of its shared buffers (`BatchSlots`; the main
process only copies them out); a training batch also carries each sample's scale and shift,
which the trainer applies on the device with CLIP's normalisation (`Trainer.points`,
`Trainer.images`). Views keep the decoders' memory order (height, width, RGB) up to the device:
a batch's "image" is (B, 3, S, S) in shape, channels-last in memory, and `normalize` makes it
contiguous there.
"""

import collections
import dataclasses
import functools
import io
import multiprocessing
import os
import random
import re
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchcodec.decoders import decode_png

from cg3d.errors import UsageError
from cg3d.formats.shards import (
    RGB,
    Skipped,
    decode_image,
    decode_member,
    decode_sample,
    label_problem,
    location,
    model_columns,
    raw_samples,
    read_index,
    sample_has_color,
    split_channels,
    split_entry,
)
from cg3d.geometry.fps import farthest_point_sample, pointnet2_fps
from cg3d.geometry.frame import centroid_normalize
from cg3d.params import TrainConfig
from cg3d.stopping import (
    AwakeTimer,
    dead_worker_signal,
    end_with_parent,
    start_resource_tracker,
    stop_as_interrupt,
    worker_died_line,
    workers_start_deaf,
)
from cg3d.train.augment import (
    AugmentConfig,
    augment_raw,
    deferred_scale_and_shift,
    draw_augment,
)

__all__ = ["AugmentConfig", "LoaderConfig", "Loader", "check_point_channels", "make_loader"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# open_clip's `preprocess_cfg` interpolation → PIL's filter (torchvision's resize of a PIL image)
RESAMPLING = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


@dataclass
class LoaderConfig:
    """What the loader reads by: the `train:` params of the same names (`TrainConfig`) and the
    image size of the model's preprocessing. No defaults here: it is made from a run's params
    (`of_params`), so a renamed param is an error, never a silent default."""

    n_points: int
    batch_size: int
    workers: int
    shuffle_buffer: int
    point_channels: int  # 3: xyz; 6: xyz and rgb (the model's `point_channels`)
    seed: int
    read_timeout: float  # seconds a remote shard may send nothing
    augment: AugmentConfig
    replacement_draws: int  # 0: the stored points once each; N: N drawn with replacement
    point_normalisation: str  # stored, or centroid (the public dataset's pc_norm)
    view_choice: str  # random (every epoch) or fixed (one per object, by the seed)
    view_background: str  # white or drop_alpha (the public loader's convert("RGB"))
    image_size: int

    @classmethod
    def of_params(cls, params: TrainConfig, image_size: int) -> "LoaderConfig":
        """The loader of a training run's params (`train:`) for images of `image_size`."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "image_size"]
        return cls(**{name: getattr(params, name) for name in names}, image_size=image_size)


def deal_shards(counts: list[int], world_size: int) -> list[list[int]]:
    """Shard indices per rank, largest first to the rank with fewest samples (deterministic)."""
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    totals = [0] * world_size
    for shard in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        rank = min(range(world_size), key=lambda r: (totals[r], r))
        ranks[rank].append(shard)
        totals[rank] += counts[shard]
    return [sorted(shards) for shards in ranks]


@dataclass(frozen=True)
class Share:
    """What one reader (rank, worker) reads: shards in order, and which sample positions it keeps.

    A position is a sample's index in the stream `shards` would give; the reader keeps those
    with position % stride == offset (stride 1: all of them).
    """

    shards: tuple[int, ...]
    stride: int = 1
    offset: int = 0


def rank_share(counts: list[int], rank: int, world_size: int) -> Share:
    if len(counts) >= world_size:
        return Share(tuple(deal_shards(counts, world_size)[rank]))
    return Share(tuple(range(len(counts))), world_size, rank)


def rank_samples(counts: list[int], rank: int, world_size: int) -> int:
    share = rank_share(counts, rank, world_size)
    total = sum(counts[i] for i in share.shards)
    return len(range(share.offset, total, share.stride))


def worker_share(share: Share, worker: int, workers: int, order_seed: int | None) -> Share:
    """A worker's part of a rank's share: shards shuffled by `order_seed` (None: in order)."""
    shards = list(share.shards)
    if order_seed is not None:
        random.Random(order_seed).shuffle(shards)
    if share.stride == 1 and len(shards) >= workers:
        return Share(tuple(shards[worker::workers]))
    # Sample-level split: the rank's stride and offset, then every workers-th of those.
    return Share(tuple(shards), share.stride * workers, share.offset + share.stride * worker)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ClipPreprocess:
    """CLIP's preprocessing without torchvision's per-call overhead: resize of the short side
    to `image_size` (bicubic, or bilinear as SLIP's), centre crop, scale to [0, 1], then
    `mean`/`std` (CLIP's unless the model says otherwise, see `of_model`); (3, S, S) float32.

    The loader calls `decode` in its workers and its batches carry the uint8 pixels: a quarter
    of float32's bytes cross the process boundary and the copy to the GPU; the trainer calls
    `normalize` on the device (`cg3d.train.trainer.Trainer.images`). Both decoders give the
    pixels in their own memory order, height × width × RGB, as a (3, S, S) view: the copies on
    the way (into a worker's buffer, out of it) keep that order, and `normalize` makes the
    float pixels contiguous on the device, where the transposing copy is cheap; in a worker it
    is CPU time taken from decoding.
    """

    def __init__(self, image_size: int, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic"):
        self.image_size, self.resample = image_size, RESAMPLING[interpolation]
        # (x - mean) / std as x * scale + shift: two in-place passes, no temporaries (three
        # allocating passes cost the main process five times as much, 0.4 ms a sample).
        std = torch.tensor(std).view(3, 1, 1) * 255
        self.scale = 1 / std
        self.shift = -torch.tensor(mean).view(3, 1, 1) * 255 / std
        self.on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def of_model(cls, visual: torch.nn.Module) -> "ClipPreprocess":
        """The preprocessing an open_clip image tower was trained with (its `preprocess_cfg`)."""
        config = getattr(visual, "preprocess_cfg", {})
        size = config.get("size") or visual.image_size  # a timm tower has no image_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        way = (config.get("interpolation", "bicubic"), config.get("resize_mode", "shortest"))
        if size[0] != size[1] or way[0] not in RESAMPLING or way[1] != "shortest":
            raise UsageError(
                f"--clip-model: its image preprocessing ({size}, {way[0]}, {way[1]}) is not "
                "a square bicubic or bilinear resize and centre crop, which the loader implements"
            )
        mean, std = config.get("mean", CLIP_MEAN), config.get("std", CLIP_STD)
        return cls(size[0], mean, std, way[0])

    def decode(self, data: bytes) -> torch.Tensor:
        """An encoded view → (3, S, S) uint8. An 8-bit RGB PNG of the right size (what the
        render stage writes by default) is decoded by TorchCodec, 2× PIL's decode and
        conversion; others (other sizes, RGBA, grey, palette, 16-bit, JPEG) go by PIL."""
        if (
            data[:8] == PNG_SIGNATURE
            # bit depth 8, RGB; not RGBA (a transparent render), which mode="RGB" would put
            # on black: decode_image puts it on white
            and data[24:26] == b"\x08\x02"
            and int.from_bytes(data[16:20], "big") == self.image_size
            and int.from_bytes(data[20:24], "big") == self.image_size
        ):
            return decode_png(data, mode="RGB")
        return self.pixels(decode_image(data))

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """(3, S, S) uint8: resized and centre-cropped."""
        size = self.image_size
        if image.size != (size, size):
            width, height = image.size  # the long side as torchvision computes it
            short, long = min(width, height), max(width, height)
            other = int(size * long / short)
            resized = (size, other) if width == short else (other, size)
            image = image.resize(resized, self.resample)
            left = int(round((resized[0] - size) / 2.0))
            top = int(round((resized[1] - size) / 2.0))
            image = image.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, S, S), in any memory order → CLIP-normalised float32, contiguous, on
        the pixels' device (the trainer normalises on the GPU what the loader sent as uint8)."""
        scale, shift = self.constants(pixels.device)
        pixels = pixels.to(torch.float32, memory_format=torch.contiguous_format)
        return pixels.mul_(scale).add_(shift)

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`scale` and `shift` on `device`, copied there once."""
        if self.scale.device != device:
            held = self.on_device.get(device)
            if held is None:
                held = self.on_device[device] = (self.scale.to(device), self.shift.to(device))
            return held
        return self.scale, self.shift

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(self.pixels(image))


def resample(points: np.ndarray, n: int, rng: np.random.Generator | None) -> np.ndarray:
    """`n` points. Training (`rng`): from more points, `n` farthest-point samples from a random
    start (as the public code's `misc.fps` at train time, and as eval reads its benchmarks);
    from fewer, all of them and random repeats. Eval (no rng): the first n (the sample stage
    stores farthest-point order, so a prefix is itself an FPS subset)."""
    if len(points) == n:
        return points  # point order means nothing to the encoders: no shuffle needed
    if rng is None:
        return points[np.arange(n) % len(points)]
    if len(points) > n:
        return points[farthest_point_sample(points, n, int(rng.integers(len(points))))]
    return points[
        np.concatenate([np.arange(len(points)), rng.choice(len(points), n - len(points))])
    ]


def fixed_view(views: list[str], key: str, seed: int) -> str:
    """The one view of object `key` for a whole run (`view_choice: fixed`): a draw seeded by
    the run's seed and the key (crc32: stable across processes, unlike Python's hash)."""
    index = np.random.default_rng([seed, zlib.crc32(key.encode())]).integers(len(views))
    return views[index]


def decode_view_drop_alpha(preprocess: "ClipPreprocess", data: bytes) -> torch.Tensor:
    """A view as the public loader reads it (`view_background: drop_alpha`): PIL's
    convert("RGB") before resizing, which keeps the colour stored under alpha (black where
    Blender renders transparent) instead of compositing on white."""
    with Image.open(io.BytesIO(data)) as image:
        if "A" not in image.getbands() and "transparency" not in image.info:
            return preprocess.decode(data)  # nothing to drop: the usual path
        return preprocess.pixels(image.convert("RGB"))


class ShardStream(torch.utils.data.IterableDataset):
    """Decoded training/eval samples of one rank; each DataLoader worker takes its own part."""

    def __init__(
        self,
        shards: str | Path,
        split: str,
        config: LoaderConfig,
        preprocess: ClipPreprocess,
        train: bool,
        rank: int,
        world_size: int,
    ):
        super().__init__()
        index = read_index(shards)
        entry = split_entry(index, split)
        self.shards, self.names, self.counts = shards, entry["shards"], entry["counts"]
        self.classes = list(index.get("classes") or [])
        self.config, self.preprocess, self.train = config, preprocess, train
        self.rank_share = rank_share(self.counts, rank, world_size)
        self.rank = rank
        # Shared memory, seen by the persistent worker processes: the epoch set in the main
        # process, and the bad samples skipped by any worker (counted for the metrics).
        context = multiprocessing.get_context("spawn")
        start_resource_tracker()  # before the lock below starts one that a SIGHUP kills
        self.epoch = context.Value("q", 0, lock=False)
        self.skipped = context.Value("q", 0)
        self.slots: BatchSlots | None = None  # set by the Loader before its workers start

    def __iter__(self) -> Iterator[dict]:
        """Batches of up to `batch_size` samples: in a loader worker, written into the worker's
        `slots` (the main process copies them out, `BatchSlots.take`); otherwise collated."""
        info = torch.utils.data.get_worker_info()
        samples = self.samples(info)
        size = self.config.batch_size
        if info is None or self.slots is None:
            for group in chunks(samples, size):
                yield collate(group)
            return
        self.slots.free_all(info.id)  # those of an earlier epoch were copied out or dropped
        for group in chunks(samples, size):
            yield self.slots.fill(info.id, group)

    def samples(self, info: Any) -> Iterator[dict]:
        """The decoded samples of this reader (rank, and loader worker `info`), in its order."""
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch.value
        seed = self.config.seed + epoch if self.train else None
        share = worker_share(self.rank_share, worker, workers, seed)
        rng = np.random.default_rng([self.config.seed, epoch, self.rank, worker])
        skipped = Skipped(self.skipped)  # counted across the worker processes

        def keep(position: int) -> bool:
            return position % share.stride == share.offset

        samples = raw_samples(
            self.shards,
            self.names,
            self.counts,
            share.shards,
            skipped,
            keep,
            self.config.read_timeout,
        )
        if self.train:
            samples = shuffled(samples, self.config.shuffle_buffer, rng)
        for raw in samples:
            try:
                yield self.decode(raw, rng if self.train else None)
            except Exception as error:  # a bad sample is skipped, never a crashed epoch
                skipped.add(f"sample {raw.get('__key__')}", str(error))

    def decode(self, raw: dict, rng: np.random.Generator | None) -> dict:
        """Points (the model's columns, by layout), one view and one caption (random ones
        when training), whether the points had colour; members that are missing or do not
        decode raise FormatError naming them."""
        sample = decode_sample(raw, views=False)
        channels, captions, views = sample["channels"], sample["captions"], sample["view_names"]
        colored = sample_has_color(sample["meta"], channels)
        points = model_columns(sample["points"], channels, self.config.point_channels)
        if not views or not captions:
            raise ValueError("no view_XX.png or no captions")
        if self.config.point_normalisation == "centroid":  # before the draws, as pc_norm
            points = np.concatenate([centroid_normalize(points[:, :3]), points[:, 3:]], axis=1)
        if problem := label_problem(sample["cls"], self.classes):
            raise ValueError(problem)  # skipped and counted, as eval does
        config, draw = self.config, None
        if rng is not None:
            if config.replacement_draws:  # the public dataset's np.random.choice(N, 8192)
                points = points[rng.integers(len(points), size=config.replacement_draws)]
            fed = ["x", "y", "z", *(RGB if config.point_channels == 6 else ())]
            draw = draw_augment(config.augment, rng, len(points))
            points = augment_raw(points, draw, fed, colored)
            # a view is drawn in either mode, so that the later draws do not depend on it
            view, caption = views[rng.integers(len(views))], captions[rng.integers(len(captions))]
            if config.view_choice == "fixed":
                view = fixed_view(views, raw["__key__"], config.seed)
        else:
            view, caption = views[0], captions[0]
        if rng is not None and config.replacement_draws:
            points = points[pointnet2_fps(points, config.n_points, ordered=False)]
        else:
            points = resample(points, config.n_points, rng)
        decoded = {
            "points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
            "image": decode_member(raw, view, self.decode_view),
            "caption": caption,
            "cls": sample["cls"],
            "has_color": colored,
            "key": raw["__key__"],
        }
        if draw is not None:
            # The ops after FPS run on the device, on the whole batch (`Trainer.points`), as in
            # the public runner; (3,) arrays, which cross from a worker by value.
            decoded["scale"], decoded["shift"] = deferred_scale_and_shift(draw)
        return decoded

    def decode_view(self, data: bytes) -> torch.Tensor:
        """An encoded view → (3, S, S) uint8, transparent pixels as `view_background` says."""
        if self.config.view_background == "drop_alpha":
            return decode_view_drop_alpha(self.preprocess, data)
        return self.preprocess.decode(data)


def shuffled(items: Iterator[Any], buffer: int, rng: np.random.Generator) -> Iterator[Any]:
    """A shuffle buffer: hold `buffer` items, emit a random one as each new one arrives."""
    held: list[Any] = []
    for item in items:
        if len(held) < buffer:
            held.append(item)
            continue
        slot = int(rng.integers(len(held)))
        held[slot], item = item, held[slot]
        yield item
    order = rng.permutation(len(held))
    yield from (held[i] for i in order)


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` consecutive items; the last one may be shorter."""
    group: list[Any] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def collate(samples: list[dict]) -> dict:
    """torch's default collation: a batch of `samples` (tensors stacked, the rest in lists)."""
    return torch.utils.data.default_collate(samples)


def as_is(batch: dict) -> dict:
    """What a loader worker hands on, as it is (module level: workers may be spawned)."""
    return batch


# The batch entries a worker writes into its shared buffers; the rest travels pickled.
SLOT_KEYS = ("points", "image")


class BatchSlots:
    """Shared-memory batch buffers, `depth` per loader worker, made once and reused.

    torch's DataLoader sends each tensor a worker returns through a new shared-memory segment:
    creating it and faulting its pages in took a quarter of a worker's time per sample (8 MB a
    batch of 32 samples of 8192 points and 224 px views). Here a worker stacks a batch's points
    and views into one of its own buffers and sends only which one; the main process copies the
    rows out (into page-locked memory on a CUDA machine, ready for a non-blocking copy) and
    frees the buffer (`take`). A worker never has more than the DataLoader's prefetch factor of
    batches outstanding, and the main process copies each on arrival, so `depth` = prefetch + 1
    buffers are enough; a worker that finds none free waits for one. The shared memory is taken
    when the loader starts: workers × depth × a batch's points and views (7.9 MB a batch of 32
    samples of 8192 points and 224 px views), about what torch's in-flight batches took.
    """

    WAIT_SECONDS = 60.0

    def __init__(self, workers: int, depth: int, config: "LoaderConfig", image_size: int):
        """Buffers for batches of `config`'s size and points, and views of `image_size` (the
        preprocessing's, which decides the views' size)."""
        size, n, side = config.batch_size, config.n_points, image_size
        self.depth = depth
        # Views as the decoders lay them out, height × width × RGB, seen as (3, S, S): a row
        # is filled by a plain copy (`ClipPreprocess`).
        views = torch.empty((workers, depth, size, side, side, 3), dtype=torch.uint8)
        self.buffers = {
            "points": torch.empty((workers, depth, size, n, config.point_channels)),
            "image": views.permute(0, 1, 2, 5, 3, 4),
        }
        try:
            for buffer in self.buffers.values():
                buffer.share_memory_()
        except RuntimeError as error:  # torch's, for a full /dev/shm: was a traceback
            if "shared memory" not in str(error):
                raise
            raise UsageError(self._no_room_line(error)) from error
        # 1 while a buffer holds a batch the main process has not copied out; the lock orders
        # the flag against the buffer's contents on every platform
        self.busy = multiprocessing.get_context("spawn").Array("b", workers * depth)
        self.main = os.getpid()  # the process that frees buffers, which `claim` waits for

    def _no_room_line(self, error: RuntimeError) -> str:
        """A shared memory (/dev/shm) that refused the buffers: a container's is 64 MiB
        unless given more, less than 4 workers' buffers of 32-sample batches."""
        size = sum(buffer.numel() * buffer.element_size() for buffer in self.buffers.values())
        reason = str(error).rsplit(": ", 1)[-1]  # "No space left on device (28)"
        return (
            f"train.workers: the loader's batch buffers need {size / 2**20:.0f} MiB of shared "
            f"memory (/dev/shm), which refused them ({reason}); give it more (a container's is "
            "64 MiB unless given more: `docker --shm-size`), or lower train.workers or "
            "train.batch_size"
        )

    def free_all(self, worker: int) -> None:
        with self.busy.get_lock():
            for slot in range(self.depth):
                self.busy[worker * self.depth + slot] = 0

    def claim(self, worker: int) -> int:
        """The worker's first free buffer, marked busy (waits while the main process copies;
        the time it, or this worker, spends stopped does not count: `AwakeTimer`)."""
        timer = AwakeTimer(self.WAIT_SECONDS, self.main)
        while True:
            with self.busy.get_lock():
                for slot in range(self.depth):
                    if not self.busy[worker * self.depth + slot]:
                        self.busy[worker * self.depth + slot] = 1
                        return slot
            if timer.left() <= 0:
                raise RuntimeError(
                    f"loader worker {worker}: no batch buffer freed by the main process in "
                    f"{self.WAIT_SECONDS:.0f} s"
                )
            time.sleep(0.001)

    def fill(self, worker: int, samples: list[dict]) -> dict:
        """`samples` as a batch message: points and views written into a free buffer (None
        in `columns`), arrays (the scale and shift) stacked into one, the rest (captions,
        classes, keys) as lists."""
        slot = self.claim(worker)
        columns: dict[str, list | np.ndarray | None] = {}
        for key in samples[0]:
            values = [sample[key] for sample in samples]
            if key in SLOT_KEYS:
                torch.stack(values, out=self.buffers[key][worker, slot, : len(samples)])
                columns[key] = None
            elif isinstance(values[0], np.ndarray):
                # one array crosses to the main process cheaper than a batch of small ones
                columns[key] = np.stack(values)
            else:
                columns[key] = values
        return {"slot": (worker, slot), "rows": len(samples), "columns": columns}

    def take(self, message: dict) -> dict:
        """A worker's batch message → the batch `collate` would make; its buffer is copied out
        and freed."""
        worker, slot = message["slot"]
        batch = {}
        for key, values in message["columns"].items():
            if values is None:
                rows = self.buffers[key][worker, slot, : message["rows"]]
                pinned = torch.cuda.is_available()  # page-locked: a non-blocking copy to the GPU
                copy = torch.empty_like(rows, pin_memory=pinned)  # in the rows' memory order
                batch[key] = copy.copy_(rows)
            elif isinstance(values, np.ndarray):
                batch[key] = torch.from_numpy(values)
            else:
                batch[key] = collate(values)
        with self.busy.get_lock():
            self.busy[worker * self.depth + slot] = 0
        return batch


def cut_batches(parts: Iterable[dict], size: int, keep_last: bool) -> Iterator[dict]:
    """Exact batches of `size` from the workers' batches (whose ends are partial)."""
    pending: list[dict] = []
    held = 0
    for part in parts:
        pending.append(part)
        held += len(part["key"])
        while held >= size:
            merged = concat_batches(pending)
            yield batch_rows(merged, 0, size)
            rest = batch_rows(merged, size, held)
            held -= size
            pending = [rest] if held else []
    if keep_last and held:
        yield concat_batches(pending)


def concat_batches(parts: list[dict]) -> dict:
    """One batch of the rows of `parts`, in order (tensors concatenated, lists joined)."""
    if len(parts) == 1:
        return parts[0]
    return {
        key: torch.cat([p[key] for p in parts])
        if isinstance(parts[0][key], torch.Tensor)
        else [x for p in parts for x in p[key]]
        for key in parts[0]
    }


def batch_rows(batch: dict, start: int, stop: int) -> dict:
    """Rows `start:stop` of a batch."""
    return {key: value[start:stop] for key, value in batch.items()}


PREFETCH = 4  # batches each loader worker prepares ahead


class Loader:
    """Batches of one rank: iterate once per epoch, after `set_epoch(epoch)` when training.

    The worker processes start at the first epoch and persist across epochs (starting them
    again each epoch cost a fifth of an epoch of 1,600 samples).
    """

    def __init__(self, dataset: ShardStream, config: LoaderConfig, train: bool, samples: int):
        self.dataset, self.config, self.train = dataset, config, train
        size = config.batch_size
        self.num_batches = samples // size if train else -(-samples // size)
        self.workers: torch.utils.data.DataLoader | None = None

    def set_epoch(self, epoch: int) -> None:
        self.dataset.epoch.value = epoch

    @property
    def skipped(self) -> int:
        """Bad samples skipped (logged, not trained on) since this loader was made."""
        return self.dataset.skipped.value

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict]:
        if self.workers is None:
            # Each loader worker reads whole shards: more workers than shards only start idle
            # processes (0 stays 0: batches made in this process). Not bound by this node's
            # CPUs here: the stage did that (`loop.loader_workers`), and a run requeued on a
            # node with fewer CPUs keeps its checkpoint's count, whose batches it began with
            # (bound again here, it went on with other batches than the unbroken run's).
            workers = min(self.config.workers, max(len(self.dataset.names), 1))
            if workers:
                side = self.dataset.preprocess.image_size
                self.dataset.slots = BatchSlots(workers, PREFETCH + 1, self.config, side)
            self.workers = torch.utils.data.DataLoader(
                self.dataset,
                batch_size=None,  # the dataset yields batches (in workers, buffer messages)
                collate_fn=as_is,  # not default_convert's walk over every caption and key
                num_workers=workers,
                persistent_workers=workers > 0,
                prefetch_factor=PREFETCH if workers else None,
                # Its workers' base seed is drawn from this, not the global RNG: that draw came
                # in the first epoch a process ran, so a resumed run's global RNG (saved in
                # each checkpoint, drawn by dropout) went other than an unbroken run's. The
                # workers' draws are seeded by the loader itself (`ShardStream.samples`).
                generator=torch.Generator().manual_seed(self.config.seed),
                worker_init_fn=functools.partial(start_loader_worker, _parent_to_end_with()),
            )
        # The first pass starts the worker processes (later ones reuse them: persistent), deaf
        # to the stop signals until `stop_as_interrupt` runs in each, as the pools' workers do
        iterator = started_workers(self.workers)
        parts: Iterable[dict] = iterator
        if self.dataset.slots is not None:
            parts = map(self.dataset.slots.take, parts)
        batches = cut_batches(parts, self.config.batch_size, keep_last=not self.train)
        try:
            for count, batch in enumerate(batches):
                if self.train and count >= self.num_batches:
                    break
                # images stay uint8: CLIP's normalisation runs on the device (Trainer.images)
                yield batch
        except RuntimeError as error:  # torch's, for a worker that died: was a traceback
            if not str(error).startswith("DataLoader worker (pid"):
                raise
            workers = getattr(iterator, "_workers", [])  # private: torch names no signal here
            raise UsageError(worker_died_line(dead_worker_signal(workers))) from error
        except OSError as error:  # a worker's network disk error (raw_samples stops on it)
            raised = worker_os_error(error)
            if raised is None:
                raise
            raise raised from None


def _parent_to_end_with() -> int | None:
    """This process's pid for its loader workers to end with (`end_with_parent`) when they are
    started by the main thread; None when another thread starts them. The kernel ends them
    when the *thread* that started them ends: a Loader whose first epoch ran in a thread
    that then ended (a caller's worker thread) lost its persistent workers to SIGKILL at the
    next epoch ("killed ... most often by the out-of-memory killer"). Those are left to
    torch's watchdog, which ends them within about 5 s of a `kill -9` of the training."""
    return os.getpid() if threading.current_thread() is threading.main_thread() else None


def start_loader_worker(parent: int | None, worker_id: int) -> None:
    """A training DataLoader's `worker_init_fn` (bound to `_parent_to_end_with()`): a
    SIGTERM stops the worker as Ctrl-C does (`stop_as_interrupt`), and it ends the moment the
    training process does (`end_with_parent`) when `parent` is its pid."""
    if parent is not None:
        end_with_parent(parent)
    stop_as_interrupt(worker_id)


def started_workers(loader: torch.utils.data.DataLoader) -> Iterator:
    """The first pass of `loader`, which starts its worker processes (later ones reuse them:
    persistent), deaf to the stop signals until `stop_as_interrupt` runs in each, as the pools'
    workers do. One that cannot start them all (too many open files, `ulimit -n`; a process
    the kernel refuses, `ulimit -u`) stops those it started (`_stop_partial_start`)."""
    with workers_start_deaf():
        try:
            return iter(loader)
        except BaseException as error:
            _stop_partial_start(error)
            raise


def _stop_partial_start(error: BaseException) -> None:
    """Stop the workers of the loader iterator whose start raised `error`, and mark it shut
    down. torch left them running until the process exited, and the iterator's `__del__`
    printed "Exception ignored ... AttributeError: ... '_workers_status'" under the command's
    one line (its shutdown reads what its start did not set)."""
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    trace = error.__traceback__
    while trace is not None:
        iterator = trace.tb_frame.f_locals.get("self")
        if isinstance(iterator, _MultiProcessingDataLoaderIter):
            workers = getattr(iterator, "_workers", [])  # private: torch names no other way
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.join(timeout=5)
                if worker.is_alive():  # still deaf to SIGTERM
                    worker.kill()
                    worker.join()
            iterator._shutdown = True  # its `__del__` has nothing left to do
            return
        trace = trace.tb_next


def worker_os_error(error: OSError) -> OSError | None:
    """The OSError a DataLoader worker raised, as torch raises it again here: `OSError(text)`,
    the errno and file only in the text's last line ("OSError: [Errno 116] Stale file handle:
    '/x.tar'"), which the CLI showed as a traceback. None for any other OSError."""
    text = str(error)
    if error.errno is not None or not text.startswith("Caught "):
        return None
    match = re.search(r"\[Errno (\d+)\] (.+?)(?:: '(.*)')?$", text.rstrip().splitlines()[-1])
    if match is None:
        return None
    return OSError(int(match[1]), match[2], match[3])


# What the model reads of a batch on the device; the rest (captions, keys, has_color) stays
# on the host, where the loop counts it without waiting for the GPU.
DEVICE_KEYS = ("points", "image", "cls", "scale", "shift")


def to_device(batch: dict, device: torch.device) -> dict:
    """`batch` with its model inputs (`DEVICE_KEYS`) copied to `device`, without waiting: from
    page-locked memory (the loader's, on a CUDA machine; pinned here otherwise) the copy runs
    asynchronously on the current stream."""
    moved = dict(batch)
    for key in DEVICE_KEYS:
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.device != device:
            if device.type == "cuda" and not value.is_pinned():
                value = value.pin_memory()
            moved[key] = value.to(device, non_blocking=True)
    return moved


class Copy:
    """One batch's copy to the device, issued on a side CUDA stream (on a CPU: done at once)."""

    def __init__(self, batch: dict, device: torch.device, stream: Any):
        self.device = device
        if stream is None:
            self.batch, self.event = to_device(batch, device), None
            return
        with torch.cuda.stream(stream):
            self.batch = to_device(batch, device)
            self.event = torch.cuda.Event()
            self.event.record(stream)

    def ready(self) -> dict:
        """The batch, once the compute stream has been told to wait for its copy (and only
        for its own: the next batch's copy keeps running)."""
        if self.event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(self.event)
            for key in DEVICE_KEYS:
                value = self.batch.get(key)
                if isinstance(value, torch.Tensor) and value.is_cuda:
                    # the copy stream's memory is now also used by the compute stream
                    value.record_stream(current)
        return self.batch


def prefetch(batches: Iterable[dict], device: torch.device, ahead: int = 1) -> Iterator[dict]:
    """`batches`, in order, with their model inputs on `device`; the copies of the next `ahead`
    batches are issued before a batch is handed on, so on CUDA they run (on a side stream)
    while the current batch computes. On a CPU the batches pass through as they are."""
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    pending: collections.deque[Copy] = collections.deque()
    for batch in batches:
        pending.append(Copy(batch, device, stream))
        if len(pending) > ahead:
            yield pending.popleft().ready()
    while pending:
        yield pending.popleft().ready()


def check_point_channels(shards: str | Path, point_channels: int) -> None:
    """Before training: a model that takes colour (`point_channels` 6) needs shards with an rgb
    column; one line naming the param and the shards otherwise. Reads one sample a split."""
    if point_channels != 6:
        return
    for split in ("train", "test"):
        channels = split_channels(shards, split)
        if channels is not None and "r" not in channels:
            raise UsageError(
                f"train.point_channels is 6 (xyz, rgb), but the {split} shards in "
                f"{location(shards)} have no rgb column (channels {','.join(channels)}): "
                "sample them with sample.colors (--colors) and pack again, or train with "
                "--point-channels 3"
            )


def make_loader(
    shards: str | Path,
    split: str,
    config: LoaderConfig,
    preprocess: ClipPreprocess | None = None,
    train: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Loader:
    """The batches of `split` for `rank` of `world_size` (see the module docstring); images
    preprocessed by `preprocess` (default: CLIP's at `config.image_size`)."""
    if config.n_points < 1:
        raise UsageError("--n-points must be ≥ 1")
    if config.batch_size < 1:
        raise UsageError("--batch-size must be ≥ 1")
    if config.point_channels not in (3, 6):
        raise UsageError("--point-channels must be 3 (xyz) or 6 (xyz, rgb)")
    if not 0 <= rank < world_size:
        raise UsageError(f"rank {rank} is outside a world of {world_size}")
    preprocess = preprocess or ClipPreprocess(config.image_size)
    dataset = ShardStream(shards, split, config, preprocess, train, rank, world_size)
    samples = rank_samples(dataset.counts, rank, world_size)
    return Loader(dataset, config, train, samples)
