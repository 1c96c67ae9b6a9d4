"""The sample stage's parts: `part-XXXXX.parquet` with columns `id`, `points` (float32, an
(N, C) cloud flattened), `n_points` (N) and `has_color`; one row per sampled object, ids sorted,
in row groups of ROW_GROUP_OBJECTS objects. The channel layout (`channel_names`: xyz, then rgb
with colours, then normals) is recorded in the file's schema metadata under `channels`.

Parts may overlap in id range (a grown data set puts new objects into new parts,
`cg3d.pipeline.chunks.plan_chunks`): `PointsLookup` finds clouds by the id range of each row
group (Parquet statistics, read from the footers), so a lookup decodes only the row groups
that can hold the ids it asks for.
"""

import bisect
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cg3d.files import atomic_path
from cg3d.formats.intact import damaged, parquet_file, schema_problem

PART_SUFFIX = ".parquet"
STAGE = "sample"  # the stage that writes (and rebuilds) the parts
# Objects per Parquet row group: the most clouds a lookup of one object decodes.
ROW_GROUP_OBJECTS = 64
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("points", pa.list_(pa.float32())),
        ("n_points", pa.int32()),
        ("has_color", pa.bool_()),
    ]
)
XYZ = ("x", "y", "z")
# The colour of a point whose object has none (no texture, vertex colour or material): mid
# grey, the same constant the benchmark readers give clouds without colour.
NO_COLOR = (0.5, 0.5, 0.5)


def channel_names(colors: bool, normals: bool) -> list[str]:
    """The columns of a cloud: xyz, then rgb in [0, 1] with colours, then the unit normal."""
    return [*XYZ, *(("r", "g", "b") if colors else ()), *(("nx", "ny", "nz") if normals else ())]


def points_table(
    ids: list[str],
    clouds: list[np.ndarray],
    channels: list[str] = XYZ,
    has_color: list[bool] | None = None,
) -> pa.Table:
    """Arrow table in the part schema, built from flat buffers (no per-float Python objects)."""
    flat = [cloud.astype(np.float32).ravel() for cloud in clouds]
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in flat])]).astype(np.int32)
    values = np.concatenate(flat) if flat else np.empty(0, dtype=np.float32)
    points = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float32()))
    n_points = pa.array([len(cloud) for cloud in clouds], type=pa.int32())
    colored = pa.array(has_color if has_color is not None else [False] * len(ids), pa.bool_())
    schema = SCHEMA.with_metadata({"channels": ",".join(channels)})
    columns = [pa.array(ids, type=pa.string()), points, n_points, colored]
    return pa.Table.from_arrays(columns, schema=schema)


def write_points_part(
    path: Path,
    ids: list[str],
    clouds: list[np.ndarray],
    channels: list[str] = XYZ,
    has_color: list[bool] | None = None,
) -> None:
    """Atomically write one part: `clouds[i]` is the (N, len(channels)) cloud of `ids[i]`."""
    with atomic_path(path) as tmp:
        pq.write_table(
            points_table(ids, clouds, channels, has_color), tmp, row_group_size=ROW_GROUP_OBJECTS
        )


def points_part(part: Path) -> pq.ParquetFile:
    """One part, its columns checked (a hand edit to list<int64> or a dropped column was a
    reshape traceback in pack and show): a DamagedFile naming it and the sample stage."""
    parquet = parquet_file(part, STAGE)
    # parts from before the has_color column existed lack it
    problem = schema_problem(parquet.schema_arrow, SCHEMA, optional={"has_color"})
    if problem:
        raise damaged(part, problem, STAGE)
    return parquet


def part_channels(part: Path) -> list[str]:
    """The channel layout of one part (xyz for parts written before layouts were recorded)."""
    metadata = points_part(part).schema_arrow.metadata or {}
    return metadata.get(b"channels", b"x,y,z").decode().split(",")


def points_channels(points_dir: Path) -> list[str]:
    """The channel layout of the sample stage's output (its first part; all share it)."""
    parts = points_parts(points_dir)
    return part_channels(parts[0]) if parts else list(XYZ)


def points_parts(points_dir: Path) -> list[Path]:
    return sorted(Path(points_dir).glob(f"part-*{PART_SUFFIX}"))


def part_ids(part: Path) -> list[str]:
    """The object ids of one part, without reading the points."""
    return points_part(part).read(columns=["id"])["id"].to_pylist()


def clouds_of(table: pa.Table, part: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(id, (N, C) float32 cloud) of every row of a table in the part schema, read from `part`;
    a row whose values are not `n_points` rows of 3, 6 or 9 channels (a hand edit) makes the
    part a DamagedFile, never a reshape traceback."""
    for row_id, flat, n in zip(
        table["id"].to_pylist(),
        table["points"].to_numpy(zero_copy_only=False),
        table["n_points"].to_pylist(),
        strict=True,
    ):
        size = 0 if flat is None else len(flat)
        if row_id is None or not n or n < 0 or size % n or size // n not in (3, 6, 9):
            problem = f"the object {row_id!r} holds {size} values, not {n} points of 3, 6 or 9"
            raise damaged(part, problem, STAGE)
        yield row_id, np.asarray(flat, dtype=np.float32).reshape(n, -1)


def read_points_part(part: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(id, (N, 3|6) float32 cloud) of every object of one part."""
    yield from clouds_of(points_part(part).read(), part)


def iter_points(points_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(id, (N, 3|6) float32 cloud) of every sampled object, part by part."""
    for part in points_parts(points_dir):
        yield from read_points_part(part)


class StoredCloud(NamedTuple):
    points: np.ndarray  # (N, C) float32
    has_color: bool  # the object had colours (False for parts from before the column existed)


class PointsLookup:
    """Clouds by id over a points folder; each row group known by its id range only."""

    def __init__(self, points_dir: Path):
        self.groups: list[tuple[str, str, str, int]] = []  # (lowest id, highest id, part, group)
        for part in points_parts(points_dir):
            meta = points_part(part).metadata
            for group in range(meta.num_row_groups):
                stats = meta.row_group(group).column(0).statistics
                if meta.row_group(group).num_rows == 0:
                    continue
                if stats is None or not stats.has_min_max:  # a writer without statistics
                    ids = pq.ParquetFile(part).read_row_group(group, ["id"])["id"]
                    low, high = min(ids.to_pylist()), max(ids.to_pylist())
                else:
                    low, high = stats.min, stats.max
                self.groups.append((low, high, str(part), group))
        # The id ranges as arrays: a pack shard's `get_many` compares them all in NumPy, and
        # looks closer (a bisect in Python) only at the groups whose range meets its ids'.
        # Every group in Python was O(groups) a shard, O(objects²) a pack (1M objects in
        # parts of 200: 5,000 shards × 5,000 groups).
        self.lows = np.array([low for low, _, _, _ in self.groups], dtype=str)
        self.highs = np.array([high for _, high, _, _ in self.groups], dtype=str)

    def get_many(self, ids: Iterable[str]) -> dict[str, StoredCloud]:
        """The clouds of those of `ids` that were sampled (others are absent from the dict)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        near = np.flatnonzero((self.lows <= wanted[-1]) & (self.highs >= wanted[0]))
        by_part: dict[str, list[int]] = {}
        for low, high, part, group in (self.groups[i] for i in near.tolist()):
            first = bisect.bisect_left(wanted, low)
            if first < len(wanted) and wanted[first] <= high:
                by_part.setdefault(part, []).append(group)
        found: dict[str, np.ndarray] = {}
        for part, groups in by_part.items():
            table = pq.ParquetFile(part).read_row_groups(groups)
            table = table.filter(pc.is_in(table["id"], pa.array(wanted, pa.string())))
            colored = (
                table["has_color"].to_pylist()
                if "has_color" in table.column_names
                else [False] * table.num_rows
            )
            pairs = zip(clouds_of(table, Path(part)), colored, strict=True)
            for (key, cloud), has_color in pairs:
                found[key] = StoredCloud(cloud, bool(has_color))
        return found


def find_points(points_dir: Path, object_id: str) -> np.ndarray | None:
    """The cloud of one object (only the row groups whose id range holds it are read), or None."""
    found = PointsLookup(points_dir).get_many([object_id]).get(object_id)
    return found.points if found else None
