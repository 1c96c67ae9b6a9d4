"""`cg3d` subcommands of the app area (thin wrappers over `cg3d.app`).

cg3d classify   top labels of a user's mesh or point cloud
cg3d index      embed every object of a shard set once into a retrieval index
cg3d search     the best objects of an index for a text, an image, a shape or an embedding
cg3d demo       the local web demo (classify an upload, search the index)
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from cg3d.errors import UsageError
from cg3d.options import with_params
from cg3d.params import DemoConfig, IndexConfig

if TYPE_CHECKING:
    import numpy as np

console = Console()

Checkpoint = Annotated[
    Path, typer.Option("--checkpoint", help="A CG3D checkpoint (cg3d train's last.pt).")
]


def classify_command(
    path: Annotated[
        Path,
        typer.Argument(
            help="A mesh (obj, ply, off, stl, glb…) or point cloud (npy, txt, xyz, ply)."
        ),
    ],
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
    top: Annotated[int, typer.Option("--top")] = 5,
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
) -> None:
    """Top labels of a mesh or point cloud, sampled and normalised as the pipeline does."""
    from cg3d.app.api import check_shape_file, check_up_axis, load, read_labels_file
    from cg3d.eval.protocols import get_protocol

    if labels and labels_file is not None:
        raise UsageError("--labels and --labels-file: give one or the other")
    check_shape_file(path)  # before the model loads: a typo costs no wait
    check_up_axis(up_axis)
    get_protocol(protocol)  # an unknown name fails before the model loads
    if labels_file is not None:
        labels = read_labels_file(labels_file)
    model = load(checkpoint, clip_pretrained=clip_pretrained or None)
    predictions = model.classify(path, labels, top, up_axis, protocol)
    table = Table("rank", "label", "probability", title=str(path))
    for rank, (label, score) in enumerate(predictions, start=1):
        table.add_row(str(rank), label, f"{score:.4f}")
    console.print(table)


@with_params(IndexConfig, "index")
def index_command(
    checkpoint: Checkpoint,
    shards: Annotated[str, typer.Option("--shards", help="`cg3d pack` output: folder or URL.")],
    out: Annotated[Path, typer.Option("--out", help="The index folder (resumes a killed build).")],
    config: IndexConfig,
) -> None:
    """Embed every object of a shard set (points and views) once, for `search` and the demo."""
    from cg3d.app.index import build_index
    from cg3d.files import check_out_dir

    check_out_dir(out)  # before the checkpoint loads: a folder that cannot be written fails now
    built = build_index(checkpoint, shards, out, config)
    console.print(
        f"{built['objects']} objects, {built['views']} views, {built['dim']}-d embeddings "
        f"({built['failures']} samples skipped, see failures.parquet) → {out}",
        markup=False,
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
    """The best objects of an index for a text, an image, a shape and/or an embedding (scores
    averaged)."""
    from cg3d.app.api import load
    from cg3d.app.index import open_index

    vector = read_embedding(embedding) if embedding is not None else None
    model = load(checkpoint) if checkpoint else None
    hits = open_index(index, model).search(
        text=text or None,
        image=image,
        points=points,
        embedding=vector,
        top=top,
        against=against or None,
    )
    table = Table("rank", "id", "class", "split", "score", title=f"{index}")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), hit.id, hit.class_name, hit.split, f"{hit.score:.4f}")
    console.print(table)


def read_embedding(path: Path) -> "np.ndarray":
    """The (D,) vector of a .npy file (no pickle); UsageError naming `--embedding` otherwise."""
    import numpy as np

    try:
        vector = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"--embedding: no such file {path}") from None
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
    from cg3d.app.demo import serve

    serve(checkpoint, index, config)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.command("classify")(classify_command)
    app.command("index")(index_command)
    app.command("search")(search_command)
    app.command("demo")(demo_command)
