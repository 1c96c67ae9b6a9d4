"""Per-stage failure tables: `failures.parquet` with columns id, stage, reason."""

import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FAILURES_NAME = "failures.parquet"
SCHEMA = pa.schema([("id", pa.string()), ("stage", pa.string()), ("reason", pa.string())])


def failures_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(sorted(rows, key=lambda r: r["id"]), schema=SCHEMA)


def write_failures(rows: list[dict], path: Path) -> Path:
    """Atomically write failure rows (dicts with id, stage, reason) sorted by id."""
    with failures_writer(path) as write:
        write(failures_table(rows))
    return Path(path)


@contextmanager
def failures_writer(path: Path) -> Iterator[Callable[[pa.Table], None]]:
    """Write a failures file table by table (rows, all together, sorted by id): memory stays
    flat. Yields `write(table)`; the file appears, atomically, when the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # hidden, per process: see chunks
    written = []

    def write(table: pa.Table) -> None:
        writer.write_table(table)
        written.append(table.num_rows)

    try:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            yield write
            if not written:  # no failures: one empty row group, as `pq.write_table` writes
                writer.write_table(SCHEMA.empty_table())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_failures(path: Path) -> list[dict]:
    path = Path(path)
    return pq.read_table(path).to_pylist() if path.is_file() else []


def summarize(rows: list[dict], key: str = "reason") -> Counter:
    """Counts by a column, for the one-line report a stage prints."""
    return Counter(r[key].split(":", 1)[0] for r in rows)
