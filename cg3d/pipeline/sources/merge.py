"""The meshes stage's merge: its validation parts into the manifest (sorted by id, content
duplicates marked) and the failures file, in memory that does not grow with the objects.

An external merge sort. `sorted_runs` cuts a stream of tables into runs of RUN_ROWS rows, each
sorted in Arrow and written to disk in batches of READ_ROWS, and merges them FAN_IN at a time until
few are left; `merged_rows` then streams their rows in order, READ_ROWS rows of each run held
at a time. Runs are Arrow IPC streams (`.arrows`). Three sorts:

1. every row by id: the manifest's order;
2. (content, id) of the `ok` rows (`_with_content`: the sha256, a .gltf's references too):
   each content's rows in id order, so the first is the original and the others are its
   duplicates (a dict of hashes would grow with the objects: ~150 MB at
   a million; bucketing by hash would not help when most files are copies of a few);
3. the (id, original) pairs of the duplicates by id, joined with the rows of sort 1 as they
   are written.

Everything lives in a work folder that is removed first, so a run killed while merging simply
merges again from the validation parts.
"""

import heapq
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cg3d.files import atomic_path, remove_tree
from cg3d.formats.failures import FAILURES_NAME, failures_writer
from cg3d.formats.manifest import OK, manifest_writer

RUN_ROWS = 16_384  # rows sorted in memory at once
READ_ROWS = 64  # rows of each run held while merging (the runs' batch size)
FAN_IN = 64  # runs merged at once; more are merged in passes first
WRITE_ROWS = 4096  # rows turned back into an Arrow table at once
COPIES = pa.schema([("id", pa.string()), ("original", pa.string()), ("note", pa.string())])


def merge_parts(
    parts: list[Path], work: Path, out_dir: Path, stage: str, root: Path | None = None
) -> tuple[Counter, int]:
    """Write `out_dir`'s manifest.parquet (recording the source `root`) and failures.parquet
    from the validation `parts`; return the count of rows by status, and of the `ok` rows
    whose mesh names a file the source lacks (a non-empty `missing`)."""
    shutil.rmtree(work, ignore_errors=True)
    schema = pq.read_schema(parts[0]) if parts else None
    by_id = sorted_runs(_tables(parts), ["id"], work / "by-id")
    hashes = (
        _with_content(table.filter(pc.equal(table.column("status"), OK)))
        for table in _tables(parts, [*CONTENT_COLUMNS, "id", "status", "class_name"])
    )
    by_hash = sorted_runs(hashes, ["content", "id"], work / "by-hash")
    copies = _tables_of(_copies(merged_rows(by_hash, ["content", "id"])), COPIES)
    copies_by_id = sorted_runs(copies, ["id"], work / "copies")
    rows = _marked(merged_rows(by_id, ["id"]), merged_rows(copies_by_id, ["id"]))
    counts: Counter = Counter()
    lacking = 0
    with (
        manifest_writer(out_dir, root) as write_manifest,
        failures_writer(out_dir / FAILURES_NAME) as write_failures,
    ):
        for table in _tables_of(rows, schema):
            write_manifest(table)
            counts.update(table.column("status").to_pylist())
            ok = pc.equal(table.column("status"), OK)
            lacks = pc.greater(pc.list_value_length(table.column("missing")), 0)
            lacking += pc.sum(pc.and_(ok, lacks)).as_py() or 0
            failed = table.filter(pc.not_equal(table.column("status"), OK))
            if failed.num_rows:
                write_failures(_failure_rows(failed, stage))
    remove_tree(work)
    return counts, lacking


# What makes two objects one (`_with_content`)
CONTENT_COLUMNS = ["sha256", "references_sha256", "path"]


def _with_content(table: pa.Table) -> pa.Table:
    """The ok rows' (content, id, class_name), content the key of duplicates: the mesh file's
    sha256, and for a .gltf, whose geometry lies in the buffers it names, the sha256 of the
    files it references too (`references_sha256`): two .gltf of the same JSON beside
    different .bin files are two objects (the second was dropped as a duplicate). A .gltf's
    images count too (they change its views); an OBJ's MTL and textures do not."""
    gltf = pc.ends_with(pc.utf8_lower(table.column("path")), ".gltf")
    joined = pc.binary_join_element_wise(
        table.column("sha256"), table.column("references_sha256"), " "
    )
    content = pc.if_else(gltf, joined, table.column("sha256"))
    return pa.table(
        {"content": content, "id": table.column("id"), "class_name": table.column("class_name")}
    )


def _failure_rows(failed: pa.Table, stage: str) -> pa.Table:
    """The failures file's rows (id, stage, reason `status: error`) of failed manifest rows."""
    return pa.table(
        {
            "id": failed.column("id"),
            "stage": pa.repeat(pa.scalar(stage), failed.num_rows),
            "reason": pc.binary_join_element_wise(failed["status"], failed["error"], ": "),
        }
    )


def _tables(parts: list[Path], columns: list[str] | None = None) -> Iterator[pa.Table]:
    for part in parts:
        yield pq.read_table(part, columns=columns)


def _tables_of(rows: Iterable[dict], schema: pa.Schema | None) -> Iterator[pa.Table]:
    """Rows (dicts) back into Arrow tables of WRITE_ROWS rows."""
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == WRITE_ROWS:
            yield pa.Table.from_pylist(batch, schema=schema)
            batch = []
    if batch:
        yield pa.Table.from_pylist(batch, schema=schema)


def _copies(by_hash: Iterator[dict]) -> Iterator[dict]:
    """From the ok rows sorted by (content, id): every row but the first of its content, with
    the first's id, and a note when the two are filed under different classes (a labelling
    mistake the researcher wants to hear of: the file trains as the first's class only)."""
    content = original = None
    for row in by_hash:
        if row["content"] != content:
            content, original = row["content"], row
        else:
            note = ""
            if row["class_name"] != original["class_name"]:
                note = (
                    f", which is in class {original['class_name']!r}, this one in"
                    f" {row['class_name']!r}: the file is kept once, as {original['class_name']!r}"
                )
            yield {"id": row["id"], "original": original["id"], "note": note}


def _marked(rows: Iterator[dict], copies: Iterator[dict]) -> Iterator[dict]:
    """The rows (by id) with the copies (by id) marked `duplicate`, naming their original."""
    copy = next(copies, None)
    previous = None
    for row in rows:
        if row["id"] == previous:
            raise RuntimeError(f"the source listed two objects with the id {previous}")
        previous = row["id"]
        if copy is not None and copy["id"] == row["id"]:
            row["status"] = "duplicate"
            row["error"] = f"same content as {copy['original']}{copy['note']}"
            copy = next(copies, None)
        yield row


def sorted_runs(tables: Iterable[pa.Table], keys: list[str], folder: Path) -> list[Path]:
    """Sorted runs of the tables' rows on disk, at most FAN_IN of them: together, the rows in
    order of `keys` (Arrow's string order: by bytes, which Python's agrees with for UTF-8)."""
    folder.mkdir(parents=True)
    runs: list[Path] = []
    held: list[pa.Table] = []

    def flush() -> None:
        table = pa.concat_tables(held).sort_by([(key, "ascending") for key in keys])
        runs.append(folder / f"run-{len(runs):06d}.arrows")
        _write_run(runs[-1], table.schema, [table])
        held.clear()

    for table in tables:
        held.append(table)
        if sum(t.num_rows for t in held) >= RUN_ROWS:
            flush()
    if held:
        flush()
    generation = 0
    while len(runs) > FAN_IN:
        generation += 1
        merged = []
        for start in range(0, len(runs), FAN_IN):
            group = runs[start : start + FAN_IN]
            merged.append(folder / f"merge-{generation}-{len(merged):06d}.arrows")
            with pa.OSFile(str(group[0])) as file:
                schema = pa.ipc.open_stream(file).schema
            _write_run(merged[-1], schema, _tables_of(merged_rows(group, keys), schema))
            for run in group:
                run.unlink()
        runs = merged
    return runs


def _write_run(path: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    """A run as an Arrow IPC stream of READ_ROWS-row batches: read back a batch at a time,
    with no footer that grows with the rows (Parquet's row group metadata would)."""
    # atomic_path: a full disk is an error naming the run, and leaves no half run behind
    with atomic_path(Path(path)) as tmp, pa.ipc.new_stream(str(tmp), schema) as writer:
        for table in tables:
            writer.write_table(table, max_chunksize=READ_ROWS)


def merged_rows(runs: list[Path], keys: list[str]) -> Iterator[dict]:
    """The rows of sorted runs, in order of `keys`, READ_ROWS rows of each run held at once."""
    return heapq.merge(*(_rows(run) for run in runs), key=itemgetter(*keys))


def _rows(run: Path) -> Iterator[dict]:
    with pa.OSFile(str(run)) as file, pa.ipc.open_stream(file) as reader:  # read, not mapped
        for batch in reader:
            yield from batch.to_pylist()
