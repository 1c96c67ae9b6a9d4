"""Whether a written file is whole, and one line for one that is not.

Every part is written atomically, so one that exists was whole once; a copy cut short, a disk
that filled under another tool or a hand edit can still leave a short file. The rules, in
this one place: a Parquet file is whole when its footer reads (truncation takes the footer,
which is at the end, with it, and the footer holds the row count); a tar is
whole when its headers read to the end-of-archive blocks (a tar cut on a 512-byte boundary
between members reads "cleanly" without them). Resume (`cg3d.pipeline.chunks.ChunkedOutput`,
the pack stage's shards) recomputes a part that is not whole; a later stage that reads one
stops with a line naming the file and the stage that rebuilds it (`parquet_file`).
"""

from collections.abc import Collection
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cg3d.errors import UsageError
from cg3d.files import file_stand_in, why_not_a_file
from cg3d.formats.tar import FormatError, tar_members
from cg3d.formats.versions import TABLE_FORMAT, table_version_problem


class DamagedFile(UsageError):
    """A stage's output that is not whole; the message names it and the stage to rerun."""


def damaged(path: Path, problem: str, stage: str) -> DamagedFile:
    """The one-line error of a damaged file `path`, which `cg3d {stage}` rebuilds."""
    rebuild = f"rerun `cg3d {stage}` to rebuild it" if stage else "rerun the stage that wrote it"
    return DamagedFile(f"{path} is damaged ({problem}): {rebuild}")


def not_a_file(path: Path) -> str | None:
    """Why `path` is no file to read though something is there (a FIFO, a folder, a device, a
    symlink loop: opening a FIFO named `part-00003.parquet` blocked resume and `cg3d
    inspect` forever), or None: a file, or nothing (the caller's FileNotFoundError)."""
    why = why_not_a_file(path)
    return None if why in ("", "does not exist") else why


def parquet_problem(path: Path) -> str | None:
    """Why the Parquet file at `path` is not whole (None when it is); reads only its footer."""
    if problem := not_a_file(path):
        return problem
    try:
        pq.read_metadata(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as error:
        return _first_line(error)
    return None


def tar_problem(path: Path) -> str | None:
    """Why the tar at `path` is not whole (None when it is): its headers are walked to the
    end-of-archive blocks, member data seeked over."""
    if problem := not_a_file(path) or file_stand_in(path):  # "truncated tar header" before
        return problem
    try:
        with open(path, "rb", buffering=0) as stream:  # a seek per member: no buffer to refill
            for _ in tar_members(stream, read_data=False):
                pass
    except FormatError as error:
        return str(error)
    return None


def part_problem(path: Path) -> str | None:
    """Why a part file is not whole, by its kind (Parquet or tar); None when it is, or when
    its kind has no check here."""
    suffix = Path(path).suffix
    if suffix == ".parquet":
        return parquet_problem(path)
    if suffix == ".tar":
        return tar_problem(path)
    return None


def schema_problem(
    schema: pa.Schema, wanted: pa.Schema, optional: Collection[str] = ()
) -> str | None:
    """Why a Parquet file of `schema` cannot be read as `wanted` (a hand edit that dropped a
    column or changed its type: a reshape or KeyError traceback further on), or None. A column
    named in `optional` may be missing (files from before it existed), not of another type;
    columns beyond `wanted` are the caller's to refuse or ignore."""
    for want in wanted:
        if want.name not in schema.names:
            if want.name in optional:
                continue
            return f"no {want.name} column"
        found = schema.field(want.name).type
        if not found.equals(want.type):
            return f"its {want.name} column holds {found}, not {want.type}"
    return None


def parquet_file(path: Path, stage: str) -> pq.ParquetFile:
    """The Parquet file at `path`, written by `cg3d {stage}`; a damaged one is a DamagedFile
    naming it and that stage, not pyarrow's "Parquet magic bytes not found"; one of another
    cg3d's table format (`versions.TABLE_KEY`) a UsageError saying so."""
    if problem := not_a_file(path):
        raise damaged(path, problem, stage)
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as error:
        problem = _first_line(error)
    else:
        problem = None
    if problem:
        # Raised out here, not in the `except`: there pyarrow's error became the DamagedFile's
        # `__context__` (`from None` only hides it), its traceback kept pyarrow's frame and the
        # file it had opened, as long as the DamagedFile lived (a notebook's last error).
        raise damaged(path, problem, stage)
    rerun = f"rerun `cg3d {stage}` with this cg3d" if stage else "rerun the stage that wrote it"
    if problem := table_version_problem(parquet.schema_arrow, TABLE_FORMAT, rerun):
        raise UsageError(f"{path}: {problem}")
    return parquet


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
