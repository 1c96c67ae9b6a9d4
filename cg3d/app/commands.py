"""`cg3d` subcommands of the app area (thin wrappers over `cg3d.app`).

cg3d classify   top labels of a user's mesh or point cloud, or of a folder or list of them
cg3d embed      point embeddings of shapes (a file, a folder or a list) to .npy or Parquet
cg3d index      embed every object of a shard set once into a retrieval index
cg3d search     the best objects of an index for a text, an image, a shape or an embedding
cg3d demo       the local web demo (classify an upload, search the index)
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cg3d import terminal
from cg3d.errors import UsageError
from cg3d.files import locks_folder, require_regular_file
from cg3d.options import with_params
from cg3d.params import MAX_LABELS, DemoConfig, IndexConfig

if TYPE_CHECKING:
    import numpy as np

console = terminal.console()

Checkpoint = Annotated[
    Path, typer.Option("--checkpoint", help="A CG3D checkpoint (cg3d train's last.pt).")
]


SHAPES_HELP = (
    "A mesh (obj, ply, off, stl, glb…) or point cloud (npy, txt, xyz, ply); or a folder of "
    "them, or a list file (.lst, .list, .txt: one path a line), for many at one model load."
)


def classify_command(
    path: Annotated[Path, typer.Argument(help=SHAPES_HELP)],
    checkpoint: Checkpoint,
    labels: Annotated[
        str,
        typer.Option(
            "--labels",
            help="Comma-separated labels, taken as text (default: the training classes).",
        ),
    ] = "",
    labels_file: Annotated[
        Path | None,
        typer.Option("--labels-file", help="Or a file of labels, one a line."),
    ] = None,
    top: Annotated[
        int, typer.Option("--top", help="How many labels to report, best first (at most all).")
    ] = 5,
    max_labels: Annotated[
        int,
        typer.Option(
            "--max-labels",
            help="Refuse more labels than this (each costs 64 text encodings), the "
            "checkpoint's own classes included.",
        ),
    ] = MAX_LABELS,
    up_axis: Annotated[
        str, typer.Option("--up-axis", help="The file's up axis: y, z, -y, -z, x or -x.")
    ] = "y",
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="Zero-shot protocol of the labels' text features: cg3d (64 templates), "
            "cg3d-public (the public eval.py's 'This is a ' + label).",
        ),
    ] = "cg3d",
    clip_pretrained: Annotated[
        str,
        typer.Option(
            "--clip-pretrained",
            help="CLIP weights instead of those the checkpoint names (an open_clip tag or a file).",
        ),
    ] = "",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="For many shapes: a .csv or .parquet file of one row per shape (path, status, "
            "error, label_k, score_k); without it a table is printed.",
        ),
    ] = None,
) -> None:
    """Top labels of a mesh or point cloud (or of many), sampled as the pipeline does."""
    from cg3d.app.api import (
        check_shape_file,
        check_top,
        check_up_axis,
        load,
        parse_labels,
        read_labels_file,
    )
    from cg3d.app.batch import TABLE_SUFFIXES, check_out, is_batch, list_shapes
    from cg3d.eval.protocols import get_protocol

    if labels and labels_file is not None:
        raise UsageError("--labels and --labels-file: give one or the other")
    many = is_batch(path)
    # before the model loads: a typo, an empty file or a bad --out costs no wait
    paths = list_shapes(path) if many else [check_shape_file(path)]
    if out is not None:
        check_out(out, TABLE_SUFFIXES, source=path, shapes=paths)
    check_up_axis(up_axis)
    check_top(top, "--top")
    check_top(max_labels, "--max-labels")
    get_protocol(protocol)  # an unknown name fails before the model loads
    if labels_file is not None:
        labels = read_labels_file(labels_file)
    # labels given need no checkpoint: a repeat or too many costs no model load (blank: the
    # checkpoint's classes, checked once it is read)
    if labels if isinstance(labels, list) else labels.strip():
        parse_labels(labels, [], max_labels)
    model = load(checkpoint, clip_pretrained=clip_pretrained or None)
    if many or out is not None:
        classify_many(model, paths, labels, top, up_axis, protocol, out, max_labels)
        return
    predictions = model.classify(path, labels, top, up_axis, protocol, max_labels=max_labels)
    table = Table("rank", "label", "probability")
    for rank, (label, score) in enumerate(predictions, start=1):
        table.add_row(str(rank), label, f"{score:.4f}")
    console.print(str(path), highlight=False, soft_wrap=True)  # never wrapped
    console.print(table)


def classify_many(model, paths, labels, top, up_axis, protocol, out, max_labels) -> None:
    """`cg3d classify` over many shapes: a file of rows, or a table of the best labels."""
    from cg3d.app.batch import classify_rows, write_table

    rows = classify_rows(model, paths, labels, top, up_axis, protocol, max_labels)
    failed = sum(row["status"] != "ok" for row in rows)
    if out is not None:
        write_table(rows, out)
        console.print(
            f"{len(rows) - failed} shapes classified, {failed} failed → {out}",
        )
        return
    table = Table("path", "label", "probability", "error")
    for row in rows:
        path, label, error = (str(row[key]) for key in ("path", "label_1", "error"))
        table.add_row(path, label, f"{row['score_1']:.4f}", error)
    console.print(table)


def embed_command(
    path: Annotated[Path, typer.Argument(help=SHAPES_HELP)],
    checkpoint: Checkpoint,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="A .npy file (N, D) of the shapes read, with a .csv beside it of every shape "
            "(path, status, error, row), or one .parquet file (path, status, error, embedding).",
        ),
    ],
    up_axis: Annotated[
        str, typer.Option("--up-axis", help="The files' up axis: y, z, -y, -z, x or -x.")
    ] = "y",
) -> None:
    """Point embeddings (unit vectors in CLIP's space) of shapes, one model load for all."""
    from cg3d.app.api import check_shape_file, check_up_axis, load
    from cg3d.app.batch import check_out, embed_rows, is_batch, list_shapes, write_embeddings

    paths = list_shapes(path) if is_batch(path) else [check_shape_file(path)]
    check_out(out, (".npy", ".parquet"), source=path, shapes=paths)
    check_up_axis(up_axis)
    model = load(checkpoint)
    rows, array = embed_rows(model, paths, up_axis)
    written = write_embeddings(rows, array, out)
    failed = sum(row["status"] != "ok" for row in rows)
    console.print(
        f"{len(array)} shapes embedded ({array.shape[1] if array.size else 0}-d), {failed} "
        f"failed → {', '.join(map(str, written))}",
    )


@with_params(IndexConfig, "index")
@locks_folder("out")  # before the checkpoint loads: a second build into OUT fails at once
def index_command(
    checkpoint: Checkpoint,
    shards: Annotated[str, typer.Option("--shards", help="`cg3d pack` output: folder or URL.")],
    out: Annotated[Path, typer.Option("--out", help="The index folder (resumes a killed build).")],
    config: IndexConfig,
) -> None:
    """Embed every object of a shard set (points and views) once, for `search` and the demo."""
    from cg3d.app.index import build_index

    built = build_index(checkpoint, shards, out, config)
    console.print(
        f"{built['objects']} objects, {built['views']} views, {built['dim']}-d embeddings "
        f"({built['lost']} samples lost, see failures.parquet) → {out}",
    )


def search_command(
    index: Annotated[Path, typer.Argument(help="An index folder (cg3d index --out).")],
    text: Annotated[str, typer.Option("--text", help="A caption, e.g. 'a chair'.")] = "",
    image: Annotated[Path | None, typer.Option("--image", help="A picture.")] = None,
    points: Annotated[
        Path | None, typer.Option("--points", help="A mesh or point cloud file.")
    ] = None,
    embedding: Annotated[
        Path | None,
        typer.Option("--embedding", help="A .npy file of one vector in the index's space."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="The model (default: the one the index records)."),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Results shown.")] = 10,
    against: Annotated[
        str, typer.Option("--against", help="points or views (default: views for an image).")
    ] = "",
) -> None:
    """The best objects of an index for a text, an image, a shape or an embedding (or several).

    Several queries: their scores are averaged."""
    from cg3d.app.api import check_shape_file, check_top, load
    from cg3d.app.index import check_against, open_index
    from cg3d.formats.retrieval import read_retrieval

    # each option checked, by its name, before the index's model loads
    check_top(top, "--top")
    check_against(against or None, "--against")
    if image is not None:
        require_regular_file(image, f"--image: no such file {image}", "--image")
    if points is not None:
        require_regular_file(points, f"--points: no such file {points}", "--points")
        check_shape_file(points)
    vector = read_embedding(embedding) if embedding is not None else None
    read_retrieval(index)  # a folder that is no index: one line before the model loads
    model = load(checkpoint) if checkpoint else None
    hits = open_index(index, model).search(
        text=text or None,
        image=image,
        points=points,
        embedding=vector,
        top=top,
        against=against or None,
    )
    table = Table("rank", "id", "class", "split", "score", title=str(index))
    for rank, hit in enumerate(hits, start=1):
        names = (str(name) for name in (hit.id, hit.class_name, hit.split))
        table.add_row(str(rank), *names, f"{hit.score:.4f}")
    console.print(table)


def read_embedding(path: Path) -> "np.ndarray":
    """The (D,) vector of a .npy file (no pickle); UsageError naming `--embedding` otherwise."""
    import numpy as np

    from cg3d.formats.npy import read_npy

    try:
        vector = read_npy(path)
    except FileNotFoundError:
        raise UsageError(f"--embedding: no such file {path}") from None
    except OSError as error:  # unreadable (permissions, I/O)
        raise UsageError(f"--embedding: {path}: {error.strerror or error}") from None
    except ValueError as error:  # not a .npy file, or an object array that would need pickle
        raise UsageError(f"--embedding: {path} is not a numeric .npy array ({error})") from None
    if vector.dtype.kind not in "fiu" or vector.squeeze().ndim != 1:
        raise UsageError(
            f"--embedding: {path} holds a {vector.dtype} array of shape {vector.shape}, "
            "not one vector"
        )
    return vector.astype(np.float32).reshape(-1)


@with_params(DemoConfig, "demo")
def demo_command(
    checkpoint: Checkpoint,
    config: DemoConfig,
    index: Annotated[
        Path | None, typer.Option("--index", help="An index folder to search (cg3d index).")
    ] = None,
) -> None:
    """A local web page (127.0.0.1): classify an upload, search the index by text or image."""
    from cg3d.errors import require

    if config.views:  # an upload's views: the first upload found no Blender
        require("bpy")
    from cg3d.app.demo import serve

    serve(checkpoint, index, config)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.command("classify")(classify_command)
    app.command("embed")(embed_command)
    app.command("index")(index_command)
    app.command("search")(search_command)
    app.command("demo")(demo_command)
