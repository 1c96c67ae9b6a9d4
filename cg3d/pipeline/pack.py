"""The pack stage: points, views and captions of every good object into WebDataset shards.

`OUT/{split}/shard-%06d.tar` holds, per object (key = object id, members in this order):
`points.npy` (N×3|6 float32), `view_XX.png` (one per rendered view), `cameras.json` (the
render stage's cameras, as written), `captions.json` (list of strings), `cls` (class index
as decimal text; the class list is in `index.json`) and `meta.json` (class name, source,
split, free-text name, mesh sha256, point count, view count).

The inputs are chunked (DESIGN.md); they are merged by walking the id-sorted manifest while
each input keeps one chunk in memory, so memory stays flat in the number of objects. Tars are
written with fixed member order, mtime 0 and owner 0/"": unchanged inputs give identical bytes.
Objects that failed any stage are left out and listed in `OUT/failures.parquet` and the index.
"""

import bisect
import io
import json
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from cg3d.errors import UsageError
from cg3d.pipeline.captions import CAPTIONS_NAME
from cg3d.pipeline.chunks import atomic_path, locks_out_dir, progress_bar, tar_member
from cg3d.pipeline.failures import FAILURES_NAME, read_failures, write_failures
from cg3d.pipeline.ids import file_sha256
from cg3d.pipeline.manifest import CLASSES_NAME, MANIFEST_NAME, OK

INDEX_NAME = "index.json"
SPLITS = ("train", "test")
SHARD_PATTERN = "shard-{:06d}.tar"
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
class PackConfig:
    shard_size: int = 1000


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
        def load() -> dict:
            table = pq.read_table(part)
            flats = table["points"].to_numpy(zero_copy_only=False)
            return {
                key: np.asarray(flat, dtype=np.float32).reshape(n, -1)
                for key, flat, n in zip(
                    table["id"].to_pylist(), flats, table["n_points"].to_pylist(), strict=True
                )
            }

        return (lambda: pq.read_table(part, columns=["id"])["id"].to_pylist()), load

    return ChunkedLookup([unit(p) for p in sorted(Path(points_dir).glob("part-*.parquet"))])


def renders_lookup(renders_dir: Path) -> ChunkedLookup:
    def unit(part: Path):
        def list_ids() -> list[str]:
            with tarfile.open(part) as tar:
                return [name.split(".", 1)[0] for name in tar.getnames()]

        def load() -> dict:
            members: dict[str, dict[str, bytes]] = {}
            with tarfile.open(part) as tar:
                for info in tar:
                    if info.isfile():
                        key, suffix = info.name.split(".", 1)
                        members.setdefault(key, {})[suffix] = tar.extractfile(info).read()
            return members

        return list_ids, load

    return ChunkedLookup([unit(p) for p in sorted(Path(renders_dir).glob("part-*.tar"))])


def captions_lookup(captions_dir: Path) -> ChunkedLookup:
    path = Path(captions_dir) / CAPTIONS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no captions at {path}: run `cg3d caption` first")
    parquet = pq.ParquetFile(path)

    def unit(group: int):
        def load() -> dict:
            table = parquet.read_row_group(group)
            return dict(zip(table["id"].to_pylist(), table["captions"].to_pylist(), strict=True))

        return (lambda: parquet.read_row_group(group, columns=["id"])["id"].to_pylist()), load

    return ChunkedLookup([unit(g) for g in range(parquet.num_row_groups)])


def manifest_rows(meshes_dir: Path) -> Iterator[dict]:
    path = Path(meshes_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: run `cg3d meshes` first")
    for batch in pq.ParquetFile(path).iter_batches(4096, columns=MANIFEST_COLUMNS):
        yield from batch.to_pylist()


def read_classes(meshes_dir: Path) -> list[str]:
    """The meshes stage's class list, else the sorted class names of the good objects."""
    path = Path(meshes_dir) / CLASSES_NAME
    if path.is_file():
        return list(json.loads(path.read_text()))
    return sorted({row["class_name"] for row in manifest_rows(meshes_dir) if row["status"] == OK})


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


class ShardWriter:
    """`folder/shard-%06d.tar`, a new shard every `shard_size` samples, each renamed into place."""

    def __init__(self, folder: Path, shard_size: int):
        self.folder = folder
        self.shard_size = shard_size
        self.names: list[str] = []
        self.counts: list[int] = []
        self.sha256: list[str] = []
        self.tar: tarfile.TarFile | None = None
        self.tmp: Path | None = None

    def write(self, key: str, members: list[tuple[str, bytes]]) -> None:
        if self.tar is None:
            path = self.folder / SHARD_PATTERN.format(len(self.names))
            self.tmp = path.with_name(f".{path.name}.tmp")
            # Open across calls (one shard spans many samples); closed in close().
            self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
            self.names.append(path.name)
            self.counts.append(0)
        for suffix, data in members:
            tar_member(self.tar, f"{key}.{suffix}", data)
        self.counts[-1] += 1
        if self.counts[-1] >= self.shard_size:
            self.close()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            path = self.folder / self.names[-1]
            self.tmp.replace(path)
            self.sha256.append(file_sha256(path))
            self.tar = None


def sample_members(
    row: dict, cls: int, points: np.ndarray, renders: dict[str, bytes], captions: list[str]
) -> list[tuple[str, bytes]]:
    views = sorted(name for name in renders if name.startswith("view_") and name.endswith(".png"))
    meta = {
        "id": row["id"],
        "class_name": row["class_name"],
        "source": row["source"],
        "split": row["split"],
        "name": row["name"] or "",
        "path": row["path"],
        "sha256": row["sha256"],
        "n_points": int(points.shape[0]),
        "views": len(views),
    }
    members = [("points.npy", npy_bytes(points))]
    members += [(name, renders[name]) for name in views]
    if "cameras.json" in renders:
        members.append(("cameras.json", renders["cameras.json"]))
    members += [
        ("captions.json", json.dumps(captions, ensure_ascii=False).encode()),
        ("cls", str(cls).encode()),
        ("meta.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()),
    ]
    return members


def missing_reason(points, renders, captions) -> str:
    """Why an object that no stage reported as failed cannot be packed ("" when it can)."""
    if points is None:
        return "missing: no points"
    if points.ndim != 2 or points.shape[1] not in (3, 6) or not np.isfinite(points).all():
        return f"bad_points: shape {points.shape} or non-finite values"
    if renders is None or not any(name.startswith("view_") for name in renders):
        return "missing: no rendered views"
    if not captions:
        return "missing: no captions"
    return ""


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
    for flag, folder in (("--points", points_dir), ("--renders", renders_dir)):
        if not Path(folder).is_dir():
            raise UsageError(f"{flag}: no such folder {folder}")
    classes = read_classes(meshes_dir)
    class_index = {name: i for i, name in enumerate(classes)}
    failed: dict[str, dict] = {}
    for folder in (points_dir, renders_dir, captions_dir):
        for row in read_failures(Path(folder) / FAILURES_NAME):
            failed.setdefault(row["id"], row)
    points, renders, captions = (
        points_lookup(points_dir),
        renders_lookup(renders_dir),
        captions_lookup(captions_dir),
    )

    out_dir = Path(out_dir)
    (out_dir / INDEX_NAME).unlink(missing_ok=True)  # the index is written last: no index, no set
    writers = {}
    for split in SPLITS:
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("shard-*.tar"):
            stale.unlink()
        writers[split] = ShardWriter(folder, config.shard_size)

    failures: list[dict] = []
    channels: set[int] = set()
    n_points: set[int] = set()
    with progress_bar() as progress:
        total = pq.ParquetFile(Path(meshes_dir) / MANIFEST_NAME).metadata.num_rows
        task = progress.add_task("packing", total=total, rate="")
        for row in manifest_rows(meshes_dir):
            progress.advance(task)
            key = row["id"]
            if row["status"] != OK:
                reason = f"{row['status']}: {row['error']}" if row["error"] else row["status"]
                failures.append({"id": key, "stage": "meshes", "reason": reason})
                continue
            if key in failed:
                failures.append(failed[key])
                continue
            cloud, views, texts = points.get(key), renders.get(key), captions.get(key)
            reason = missing_reason(cloud, views, texts)
            if not reason and row["class_name"] not in class_index:
                reason = f"unknown_class: {row['class_name']!r} is not in {CLASSES_NAME}"
            if not reason and row["split"] not in writers:
                reason = f"unknown_split: {row['split']!r}"
            if reason:
                failures.append({"id": key, "stage": "pack", "reason": reason})
                continue
            channels.add(cloud.shape[1])
            n_points.add(cloud.shape[0])
            cls = class_index[row["class_name"]]
            writers[row["split"]].write(key, sample_members(row, cls, cloud, views, texts))
    for writer in writers.values():
        writer.close()

    write_failures(failures, out_dir / FAILURES_NAME)
    index = {
        "format": 1,
        "classes": classes,
        "splits": {
            split: {
                "shards": [f"{split}/{name}" for name in writer.names],
                "counts": writer.counts,
                "sha256": writer.sha256,
                "samples": sum(writer.counts),
            }
            for split, writer in writers.items()
        },
        "failures": {
            "total": len(failures),
            "by_stage": dict(sorted(Counter(r["stage"] for r in failures).items())),
        },
        "params": {**asdict(config), "points": sorted(n_points), "channels": sorted(channels)},
    }
    with atomic_path(out_dir / INDEX_NAME) as tmp:
        tmp.write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    return PackSummary(
        {split: sum(w.counts) for split, w in writers.items()},
        {split: len(w.names) for split, w in writers.items()},
        failures,
    )
