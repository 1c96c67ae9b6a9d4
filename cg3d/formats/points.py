"""The sample stage's parts: `part-XXXXX.parquet` with columns `id`, `points` (float32, an
(N, 3|6) cloud flattened) and `n_points` (N); one row per sampled object, ids sorted, in row
groups of ROW_GROUP_OBJECTS objects.

Parts may overlap in id range (a grown data set puts new objects into new parts,
`cg3d.pipeline.chunks.plan_chunks`): `PointsLookup` finds clouds by the id range of each row
group (Parquet statistics, read from the footers), so a lookup decodes only the row groups
that can hold the ids it asks for.
"""

import bisect
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cg3d.pipeline.chunks import atomic_path

PART_SUFFIX = ".parquet"
# Objects per Parquet row group: the most clouds a lookup of one object decodes.
ROW_GROUP_OBJECTS = 64
SCHEMA = pa.schema(
    [("id", pa.string()), ("points", pa.list_(pa.float32())), ("n_points", pa.int32())]
)


def points_table(ids: list[str], clouds: list[np.ndarray]) -> pa.Table:
    """Arrow table in the part schema, built from flat buffers (no per-float Python objects)."""
    flat = [cloud.astype(np.float32).ravel() for cloud in clouds]
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in flat])]).astype(np.int32)
    values = np.concatenate(flat) if flat else np.empty(0, dtype=np.float32)
    points = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float32()))
    n_points = pa.array([len(cloud) for cloud in clouds], type=pa.int32())
    return pa.Table.from_arrays([pa.array(ids, type=pa.string()), points, n_points], schema=SCHEMA)


def write_points_part(path: Path, ids: list[str], clouds: list[np.ndarray]) -> None:
    """Atomically write one part: `clouds[i]` is the (N, 3|6) cloud of object `ids[i]`."""
    with atomic_path(path) as tmp:
        pq.write_table(points_table(ids, clouds), tmp, row_group_size=ROW_GROUP_OBJECTS)


def points_parts(points_dir: Path) -> list[Path]:
    return sorted(Path(points_dir).glob(f"part-*{PART_SUFFIX}"))


def part_ids(part: Path) -> list[str]:
    """The object ids of one part, without reading the points."""
    return pq.read_table(part, columns=["id"])["id"].to_pylist()


def clouds_of(table: pa.Table) -> Iterator[tuple[str, np.ndarray]]:
    """(id, (N, 3|6) float32 cloud) of every row of a table in the part schema."""
    for row_id, flat, n in zip(
        table["id"].to_pylist(),
        table["points"].to_numpy(),
        table["n_points"].to_pylist(),
        strict=True,
    ):
        yield row_id, np.asarray(flat, dtype=np.float32).reshape(n, -1)


def read_points_part(part: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(id, (N, 3|6) float32 cloud) of every object of one part."""
    yield from clouds_of(pq.read_table(part))


def iter_points(points_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(id, (N, 3|6) float32 cloud) of every sampled object, part by part."""
    for part in points_parts(points_dir):
        yield from read_points_part(part)


class PointsLookup:
    """Clouds by id over a points folder; each row group known by its id range only."""

    def __init__(self, points_dir: Path):
        self.groups: list[tuple[str, str, str, int]] = []  # (lowest id, highest id, part, group)
        for part in points_parts(points_dir):
            meta = pq.read_metadata(part)
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

    def get_many(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The clouds of those of `ids` that were sampled (others are absent from the dict)."""
        wanted = sorted(set(ids))
        by_part: dict[str, list[int]] = {}
        for low, high, part, group in self.groups:
            first = bisect.bisect_left(wanted, low)
            if first < len(wanted) and wanted[first] <= high:
                by_part.setdefault(part, []).append(group)
        found: dict[str, np.ndarray] = {}
        for part, groups in by_part.items():
            table = pq.ParquetFile(part).read_row_groups(groups)
            table = table.filter(pc.is_in(table["id"], pa.array(wanted, pa.string())))
            found.update(clouds_of(table))
        return found


def find_points(points_dir: Path, object_id: str) -> np.ndarray | None:
    """The cloud of one object (only the row groups whose id range holds it are read), or None."""
    return PointsLookup(points_dir).get_many([object_id]).get(object_id)
