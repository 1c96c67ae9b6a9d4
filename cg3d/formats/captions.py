"""The caption stage's output: `captions.parquet` with columns `id` and `captions`
(list<string>), rows in manifest (id) order, one row group per written batch."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cg3d.files import atomic_path
from cg3d.formats.intact import parquet_file

CAPTIONS_NAME = "captions.parquet"
SCHEMA = pa.schema([("id", pa.string()), ("captions", pa.list_(pa.string()))])


class CaptionsWriter:
    """Appends batches of (ids, caption lists) to an open captions file."""

    def __init__(self, writer: pq.ParquetWriter):
        self.writer = writer
        self.rows = 0

    def write(self, ids: list[str], captions: list[list[str]]) -> None:
        if ids:
            self.writer.write_table(
                pa.Table.from_arrays([pa.array(ids), pa.array(captions)], schema=SCHEMA)
            )
            self.rows += len(ids)


@contextmanager
def captions_writer(out_dir: Path) -> Iterator[CaptionsWriter]:
    """`out_dir/captions.parquet`, renamed into place only when the block succeeds."""
    with atomic_path(Path(out_dir) / CAPTIONS_NAME) as tmp, pq.ParquetWriter(tmp, SCHEMA) as out:
        yield CaptionsWriter(out)


class CaptionsFile:
    """A captions file read one row group at a time (memory flat in the number of objects)."""

    def __init__(self, captions_dir: Path):
        path = Path(captions_dir) / CAPTIONS_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no captions at {path}: run `cg3d caption` first")
        self.parquet = parquet_file(path, "caption")

    @property
    def groups(self) -> int:
        return self.parquet.num_row_groups

    def group_ids(self, group: int) -> list[str]:
        return self.parquet.read_row_group(group, columns=["id"])["id"].to_pylist()

    def read_group(self, group: int) -> dict[str, list[str]]:
        table = self.parquet.read_row_group(group)
        return dict(zip(table["id"].to_pylist(), table["captions"].to_pylist(), strict=True))


def read_captions(captions_dir: Path) -> dict[str, list[str]]:
    """Every object's captions (small sets and tests; the pack stage reads by row group)."""
    captions = CaptionsFile(captions_dir)
    return {k: v for group in range(captions.groups) for k, v in captions.read_group(group).items()}
