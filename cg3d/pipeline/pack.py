"""The pack stage: points, views and captions of every good object into WebDataset shards.

`OUT/{split}/shard-%06d.tar` and `OUT/index.json` in the format of `cg3d.formats.shards`;
`meta.json` holds the class name, source, split, free-text name, mesh path and sha256, point
count and view count.

The inputs are chunked (docs/design.md); they are merged by walking the id-sorted manifest while
each input keeps one chunk in memory, so memory stays flat in the number of objects. Tars are
written with fixed member order, mtime 0 and owner 0/"": unchanged inputs give identical bytes.
Objects that failed any stage are left out and listed in `OUT/failures.parquet` and the index.
"""

import bisect
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cg3d.errors import UsageError
from cg3d.formats import points as points_format
from cg3d.formats import renders as renders_format
from cg3d.formats.captions import CaptionsFile
from cg3d.formats.failures import FAILURES_NAME, read_failures, write_failures
from cg3d.formats.manifest import (
    CLASSES_NAME,
    OK,
    failure_reason,
    manifest_rows,
    manifest_size,
    read_classes,
)
from cg3d.formats.renders import Rendered
from cg3d.formats.shards import INDEX_NAME, ShardWriter, sample_members, write_index
from cg3d.formats.tar import FormatError
from cg3d.params import PackConfig
from cg3d.pipeline.chunks import locks_out_dir, progress_bar

SPLITS = ("train", "test")
MANIFEST_COLUMNS = [
    "id",
    "source",
    "path",
    "class_name",
    "name",
    "split",
    "sha256",
    "status",
    "error",
]


@dataclass
class PackSummary:
    samples: dict[str, int]
    shards: dict[str, int]
    failures: list[dict]


class ChunkedLookup:
    """Values by id over chunked files, one chunk loaded at a time.

    Each unit is (ids_of_unit, load_unit): only the smallest and largest id of every unit are
    kept. Units that are consecutive ranges of the sorted ids (how every stage chunks the
    manifest) are found by bisection; overlapping units still work, by trying each candidate.
    """

    def __init__(self, units: list[tuple[Callable[[], list[str]], Callable[[], dict]]]):
        ranges = []
        for list_ids, load in units:
            ids = list_ids()
            if ids:
                ranges.append((min(ids), max(ids), load))
        self.ranges = sorted(ranges, key=lambda r: (r[0], r[1]))
        self.starts = [r[0] for r in self.ranges]
        self.loaded: tuple[int, dict] | None = None

    def get(self, key: str) -> Any | None:
        last = bisect.bisect_right(self.starts, key)
        for position in range(last - 1, -1, -1):
            low, high, load = self.ranges[position]
            if key <= high:
                if self.loaded is None or self.loaded[0] != position:
                    self.loaded = (position, load())
                if key in self.loaded[1]:
                    return self.loaded[1][key]
        return None


def points_lookup(points_dir: Path) -> ChunkedLookup:
    def unit(part: Path):
        return (
            lambda: points_format.part_ids(part),
            lambda: dict(points_format.read_points_part(part)),
        )

    return ChunkedLookup([unit(p) for p in points_format.points_parts(points_dir)])


def colour_lookup(points_dir: Path) -> ChunkedLookup:
    """{id: has_color} over the sample stage's parts (meta.json's `has_color`)."""

    def unit(part: Path):
        return (lambda: points_format.part_ids(part), lambda: points_format.part_has_color(part))

    return ChunkedLookup([unit(p) for p in points_format.points_parts(points_dir)])


def renders_lookup(renders_dir: Path) -> ChunkedLookup:
    def unit(part: Path):
        return (
            lambda: renders_format.part_ids(part),
            lambda: dict(renders_format.read_render_part(part)),
        )

    return ChunkedLookup([unit(p) for p in renders_format.render_parts(renders_dir)])


def captions_lookup(captions_dir: Path) -> ChunkedLookup:
    captions = CaptionsFile(captions_dir)

    def unit(group: int):
        return (lambda: captions.group_ids(group)), (lambda: captions.read_group(group))

    return ChunkedLookup([unit(g) for g in range(captions.groups)])


@dataclass
class PackInputs:
    """What the pack stage merges, besides the manifest: each upstream stage's values by id."""

    classes: dict[str, int]  # class name → label
    failed: dict[str, dict]  # id → the first upstream failure row
    points: ChunkedLookup
    renders: ChunkedLookup
    captions: ChunkedLookup
    has_color: ChunkedLookup
    channels: list[str]  # the points' channel layout (xyz, rgb, normals), in meta.json


def open_inputs(meshes_dir: Path, points_dir: Path, renders_dir: Path, captions_dir: Path):
    """The classes, upstream failures and lookups; a missing input folder is a UsageError."""
    for flag, folder in (("--points", points_dir), ("--renders", renders_dir)):
        if not Path(folder).is_dir():
            raise UsageError(f"{flag}: no such folder {folder}")
    failed: dict[str, dict] = {}
    for folder in (points_dir, renders_dir, captions_dir):
        for row in read_failures(Path(folder) / FAILURES_NAME):
            failed.setdefault(row["id"], row)
    classes = read_classes(meshes_dir)
    return PackInputs(
        {name: i for i, name in enumerate(classes)},
        failed,
        points_lookup(points_dir),
        renders_lookup(renders_dir),
        captions_lookup(captions_dir),
        colour_lookup(points_dir),
        points_format.points_channels(points_dir),
    )


def open_writers(out_dir: Path, shard_size: int) -> dict[str, ShardWriter]:
    """A shard writer per split; the index and the previous run's shards are removed first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INDEX_NAME).unlink(missing_ok=True)  # the index is written last: no index, no set
    writers = {}
    for split in SPLITS:
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("shard-*.tar"):
            stale.unlink()
        writers[split] = ShardWriter(folder, shard_size)
    return writers


def missing_reason(points, renders: Rendered | None, captions) -> str:
    """Why an object that no stage reported as failed cannot be packed ("" when it can)."""
    if points is None:
        return "missing: no points"
    if points.ndim != 2 or points.shape[1] not in (3, 6, 9) or not np.isfinite(points).all():
        return f"bad_points: shape {points.shape} or non-finite values"
    if renders is None or not renders.views:
        return "missing: no rendered views"
    if not captions:
        return "missing: no captions"
    return ""


def object_meta(row: dict, points: np.ndarray, views: int) -> dict:
    return {
        "id": row["id"],
        "class_name": row["class_name"],
        "source": row["source"],
        "split": row["split"],
        "name": row["name"] or "",
        "path": row["path"],
        "sha256": row["sha256"],
        "n_points": int(points.shape[0]),
        "views": views,
    }


@dataclass
class Packer:
    """Writes each manifest row's sample, or says why it cannot."""

    inputs: PackInputs
    writers: dict[str, ShardWriter]
    points_shapes: set[tuple[int, int]] = field(default_factory=set)

    def pack(self, row: dict) -> dict | None:
        """Write the object's sample to its split's shards; its failure row if it has one."""
        key = row["id"]
        if row["status"] != OK:
            return {"id": key, "stage": "meshes", "reason": failure_reason(row)}
        if key in self.inputs.failed:
            return self.inputs.failed[key]
        cloud = self.inputs.points.get(key)
        rendered = self.inputs.renders.get(key)
        texts = self.inputs.captions.get(key)
        reason = missing_reason(cloud, rendered, texts)
        if not reason and row["class_name"] not in self.inputs.classes:
            reason = f"unknown_class: {row['class_name']!r} is not in {CLASSES_NAME}"
        if not reason and row["split"] not in self.writers:
            reason = f"unknown_split: {row['split']!r}"
        if reason:
            return {"id": key, "stage": "pack", "reason": reason}
        self.points_shapes.add(cloud.shape)
        cls = self.inputs.classes[row["class_name"]]
        meta = object_meta(row, cloud, len(rendered.views))
        meta |= {
            "channels": self.inputs.channels,
            "has_color": bool(self.inputs.has_color.get(key)),
        }
        members = sample_members(cloud, rendered.views, rendered.cameras, texts, cls, meta)
        self.writers[row["split"]].write(key, members)
        return None


def pack_index(classes: list[str], packer: Packer, failures: list[dict], config: PackConfig):
    """The index: classes, per split the shards, counts and checksums, failures, params."""
    return {
        "format": 1,
        "classes": classes,
        "splits": {split: writer.entry(split) for split, writer in packer.writers.items()},
        "failures": {
            "total": len(failures),
            "by_stage": dict(sorted(Counter(r["stage"] for r in failures).items())),
        },
        "params": {
            **asdict(config),
            "points": sorted({n for n, _ in packer.points_shapes}),
            "channels": sorted({c for _, c in packer.points_shapes}),
        },
    }


@locks_out_dir
def pack_shards(
    meshes_dir: Path,
    points_dir: Path,
    renders_dir: Path,
    captions_dir: Path,
    out_dir: Path,
    config: PackConfig,
) -> PackSummary:
    """Run the pack stage into `out_dir` ({train,test}/shard-*.tar, index.json, failures)."""
    if config.shard_size < 1:
        raise UsageError("--shard-size must be ≥ 1")
    try:
        inputs = open_inputs(meshes_dir, points_dir, renders_dir, captions_dir)
        packer = Packer(inputs, open_writers(out_dir, config.shard_size))
        failures = []
        with progress_bar() as progress:
            task = progress.add_task("packing", total=manifest_size(meshes_dir), rate="")
            for row in manifest_rows(meshes_dir, MANIFEST_COLUMNS):
                progress.advance(task)
                failure = packer.pack(row)
                if failure is not None:
                    failures.append(failure)
    except FormatError as error:  # a damaged render part: one line naming the part and member
        raise UsageError(f"--renders: {error}") from None
    for writer in packer.writers.values():
        writer.close()
    write_failures(failures, Path(out_dir) / FAILURES_NAME)
    classes = list(inputs.classes)
    write_index(out_dir, pack_index(classes, packer, failures, config))
    return PackSummary(
        {split: sum(w.counts) for split, w in packer.writers.items()},
        {split: len(w.names) for split, w in packer.writers.items()},
        failures,
    )
