"""The caption stage's output: `captions.parquet` with columns `id` and `captions`
(list<string>), rows in manifest (id) order, one row group per written batch."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cg3d.files import atomic_path, require_folder, require_regular_file
from cg3d.formats.intact import damaged, parquet_file

CAPTIONS_NAME = "captions.parquet"
# The longest caption a captions file or a shard's captions.json may hold: the caption stage
# cuts each one here, and the readers refuse a longer one as a damaged (hand-edited) input,
# so a 100 MB string is never carried into the shards or tokenised by a loader. CLIP reads 77
# tokens, and no token of its vocabulary is anywhere near 53 characters, so a caption cut at
# this length tokenises exactly as the whole one did.
MAX_CAPTION_CHARS = 4096
# The most captions one object may have, on the same terms: the stage writes at most 64 names
# (`pipeline.captions.MAX_NAMES`) times the 64 templates of the larger set, plus a free-text name.
MAX_CAPTIONS_PER_OBJECT = 8192
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
        require_folder(captions_dir, missing=f"no captions at {path}: run `cg3d caption` first")
        require_regular_file(path, f"no captions at {path}: run `cg3d caption` first")
        self.path = path
        self.parquet = parquet_file(path, "caption")

    @property
    def groups(self) -> int:
        return self.parquet.num_row_groups

    def group_ids(self, group: int) -> list[str]:
        return self.parquet.read_row_group(group, columns=["id"])["id"].to_pylist()

    def read_group(self, group: int) -> dict[str, list[str]]:
        """{id: captions} of one row group; more captions than MAX_CAPTIONS_PER_OBJECT or one
        longer than MAX_CAPTION_CHARS (the stage never writes either) is a damaged file,
        refused in one line before it is carried on."""
        table = self.parquet.read_row_group(group)
        problem = captions_problem(table)
        if problem is not None:
            raise damaged(self.path, problem, "caption")
        return dict(zip(table["id"].to_pylist(), table["captions"].to_pylist(), strict=True))

    def close(self) -> None:
        self.parquet.close()


def captions_problem(table: pa.Table) -> str | None:
    """What breaks the bounds first in `table` (an object with too many captions, or a caption
    too long), or None; counted by Arrow, before any caption becomes a Python string."""
    captions = table["captions"].combine_chunks()
    counts = pc.fill_null(pc.list_value_length(captions), 0)
    many = pc.indices_nonzero(pc.greater(counts, MAX_CAPTIONS_PER_OBJECT))
    if len(many) > 0:
        row = many[0].as_py()
        return (
            f"object {table['id'][row].as_py()!r} has {counts[row].as_py()} captions, "
            f"more than {MAX_CAPTIONS_PER_OBJECT}"
        )
    lengths = pc.utf8_length(pc.list_flatten(captions))  # characters, as Python's len
    over = pc.indices_nonzero(pc.fill_null(pc.greater(lengths, MAX_CAPTION_CHARS), False))
    if len(over) == 0:
        return None
    first = over[0].as_py()
    row = pc.list_parent_indices(captions)[first].as_py()
    return (
        f"object {table['id'][row].as_py()!r} has a caption of {lengths[first].as_py()} "
        f"characters, more than {MAX_CAPTION_CHARS}"
    )


def read_captions(captions_dir: Path) -> dict[str, list[str]]:
    """Every object's captions (small sets and tests; the pack stage reads by row group)."""
    captions = CaptionsFile(captions_dir)
    return {k: v for group in range(captions.groups) for k, v in captions.read_group(group).items()}
