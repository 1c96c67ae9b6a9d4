"""Which cg3d wrote a file: its format tag, and the one check of it (docs/formats.md, Versions).

Data roots outlive a cg3d release, so every reader meets files of older and newer cg3d:
- A file of another version is told by its format tag: `format` in a JSON document or a
  checkpoint (`cg3d-checkpoint-1`), the schema metadata key `cg3d.format` in a Parquet file
  (none writes it yet: a table without the key is `cg3d-table-1`, so today's files keep
  their bytes).
  A newer cg3d changes the tag's number when a reader of the old number would read its file
  wrong; adding a field or column that an older reader may pass over keeps it.
- So a tag this cg3d does not read (of a newer cg3d, or of an older one whose reader is
  gone) is refused in one line naming the file, both tags and what to do; a field or column
  a reader does not know, beside a tag it reads, is passed over (read by name); but a
  checkpoint's model config, whose every key builds the model, refuses one it does not know.
- A field or column added since is read as what its absence meant (`manifest.OPTIONAL`,
  `checkpoint.ADDED_KEYS`, an index without `lost`).
"""

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the model library imports this module: no pyarrow for it
    import pyarrow as pa

# `cg3d-<kind>-<number>`, matched whole (`$` took a trailing newline) and in ASCII digits only
# (`\d` took "٢"); a number of at most 9 digits, no leading zero: a tag of 5,000 digits was
# int()'s ValueError (its digit limit), "01" an "older" tag; such a string is no tag.
TAG = re.compile(r"cg3d-([a-z]+(?:-[a-z]+)*)-([1-9][0-9]{0,8})", re.ASCII)
# The schema metadata key of a Parquet file's tag; a file without it is version 1.
TABLE_KEY = b"cg3d.format"
# The tag of every Parquet table cg3d writes today (none of them stores it).
TABLE_FORMAT = "cg3d-table-1"


def version_problem(found: object, wanted: str, rerun: str) -> str | None:
    """Why a file whose tag is `found` is not one this cg3d reads as `wanted` (None when it
    is, or when `found` is no cg3d tag of `wanted`'s kind: the caller's "not a ..." line).
    `rerun` says what rewrites the file with this cg3d (`rerun \\`cg3d index\\``)."""
    ours, theirs = TAG.fullmatch(wanted), TAG.fullmatch(found) if isinstance(found, str) else None
    if found == wanted or ours is None or theirs is None or theirs[1] != ours[1]:
        return None
    newer = int(theirs[2]) > int(ours[2])
    what = "upgrade cg3d to read it, or " + rerun if newer else rerun
    return (
        f"written by {'a newer' if newer else 'an older'} cg3d (format {found!r}; this cg3d "
        f"reads {wanted!r}): {what}"
    )


def table_version_problem(schema: "pa.Schema", wanted: str, rerun: str) -> str | None:
    """`version_problem` of a Parquet file's schema: its TABLE_KEY, `wanted` when absent."""
    stored = (schema.metadata or {}).get(TABLE_KEY)
    found = stored.decode("utf-8", "replace") if stored is not None else wanted
    if found != wanted and version_problem(found, wanted, rerun) is None:
        return f"its {TABLE_KEY.decode()} is {found[:40]!r}, not {wanted!r}: {rerun}"
    return version_problem(found, wanted, rerun)
