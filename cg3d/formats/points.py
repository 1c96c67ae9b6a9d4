"""The sample stage's parts: `part-XXXXX.parquet` with columns `id`, `points` (float32, an
(N, C) cloud flattened), `n_points` (N) and `has_color`; one row per sampled object, ids sorted.
The channel layout (`channel_names`: xyz, then rgb with colours, then normals) is recorded in
the file's schema metadata under `channels`."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cg3d.pipeline.chunks import atomic_path

PART_SUFFIX = ".parquet"
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
        pq.write_table(points_table(ids, clouds, channels, has_color), tmp)


def part_channels(part: Path) -> list[str]:
    """The channel layout of one part (xyz for parts written before layouts were recorded)."""
    metadata = pq.read_schema(part).metadata or {}
    return metadata.get(b"channels", b"x,y,z").decode().split(",")


def points_channels(points_dir: Path) -> list[str]:
    """The channel layout of the sample stage's output (its first part; all share it)."""
    parts = points_parts(points_dir)
    return part_channels(parts[0]) if parts else list(XYZ)


def part_has_color(part: Path) -> dict[str, bool]:
    """{id: has_color} of one part (False for parts written before the column existed)."""
    table = pq.read_table(part)
    if "has_color" not in table.column_names:
        return dict.fromkeys(table["id"].to_pylist(), False)
    return dict(zip(table["id"].to_pylist(), table["has_color"].to_pylist(), strict=True))


def points_parts(points_dir: Path) -> list[Path]:
    return sorted(Path(points_dir).glob(f"part-*{PART_SUFFIX}"))


def part_ids(part: Path) -> list[str]:
    """The object ids of one part, without reading the points."""
    return pq.read_table(part, columns=["id"])["id"].to_pylist()


def read_points_part(part: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(id, (N, 3|6) float32 cloud) of every object of one part."""
    table = pq.read_table(part)
    for row_id, flat, n in zip(
        table["id"].to_pylist(),
        table["points"].to_numpy(),
        table["n_points"].to_pylist(),
        strict=True,
    ):
        yield row_id, np.asarray(flat, dtype=np.float32).reshape(n, -1)


def iter_points(points_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(id, (N, 3|6) float32 cloud) of every sampled object, part by part."""
    for part in points_parts(points_dir):
        yield from read_points_part(part)


def find_points(points_dir: Path, object_id: str) -> np.ndarray | None:
    """The cloud of one object (parts filtered by id, not read whole), or None."""
    for part in points_parts(points_dir):
        table = pq.read_table(part, filters=[("id", "==", object_id)])
        if table.num_rows:
            n = table["n_points"][0].as_py()
            return np.asarray(table["points"][0].values, dtype=np.float32).reshape(n, -1)
    return None
