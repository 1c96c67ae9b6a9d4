"""Per-stage failure tables: `failures.parquet` with columns id, stage, reason."""

import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FAILURES_NAME = "failures.parquet"
SCHEMA = pa.schema([("id", pa.string()), ("stage", pa.string()), ("reason", pa.string())])


def failures_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(sorted(rows, key=lambda r: r["id"]), schema=SCHEMA)


def write_failures(rows: list[dict], path: Path) -> Path:
    """Atomically write failure rows (dicts with id, stage, reason) sorted by id."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # hidden, per process: see chunks
    pq.write_table(failures_table(rows), tmp)
    tmp.replace(path)
    return path


def read_failures(path: Path) -> list[dict]:
    path = Path(path)
    return pq.read_table(path).to_pylist() if path.is_file() else []


def summarize(rows: list[dict], key: str = "reason") -> Counter:
    """Counts by a column, for the one-line report a stage prints."""
    return Counter(r[key].split(":", 1)[0] for r in rows)
