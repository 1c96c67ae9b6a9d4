"""Per-stage failure tables: `failures.parquet` with columns id, stage, reason."""

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cg3d.files import atomic_path
from cg3d.formats.intact import damaged, parquet_file, schema_problem

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
    written = []

    def write(table: pa.Table) -> None:
        writer.write_table(table)
        written.append(table.num_rows)

    with atomic_path(Path(path)) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        yield write
        if not written:  # no failures: one empty row group, as `pq.write_table` writes
            writer.write_table(SCHEMA.empty_table())


def read_failures(path: Path, stage: str = "") -> list[dict]:
    """The rows of a failures file ([] when there is none); `stage`, the one that wrote it,
    is named in the error of a damaged file."""
    path = Path(path)
    if not path.is_file():
        return []
    parquet = parquet_file(path, stage)
    # a dropped column was a KeyError further on; one this cg3d does not know is passed over
    if problem := schema_problem(parquet.schema_arrow, SCHEMA):
        raise damaged(path, problem, stage)
    return parquet.read(columns=SCHEMA.names).to_pylist()


def summarize(rows: list[dict], key: str = "reason") -> str:
    """The counts of failure rows by a column (a reason's kind, before its ":"), most first,
    in brackets for the one-line report a stage prints: " (no_faces 2, too_big 1)"; "" for
    none."""
    counts = Counter(r[key].split(":", 1)[0] for r in rows).most_common()
    return f" ({', '.join(f'{kind} {n}' for kind, n in counts)})" if counts else ""
