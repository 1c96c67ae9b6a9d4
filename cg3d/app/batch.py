"""Many shapes at once: `cg3d classify` and `cg3d embed` over a folder or a list of files.

The model loads once; each shape is read, prepared and scored in turn under a progress bar. A
shape that cannot be read is a row with `status` "failed" and its `error` (the one-line reason
`cg3d classify FILE` would give), never the end of the run. Results go to one file, chosen by
its suffix:
  classify  .csv or .parquet: path, status, error, then label_1, score_1 … label_K, score_K
  embed     .npy: (N, D) float32 of the shapes read (in list order) beside a .csv of every
            shape (path, status, error, row: its row in the .npy, -1 when it failed);
            .parquet: path, status, error, embedding (a list of D float32, null when failed)
A failed shape's scores are empty cells in a .csv and nulls in a .parquet (`parquet_schema`).
"""

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cg3d.app.api import Model, check_top, parse_labels
from cg3d.errors import UsageError
from cg3d.files import (
    NOT_UTF8_NAME,
    atomic_path,
    check_out_file,
    finite_or_none,
    folder_for,
    inside_folder,
    path_too_long,
    read_small_text,
    same_file,
    sorted_entries,
    utf8_name,
    why_not_a_folder,
)
from cg3d.formats.npy import write_npy
from cg3d.formats.pointfiles import POINT_SUFFIXES
from cg3d.formats.tables import write_csv
from cg3d.geometry.meshio import SUPPORTED_SUFFIXES
from cg3d.params import MAX_LABELS

SHAPE_SUFFIXES = tuple(sorted({*POINT_SUFFIXES, *SUPPORTED_SUFFIXES}))
LIST_SUFFIXES = (".txt", ".lst", ".list")  # a list file: one path a line
TABLE_SUFFIXES = (".csv", ".parquet")
OK, FAILED = "ok", "failed"


def is_batch(source: Path) -> bool:
    """Whether `source` names many shapes rather than one: a folder, a .lst/.list file, or a
    .txt file whose first entry is a file or names one of the shape formats (a .txt point
    cloud starts with numbers): a list of paths written relative to another folder than the
    list's is then a row per path saying it is missing, not a point file that does not parse."""
    source = Path(source)
    if source.is_dir():
        return True
    suffix = source.suffix.lower()
    if not source.is_file() or suffix not in LIST_SUFFIXES:
        return False
    if suffix != ".txt":
        return True
    try:
        with source.open(errors="replace") as handle:
            first = next((line.strip() for line in handle if line.strip()[:1] not in ("", "#")), "")
    except OSError:
        return False
    return bool(first) and (
        (source.parent / first).is_file() or first.lower().endswith(SHAPE_SUFFIXES)
    )


def list_shapes(source: Path) -> list[Path]:
    """The shapes `source` names: a folder's files of a format read here (all depths, sorted),
    or a list file's paths (one a line, relative to the list's folder; blank lines and
    `#` comments skipped). UsageError naming `source` when there is none."""
    source = Path(source)
    if source.is_dir():
        # Every entry of a shape format but a folder (which the walk enters): a FIFO, a symlink
        # loop or a broken link named `x.npy` is a failed row saying what it is (it was left
        # out unsaid), and it is never opened (`check_shape_file` comes first).
        paths = sorted(_shape_paths(source))
        what = f"no shape files ({', '.join(SHAPE_SUFFIXES)}) in {source}"
    elif source.is_file():
        lines = read_small_text(source).splitlines()
        entries = [line.strip() for line in lines]
        paths = [source.parent / e for e in entries if e and not e.startswith("#")]
        what = f"{source} lists no paths"
    else:  # a FIFO or device is named as such, never opened
        raise UsageError(
            f"{source}: not a file or folder"
            if source.exists()
            else f"no such file or folder {source}"
        )
    if not paths:
        raise UsageError(what)
    return paths


def _shape_paths(folder: Path) -> Iterator[Path]:
    """The entries of a shape format under `folder` but folders, at all depths (but hidden
    ones, a name starting with `.`, as the sources skip them; as
    `Path.rglob("*")` finds them: a symlinked folder not entered), and each folder nested too
    deep to list (past PATH_MAX: its failed row says the name is too long) or that cannot be
    read (rglob passed over it and its files without a word). rglob raised
    ENAMETOOLONG for such a folder, or for a file's `is_dir`, and ended the whole run."""
    entries = sorted_entries(folder)
    if entries is None:
        yield folder  # its failed row: it cannot be read (UNLISTED_FOLDER)
    for entry in entries or ():
        path = Path(entry.path)
        if entry.name.startswith("."):  # as the sources: .DS_Store, .git, and the `._x.obj`
            continue  # macOS writes beside every file on an exFAT drive or a share (no shape)
        if entry.is_dir(follow_symlinks=False):
            if path_too_long(path):
                yield path  # its failed row: the name is too long
            else:
                yield from _shape_paths(path)
        elif path.suffix.lower() in SHAPE_SUFFIXES and why_not_a_folder(path):
            yield path  # a file, or what a failed row names (a FIFO, a loop, a name too long)


def check_out(
    out: Path,
    suffixes: tuple[str, ...],
    option: str = "--out",
    source: Path | None = None,
    shapes: Sequence[Path] = (),
) -> Path:
    """`out` if its suffix is one of `suffixes` and its folder (made if missing) can be written;
    else a UsageError. Checked before the model loads: a read-only folder was found only by
    the writer, after every shape was done (and pyarrow's writer left its temp file).

    `out` must not be one of the `shapes` read (`cg3d embed x.npy --out x.npy` replaced the
    points with their embedding), nor a shape file inside the folder `source` they are listed
    from (the next run over that folder would read the embeddings as a shape)."""
    out = Path(out)
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"{option}: {out} must end in {' or '.join(suffixes)}")
    if any(same_file(shape, out) for shape in shapes):
        raise UsageError(f"{option}: {out} is a shape this run reads; choose another file")
    folder = source if source is not None and Path(source).is_dir() else None
    if folder and out.suffix.lower() in SHAPE_SUFFIXES and inside_folder(out, folder):
        raise UsageError(
            f"{option}: {out} is inside {source}, whose {out.suffix} files are the shapes read: "
            "a later run over it would read this file as a shape; choose another folder"
        )
    # a file where its folder goes included; the folders made for the check are removed
    # again, for the writer to make (`folder_for`): a refused run leaves none
    check_out_file(out, option)
    return out


def each_shape(
    paths: list[Path], work: Callable[[Path], Any], description: str
) -> Iterator[tuple[str, Any, str]]:
    """(name, result, "") for each shape `work` handles, (name, None, reason) for the others,
    under a progress bar. A reason is the UsageError's one line, or the error's type and text.

    `name` is the path as the results file holds it: a name that is not UTF-8 (`m\\xff.obj`
    in a folder of good ones) is a failed row with the meshes stage's words, spelled as its
    manifest spells it; its surrogate ended the whole run when the table was written (exit 2,
    every other shape's result lost), and `classify` showed a UnicodeEncodeError as its reason."""
    from cg3d.pipeline.chunks import progress_bar

    with progress_bar("shapes") as progress:
        task = progress.add_task(description, total=len(paths), rate="")
        for path in paths:
            name = utf8_name(str(path))
            try:
                if name != str(path):
                    yield name, None, NOT_UTF8_NAME
                else:
                    yield name, work(path), ""  # `work` checks the file first (input_points)
            except UsageError as error:
                yield name, None, str(error)
            except Exception as error:  # noqa: BLE001 - one bad file is a row, not the end
                yield name, None, f"{type(error).__name__}: {error}"
            progress.update(task, advance=1)


def classify_rows(
    model: Model,
    paths: list[Path],
    labels: str | list[str] | None,
    top: int,
    up_axis: str = "y",
    protocol: str = "cg3d",
    max_labels: int = MAX_LABELS,
) -> list[dict[str, Any]]:
    """One row per shape: path, status, error, label_k and score_k for k = 1 … top."""
    top = check_top(top, "--top")
    names = parse_labels(labels, model.classes, max_labels)
    model.label_features(names, protocol)  # bad labels fail now, not once per shape
    top = min(top, len(names))
    rows = []

    def work(path: Path):
        return model.classify(path, names, top, up_axis, protocol, max_labels=max_labels)

    with model.reading_shapes():  # one Blender for every shape it reads
        for name, predictions, error in each_shape(paths, work, "classifying"):
            row: dict[str, Any] = {"path": name, "status": FAILED if error else OK}
            row["error"] = error
            for k in range(top):
                label, score = predictions[k] if predictions else ("", float("nan"))
                row[f"label_{k + 1}"], row[f"score_{k + 1}"] = label, score
            rows.append(row)
    return rows


def embed_rows(
    model: Model, paths: list[Path], up_axis: str = "y"
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """One row per shape (path, status, error, row) and the (N_ok, D) embeddings of those read,
    in order; `row` is a shape's row in the array (-1 when it failed)."""
    rows, vectors = [], []
    with model.reading_shapes():  # one Blender for every shape it reads
        for name, vector, error in each_shape(
            paths, lambda p: model.embed_points(p, up_axis)[0], "embedding"
        ):
            rows.append(
                {
                    "path": name,
                    "status": FAILED if error else OK,
                    "error": error,
                    "row": -1 if error else len(vectors),
                }
            )
            if not error:
                vectors.append(vector)
    if vectors:
        array = np.stack(vectors).astype(np.float32)
    else:  # (0, D), as a reader stacking it with other runs' arrays expects, not (0, 0)
        from cg3d.models.clip import clip_embed_dim

        width = clip_embed_dim(model.network.config["clip_model"])
        array = np.zeros((0, width), np.float32)
    return rows, array


def parquet_schema(rows: list[dict[str, Any]]) -> Any:
    """The pyarrow schema of a results table, by column name: text, float64 scores, float32
    embeddings (the .npy's type), int64 rows. Inferred from the values, a table whose every
    shape failed had columns of type null (duckdb's "NULL"[], pandas' object) and embeddings
    were float64 lists; a failed shape's score or embedding is a null, as the CSV's empty cell
    (a NaN was a number to duckdb and polars: their mean of score_1 was NaN)."""
    import pyarrow as pa

    def kind(name: str) -> Any:
        if name.startswith("score_"):
            return pa.float64()
        if name == "embedding":
            return pa.list_(pa.float32())
        return pa.int64() if name == "row" else pa.string()

    return pa.schema([(name, kind(name)) for name in (rows[0] if rows else ())])


def write_table(rows: list[dict[str, Any]], out: Path) -> Path:
    """`rows` as a .csv or .parquet file (by `out`'s suffix), written whole."""
    out = Path(out)
    with folder_for(out):
        if out.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist(finite_or_none(rows), schema=parquet_schema(rows))
            with atomic_path(out) as tmp:
                pq.write_table(table, tmp)
        else:
            write_csv(out, rows)
    return out


def write_embeddings(rows: list[dict[str, Any]], array: np.ndarray, out: Path) -> list[Path]:
    """.npy (and its .csv of paths) or .parquet, by `out`'s suffix; the files written."""
    out = Path(out)
    if out.suffix.lower() == ".parquet":
        by_row = {r["row"]: array[r["row"]].tolist() for r in rows if r["row"] >= 0}
        table = [
            {"path": r["path"], "status": r["status"], "error": r["error"]}
            | {"embedding": by_row.get(r["row"])}
            for r in rows
        ]
        return [write_table(table, out)]
    # The .csv names the array's rows: an earlier run's beside this run's array (a full disk
    # at the .csv) would name the wrong shapes. So the pair is written whole or not at all, and
    # the earlier pair is removed whole first (a full disk at the .npy left its array alone).
    table = out.with_suffix(".csv")
    table.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    with folder_for(out):
        write_npy(out, array)
        try:
            return [out, write_table(rows, table)]
        except BaseException:
            out.unlink(missing_ok=True)
            raise
