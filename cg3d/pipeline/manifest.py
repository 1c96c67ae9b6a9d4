"""The manifest: one row per object, failures included (DESIGN.md, Contracts)."""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_NAME = "manifest.parquet"
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
)

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        # Relative to the manifest's folder when the file lies under it, else absolute.
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
    ]
)


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


def write_manifest(records: list[MeshRecord], out_dir: Path) -> Path:
    """Write `out_dir/manifest.parquet`, sorted by id so that reruns give the same file."""
    rows = sorted((asdict(r) for r in records), key=lambda r: r["id"])
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    path = Path(out_dir) / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def read_manifest(meshes_dir: Path, ok_only: bool = False) -> list[MeshRecord]:
    """Rows of `meshes_dir/manifest.parquet` (only `status == ok` ones when asked)."""
    path = Path(meshes_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: run `cg3d meshes` first")
    records = [MeshRecord(**row) for row in pq.read_table(path).to_pylist()]
    return [r for r in records if r.status == OK] if ok_only else records


def mesh_file(meshes_dir: Path, record: MeshRecord) -> Path:
    """The absolute path of a record's mesh file."""
    path = Path(record.path)
    return path if path.is_absolute() else Path(meshes_dir) / path
