"""The retrieval index (`cg3d index` output): every object of a shard set embedded once.

    part-XXXXX.parquet  one per shard, the unit of resume (a part that exists is done): id,
                        class_name, source, split, points (D float32), n_views, views (D
                        float32 each), thumbnail (PNG of the first view, or empty)
    failures.parquet    samples that did not decode, and why (id, stage, reason)
    objects.parquet     every object in index order: id, class_name, source, split, part, row
    points.npy          (N, D) float32 point embeddings, row i ↔ objects row i
    views.npy           (V, D) float32 view embeddings; view_object.npy (V,) their object's row
    retrieval.json      written last (no retrieval.json, no index): the format, the model's
                        identity (checkpoint path and sha256, CLIP weights, model config), the
                        shards, splits and counts

Every embedding is L2-normalised, so a score is a cosine similarity. `cg3d.app.index` builds
and searches indexes; this module writes and reads their files.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cg3d.errors import UsageError
from cg3d.files import atomic_path, loads_json, require_folder, write_json
from cg3d.formats.intact import not_a_file
from cg3d.formats.versions import version_problem

FORMAT = "cg3d-index-1"
RETRIEVAL_NAME = "retrieval.json"  # not index.json: the shard index's name
LEGACY_NAME = "index.json"  # what indexes built before the rename call it (still read)
# A file only `cg3d index` writes: beside LEGACY_NAME, it tells an old index from a shard set
INDEX_ONLY = "view_object.npy"
ROW_GROUP = 64  # rows per Parquet row group: a gallery thumbnail reads at most this many


# Writing.


def write_index_part(path: Path, rows: list[dict]) -> None:
    """One shard's rows as a Parquet part, atomically (an empty shard is an empty part)."""
    dim = len(rows[0]["points"]) if rows else 0
    vector = pa.list_(pa.float32(), dim) if dim else pa.list_(pa.float32())
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("class_name", pa.string()),
            ("source", pa.string()),
            ("split", pa.string()),
            ("points", vector),
            ("n_views", pa.int32()),
            ("views", pa.list_(vector)),
            ("thumbnail", pa.binary()),
        ]
    )
    columns = {name: [row[name] for row in rows] for name in schema.names}
    columns["points"] = [np.asarray(v, dtype=np.float32) for v in columns["points"]]
    columns["views"] = [[np.asarray(v, dtype=np.float32) for v in vs] for vs in columns["views"]]
    table = pa.table(columns, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP)


def merge_index_parts(out: Path, parts: list[Path]) -> dict:
    """objects.parquet, points.npy, views.npy and view_object.npy from the parts, streamed."""
    sizes = [pq.ParquetFile(part).metadata.num_rows for part in parts]
    n_views = [pq.read_table(part, columns=["n_views"])["n_views"].to_numpy() for part in parts]
    total, total_views = sum(sizes), sum(int(v.sum()) for v in n_views)
    if total == 0:
        raise UsageError(f"{out}: no object of the shards could be indexed (see failures.parquet)")
    first = pq.read_table(parts[sizes.index(next(n for n in sizes if n))], columns=["points"])
    dim = len(first["points"][0])
    columns = ["id", "class_name", "source", "split", "points", "views"]
    objects = []
    with (
        atomic_path(out / "points.npy") as points_tmp,
        atomic_path(out / "views.npy") as views_tmp,
        atomic_path(out / "view_object.npy") as owner_tmp,
    ):
        points = np.lib.format.open_memmap(points_tmp, "w+", np.float32, (total, dim))
        views = np.lib.format.open_memmap(views_tmp, "w+", np.float32, (total_views, dim))
        owner = np.lib.format.open_memmap(owner_tmp, "w+", np.int64, (total_views,))
        row = view = 0
        for number, part in enumerate(parts):
            table = pq.read_table(part, columns=columns)
            n, v = table.num_rows, int(n_views[number].sum())
            if n:
                points[row : row + n] = vectors(table["points"], dim)
                views[view : view + v] = vectors(table["views"].combine_chunks().flatten(), dim)
                owner[view : view + v] = np.repeat(np.arange(row, row + n), n_views[number])
            objects.append(
                table.select(columns[:4])
                .append_column("part", pa.array([number] * n, pa.int32()))
                .append_column("row", pa.array(range(n), pa.int32()))
            )
            row, view = row + n, view + v
        for array in (points, views, owner):
            array.flush()
        del points, views, owner  # closes the memory maps before the renames
    with atomic_path(out / "objects.parquet") as tmp:
        pq.write_table(pa.concat_tables(objects), tmp)
    return {"objects": total, "views": total_views, "dim": dim}


def vectors(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """(n, dim) float32 of a column of fixed-size float lists."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def remove_retrieval(out: Path) -> None:
    """Remove the descriptor (under either name): no descriptor, no index, until rewritten."""
    for name in (RETRIEVAL_NAME, LEGACY_NAME):
        (Path(out) / name).unlink(missing_ok=True)


def write_retrieval(out: Path, descriptor: dict) -> None:
    """Atomically write `out/retrieval.json`, the last file of a build."""
    write_json(Path(out) / RETRIEVAL_NAME, descriptor)


# Reading.


def retrieval_file(folder: Path) -> Path | None:
    """The descriptor of index folder `folder`: its retrieval.json, else the index.json of an
    index built before the rename; None when it has neither."""
    for name in (RETRIEVAL_NAME, LEGACY_NAME):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def read_retrieval(path: Path) -> dict:
    """The retrieval.json of an index folder (index.json before the rename); a missing, foreign
    or malformed one (a field missing or of the wrong type) is one line naming it."""
    not_index = f"{path}: not a CG3D index (no {RETRIEVAL_NAME}; build one with `cg3d index`)"
    require_folder(path, missing=not_index)  # a file or FIFO is named as what it is
    file = retrieval_file(path)
    if file is None:
        raise UsageError(not_index)
    try:
        manifest = loads_json(file.read_bytes())
    except ValueError as error:  # UnicodeDecodeError included
        raise UsageError(f"{file}: not readable JSON ({error})") from None
    if isinstance(manifest, dict) and (
        problem := version_problem(manifest.get("format"), FORMAT, "rerun `cg3d index`")
    ):
        raise UsageError(f"{file}: {problem}")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UsageError(f"{file}: not a CG3D index (no {FORMAT!r} format tag)")
    problem = _descriptor_problem(manifest)
    if problem:
        raise UsageError(f"{file}: a damaged index descriptor ({problem}); rebuild the index")
    return manifest


# What a reader of retrieval.json relies on: field → type (model: its own fields).
_FIELDS = {"shards": str, "objects": int, "views": int, "dim": int, "model": dict}
_MODEL_FIELDS = {"checkpoint": str, "checkpoint_sha256": str}


def _descriptor_problem(manifest: dict) -> str | None:
    for fields, where in ((_FIELDS, manifest), (_MODEL_FIELDS, manifest.get("model"))):
        for name, kind in fields.items():
            value = where.get(name) if isinstance(where, dict) else None
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"{name!r} is {value!r:.40}, not a {kind.__name__}"
            if kind is int and value < 0:
                return f"{name!r} is {value}"
    if "clip_weights" not in manifest["model"]:
        return "'model' names no 'clip_weights'"
    return None


OBJECT_COLUMNS = ("id", "class_name", "source", "split", "part", "row")


def read_arrays(path: Path, manifest: dict) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """objects.parquet, and points.npy, views.npy and view_object.npy memory-mapped, each
    checked against the others and against retrieval.json (`manifest`), and the embeddings for
    NaN, infinities and a length other than 1, on open: an index whose files disagree (one cut short, replaced or not
    written by `cg3d index`) would answer from part of its objects, or with another's rows; it
    is one line naming the file. Pickled arrays are never loaded."""
    try:
        return _read_arrays(Path(path), manifest)
    except UsageError as error:
        failure = error
    # Raised out here without its traceback and context: their frames held the arrays already
    # memory-mapped (and pyarrow's the table's file), mapped for as long as the error lived (a
    # notebook's last error), after `open_index` had failed.
    failure.__context__ = None
    raise failure.with_traceback(None) from None


def _read_arrays(path: Path, manifest: dict) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    objects = _read_objects(path / "objects.parquet")
    n, views, dim = manifest["objects"], manifest["views"], manifest["dim"]
    if objects.num_rows != n:
        raise _damaged(
            path / "objects.parquet", f"{objects.num_rows} rows, retrieval.json says {n}"
        )
    points = _read_array(path / "points.npy", (n, dim), np.float32)
    view_rows = _read_array(path / "views.npy", (views, dim), np.float32)
    owner = _read_array(path / "view_object.npy", (views,), np.int64)
    for name, array in (("points.npy", points), ("views.npy", view_rows)):
        _check_finite(path, name, array)
    # each object's views are consecutive rows (the search reduces them as runs)
    if views and (owner[0] < 0 or owner[-1] >= n or (np.diff(owner) < 0).any()):
        raise _damaged(path / "view_object.npy", f"not ascending object rows in [0, {n})")
    return objects, points, view_rows, owner


def _require_regular(file: Path) -> None:
    """A FIFO in an index folder blocked the search (and the demo) in open() for ever."""
    if problem := not_a_file(file):
        raise _damaged(file, problem)


def _read_objects(file: Path) -> pa.Table:
    _require_regular(file)
    try:
        table = pq.read_table(file)
    except (OSError, ValueError) as error:  # ArrowInvalid: cut short, not Parquet
        raise _damaged(file, str(error).splitlines()[0] if str(error) else "unreadable") from None
    missing = [name for name in OBJECT_COLUMNS if name not in table.column_names]
    if missing:
        raise _damaged(file, f"no column {', '.join(missing)}")
    return table


def _read_array(file: Path, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """The .npy at `file`, memory-mapped, if it is a plain array of `shape` and `dtype`."""
    _require_regular(file)
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # pickled, cut short, not .npy
        raise _damaged(file, str(error).splitlines()[0] if str(error) else "unreadable") from None
    if array.dtype != dtype or array.shape != shape:
        raise _damaged(
            file, f"{array.dtype} {array.shape}, retrieval.json says {np.dtype(dtype)} {shape}"
        )
    return array


FINITE_CHECK_ROWS = 65536  # rows of an embedding file checked at a time: memory stays flat
# How far from 1 a stored embedding's length may be: `cg3d index` writes unit float32 vectors
# (off by about 1e-7); a search's scores are cosines only for unit rows.
UNIT_TOLERANCE = 1e-3


def _check_finite(path: Path, name: str, array: np.ndarray) -> None:
    """A NaN or infinite embedding would score in an arbitrary order: refused, naming the first
    such row. So is a row whose length is not 1 (zeros, or rows scaled by hand): it scored as a
    dot product, above or below the unit rows, with exit 0. Read in blocks of rows, so a
    memory-mapped file of any size is checked in little memory."""
    for start in range(0, len(array), FINITE_CHECK_ROWS):
        bad = _first_bad_row(array[start : start + FINITE_CHECK_ROWS])
        if bad is None:
            continue
        row, length = bad
        if length is None:
            raise UsageError(f"{path}: {name} holds NaN or infinite values (row {start + row})")
        raise _damaged(
            path / name,
            f"row {start + row} has length {length:.6g}, not 1: the index holds unit vectors",
        )


def _first_bad_row(block: np.ndarray) -> tuple[int, float | None] | None:
    """(row, None) of the first row holding NaN or an infinity, else (row, its length) of the
    first whose length is not 1; None when every row is a unit vector."""
    finite = np.isfinite(block).all(axis=-1)
    if not finite.all():
        return int(np.flatnonzero(~finite)[0]), None
    lengths = np.linalg.norm(block.astype(np.float64), axis=-1)
    off = np.flatnonzero(np.abs(lengths - 1) > UNIT_TOLERANCE)
    return (int(off[0]), float(lengths[off[0]])) if len(off) else None


def part_embeddings_problem(part: Path) -> str | None:
    """What is wrong with the embeddings of index part `part` (the checks `read_arrays` makes of
    the merged files), or None: a build that reuses a part must not merge one edited since,
    which every rebuild would merge again into an index refused when opened."""
    table = pq.read_table(part, columns=["points", "views"])
    dim = table.schema.field("points").type.list_size
    for name, column in (("points", table["points"]), ("views", table["views"])):
        if name == "views":
            column = column.combine_chunks().flatten()
        bad = _first_bad_row(vectors(column, dim)) if len(column) else None
        if bad is not None:
            row, length = bad
            what = "NaN or infinite values" if length is None else f"a length of {length:.6g}"
            return f"a {name} embedding (row {row}) has {what}"
    return None


def _damaged(file: Path, reason: str) -> UsageError:
    return UsageError(f"{file}: a damaged index file ({reason}); rebuild the index")


def read_thumbnail(path: Path, part: int, row: int) -> bytes:
    """The thumbnail PNG of row `row` of part `part` (empty when none was kept): one row group.
    A part missing or damaged since the build is one line naming it."""
    file = Path(path) / f"part-{part:05d}.parquet"
    group, offset = divmod(row, ROW_GROUP)
    _require_regular(file)
    try:
        table = pq.ParquetFile(file).read_row_group(group, columns=["thumbnail"])
        return table["thumbnail"][offset].as_py()
    except (OSError, ValueError, IndexError, KeyError) as error:  # ArrowInvalid: a ValueError
        raise _damaged(file, f"no thumbnail at row {row}: {error}") from None
