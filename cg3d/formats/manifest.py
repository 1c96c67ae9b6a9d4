"""The meshes stage's outputs: `manifest.parquet`, one row per object, failures included
(docs/formats.md), and `classes.json`, the class list in label order."""

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cg3d.files import (
    atomic_path,
    file_version,
    loads_json,
    require_folder,
    require_regular_file,
    shown_name,
    stored_spelling,
    write_json,
)
from cg3d.formats.intact import damaged, parquet_file, schema_problem
from cg3d.formats.tar import MAX_KEY_BYTES, OBJECT_KEY

MANIFEST_NAME = "manifest.parquet"
STAGE = "meshes"  # the stage that writes (and rebuilds) the manifest
# Rows per Parquet row group: `manifest_batches` streams the manifest a row group at a time, so
# at most this many rows are decoded at once, whatever the number of objects.
ROW_GROUP_ROWS = 16_384
CLASSES_NAME = "classes.json"

# `status` values: "ok" or the kind of failure; `error` says why in words.
OK = "ok"
FAILURE_KINDS = (
    "unreadable",
    "empty",
    "degenerate",
    "non_finite",
    "absurd_size",
    "unsupported_format",
    "duplicate",
    "no_faces",  # a point cloud, or only lines
    "missing_file",  # a file the mesh references (a glTF buffer) is missing
    "outside_root",  # the file, or one it references, lies outside the source's root
    "undecodable",  # a Draco or meshopt payload that does not decode
    "changed_since_listed",  # a later stage found the file (or one it references) moved out of
    # the root, rewritten or gone
    "ambiguous_label",  # the source's annotations give the object two classes
    "quantized",  # float32 coordinates too far from the origin to hold the object's shape
)
# The manifest's metadata key for the source root, the folder its files and every file they
# reference must lie in when a later stage opens them, spelled as the mesh paths are
# (`stored_spelling`).
ROOT_KEY = b"cg3d.source_root"

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        # Relative to the manifest's folder when the file lies under it or both lie in one
        # repository (`stored_spelling`), else absolute.
        ("path", pa.string()),
        ("class_name", pa.string()),
        # Other names of the class from the source's taxonomy (ShapeNet's comma list).
        ("synonyms", pa.list_(pa.string())),
        # Free-text name of this object from the source (Objaverse names), or "".
        ("name", pa.string()),
        ("split", pa.string()),
        ("up_axis", pa.string()),
        ("sha256", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        # What the mesh names but the source lacks, each as the file writes it: an OBJ's
        # `mtllib` file, an MTL's texture map, a glTF image. The object is still `ok` (read
        # without them). Last, and optional to readers: manifests before it lack it.
        ("missing", pa.list_(pa.string())),
        # sha256 over the sha256s of the files the mesh makes an importer read (its MTLs and
        # textures, a glTF's buffers and images), "" when none (`meshio.references_sha256`):
        # a chunk's content key, so that a texture rewritten under the same mesh is seen.
        ("references_sha256", pa.string()),
    ]
)
# Columns a manifest written before they existed lacks: read as empty.
OPTIONAL = {"missing": [], "references_sha256": ""}


@dataclass
class MeshRecord:
    id: str
    source: str
    path: str
    class_name: str
    split: str
    up_axis: str = "y"
    synonyms: list[str] = field(default_factory=list)
    name: str = ""
    sha256: str = ""
    status: str = OK
    error: str = ""
    missing: list[str] = field(default_factory=list)
    references_sha256: str = ""


@contextmanager
def manifest_writer(
    out_dir: Path, root: Path | None = None
) -> Iterator[Callable[[pa.Table], None]]:
    """Write `out_dir/manifest.parquet` piece by piece: yields `write(table)`, called with tables
    in SCHEMA whose rows, all together, are sorted by id. Rows are held only until a row group
    of ROW_GROUP_ROWS is full, so memory stays flat; the file appears (atomically) at the end.
    The file takes the first table's schema, as `pq.write_table` does (the same bytes), with the
    source `root` (see ROOT_KEY) when given."""
    path = Path(out_dir) / MANIFEST_NAME
    metadata = {ROOT_KEY: _stored_root(Path(root), Path(out_dir)).encode()} if root else {}
    with atomic_path(path) as tmp:
        writer: pq.ParquetWriter | None = None
        held = SCHEMA.empty_table()

        def write_group(group: pa.Table) -> None:
            nonlocal writer
            schema = group.schema
            if metadata:
                schema = schema.with_metadata({**(schema.metadata or {}), **metadata})
            writer = writer or pq.ParquetWriter(tmp, schema)
            writer.write_table(group.combine_chunks())

        def write(table: pa.Table) -> None:
            nonlocal held
            held = pa.concat_tables([held, table]) if held.num_rows else table
            while held.num_rows >= ROW_GROUP_ROWS:
                write_group(held.slice(0, ROW_GROUP_ROWS))
                held = held.slice(ROW_GROUP_ROWS)

        try:
            yield write
            if held.num_rows or writer is None:  # an empty manifest: one empty row group
                write_group(held)
        finally:
            if writer is not None:
                writer.close()


def write_manifest_table(table: pa.Table, out_dir: Path, root: Path | None = None) -> Path:
    """Atomically write `out_dir/manifest.parquet` from a table in SCHEMA, sorted by id."""
    with manifest_writer(out_dir, root) as write:
        write(table)
    return Path(out_dir) / MANIFEST_NAME


def write_manifest(records: list[MeshRecord], out_dir: Path, root: Path | None = None) -> Path:
    """Write `out_dir/manifest.parquet`, sorted by id so that reruns give the same file."""
    rows = sorted((asdict(r) for r in records), key=lambda r: r["id"])
    return write_manifest_table(pa.Table.from_pylist(rows, schema=SCHEMA), out_dir, root)


def _stored_root(root: Path, out_dir: Path) -> str:
    return stored_spelling(root.resolve(), out_dir.resolve())


def manifest_root(meshes_dir: Path) -> Path:
    """The source root the meshes stage recorded (ROOT_KEY), else the manifest's own folder
    (a manifest written without one)."""
    metadata = pq.read_schema(manifest_path(meshes_dir)).metadata or {}
    stored = metadata.get(ROOT_KEY)
    return Path(meshes_dir) / stored.decode() if stored else Path(meshes_dir)


def manifest_path(meshes_dir: Path) -> Path:
    """`meshes_dir/manifest.parquet`; FileNotFoundError when the meshes stage has not run."""
    path = Path(meshes_dir) / MANIFEST_NAME
    missing = f"no manifest at {path}: run `cg3d meshes` first"
    require_folder(meshes_dir, missing=missing)
    require_regular_file(path, missing)
    return path


# An id as `cg3d.pipeline.ids.object_id` makes it: a WebDataset key and a file name stem, so
# no dot, no slash, never empty.
ID_PATTERN = f"^{OBJECT_KEY.pattern}$"
# Columns every later stage reads a value of in every row.
REQUIRED = ("id", "path", "class_name", "split", "up_axis", "status")


def manifest_file(meshes_dir: Path) -> pq.ParquetFile:
    """`meshes_dir/manifest.parquet`, checked once per process before any stage trusts it (a
    hand edit gave tracebacks, duplicate samples in shards, a tar member `../../evil`): the
    manifest's columns and types, no null where a value is read, every id a safe key, ids
    strictly increasing (the order it is written in, so no id twice). Anything else is a
    DamagedFile naming the file and the meshes stage; one columnar pass, a row group at a time."""
    path = manifest_path(meshes_dir)
    parquet = parquet_file(path, STAGE)
    key = (str(path.resolve()), *file_version(path))
    if key not in _CHECKED:
        problem = _manifest_problem(parquet)
        if problem:
            raise damaged(path, problem, STAGE)
        _CHECKED.add(key)
    return parquet


_CHECKED: set[tuple] = set()


def _manifest_problem(parquet: pq.ParquetFile) -> str | None:
    # the manifest's columns of their types; an old one's lack OPTIONAL's, and a column this
    # cg3d does not know (a newer one's, cg3d.formats.versions) is passed over, never read
    problem = schema_problem(parquet.schema_arrow, SCHEMA, optional=OPTIONAL)
    if problem:
        return problem
    last = None  # the previous row group's last id
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, list(REQUIRED))
        for name in REQUIRED:
            if table[name].null_count:
                return f"a null {name} in row group {group}"
        ids = table["id"].combine_chunks()
        unsafe = pc.invert(pc.match_substring_regex(ids, ID_PATTERN))
        if pc.any(unsafe).as_py():
            bad = ids.filter(unsafe)[0].as_py()
            return f"the id {shown_name(bad, 80)} is not a key of letters, digits, '_' and '-'"
        # (ASCII, as checked just now: characters are bytes) A longer id reached the tar
        # writers of the render and pack stages, whose ustar header refused its member names.
        long = pc.greater(pc.utf8_length(ids), MAX_KEY_BYTES)
        if pc.any(long).as_py():
            bad = ids.filter(long)[0].as_py()
            return (
                f"the id {shown_name(bad, 80)} is longer than the {MAX_KEY_BYTES} characters "
                "a tar member's name leaves its key"
            )
        if len(ids) and last is not None and ids[0].as_py() <= last:
            return f"the id {shown_name(ids[0].as_py(), 80)} is out of order or listed twice"
        if len(ids) > 1:
            order = pc.less_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
            if pc.any(order).as_py():
                bad = ids.slice(1).filter(order)[0].as_py()
                return f"the id {shown_name(bad, 80)} is out of order or listed twice"
        last = ids[-1].as_py() if len(ids) else last
    return None


def read_manifest(meshes_dir: Path, ok_only: bool = False) -> list[MeshRecord]:
    """Rows of `meshes_dir/manifest.parquet` (only `status == ok` ones when asked)."""
    records = [MeshRecord(**row) for row in manifest_rows(meshes_dir)]
    return [r for r in records if r.status == OK] if ok_only else records


def manifest_batches(
    meshes_dir: Path, columns: list[str] | None = None, batch_rows: int = 4096
) -> Iterator[list[dict]]:
    """The manifest's rows as dicts (only `columns`), in batches: memory stays flat.
    A missing manifest raises at the call, before any row is asked for."""
    parquet = manifest_file(meshes_dir)
    stored, absent = _split_columns(parquet, columns)
    return (
        [row | {name: copy.copy(OPTIONAL[name]) for name in absent} for row in batch.to_pylist()]
        for batch in parquet.iter_batches(batch_rows, columns=stored)
    )


def manifest_tables(meshes_dir: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The manifest as Arrow tables, one row group (ROW_GROUP_ROWS rows) at a time."""
    parquet = manifest_file(meshes_dir)  # raises at the call, as manifest_batches
    stored, absent = _split_columns(parquet, columns)

    def tables() -> Iterator[pa.Table]:
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, stored)
            for name in absent:
                empty = pa.array([OPTIONAL[name]] * table.num_rows, SCHEMA.field(name).type)
                table = table.append_column(SCHEMA.field(name), empty)
            yield table

    return tables()


def _split_columns(
    parquet: pq.ParquetFile, columns: list[str] | None
) -> tuple[list[str] | None, list[str]]:
    """(the `columns` to read from the file, the OPTIONAL ones asked for that it lacks): a
    manifest from before a column existed reads as if it held its empty value, and all
    columns are SCHEMA's only (a newer cg3d's extra column is not read)."""
    names = parquet.schema_arrow.names
    wanted = columns if columns is not None else SCHEMA.names
    absent = [name for name in wanted if name in OPTIONAL and name not in names]
    return [c for c in wanted if c not in absent], absent


def manifest_rows(meshes_dir: Path, columns: list[str] | None = None) -> Iterator[dict]:
    return (row for batch in manifest_batches(meshes_dir, columns) for row in batch)


def manifest_size(meshes_dir: Path) -> int:
    return manifest_file(meshes_dir).metadata.num_rows


def failure_reason(row: dict) -> str:
    """The failure row reason of a manifest row that is not `ok`: `status: error`."""
    return f"{row['status']}: {row['error']}" if row["error"] else row["status"]


def write_classes(classes: list[str], out_dir: Path) -> Path:
    """Atomically write `out_dir/classes.json`: the class names in label order."""
    path = Path(out_dir) / CLASSES_NAME
    write_json(path, classes, indent=1)
    return path


def read_classes(meshes_dir: Path) -> list[str]:
    """The meshes stage's class list, else the sorted class names of the good objects."""
    path = Path(meshes_dir) / CLASSES_NAME
    if path.is_file():
        try:
            classes = loads_json(path.read_bytes())
        except ValueError as error:  # cut short: the meshes stage writes it again
            raise damaged(path, f"{type(error).__name__}: {error}", STAGE) from None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise damaged(path, "not a list of class names", STAGE)
        if len(set(classes)) != len(classes):  # one name, two labels: every later one shifts
            twice = next(c for i, c in enumerate(classes) if c in classes[:i])
            raise damaged(path, f"the class {twice!r} is listed twice", STAGE)
        return classes
    rows = manifest_rows(meshes_dir, ["class_name", "status"])
    return sorted({row["class_name"] for row in rows if row["status"] == OK})


def mesh_file(meshes_dir: Path, record: MeshRecord) -> Path:
    """The absolute path of a record's mesh file."""
    path = Path(record.path)
    return path if path.is_absolute() else Path(meshes_dir) / path
