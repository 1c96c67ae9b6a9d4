"""`cg3d` subcommands of the model library (thin wrappers over cg3d.models functions)."""

from pathlib import Path
from typing import Annotated

import typer


def export(
    checkpoint: Annotated[
        Path, typer.Option(help="Checkpoint to export, e.g. runs/train/last.pt.")
    ],
    out: Annotated[Path, typer.Option(help="File to write, e.g. model.pt.")],
    embed_clip: Annotated[
        bool,
        typer.Option(
            "--embed-clip/--no-embed-clip",
            help="Store CLIP's weights in OUT too, so it loads with no CLIP weights around.",
        ),
    ] = False,
    clip_pretrained: Annotated[
        str | None,
        typer.Option(
            help="Where CHECKPOINT's CLIP weights are now (open_clip tag or file), if they moved; "
            "checked against the weights it was trained with."
        ),
    ] = None,
) -> None:
    """Write a checkpoint's model without its training state; --embed-clip makes it self-contained."""
    from cg3d.errors import UsageError
    from cg3d.files import check_out_dir
    from cg3d.models.checkpoint import export_checkpoint

    if out.is_dir():  # the rename at the end would fail, after CLIP's weights were loaded
        raise UsageError(f"--out: {out} is a folder; name the file to write, e.g. {out}/model.pt")
    check_out_dir(out.parent)  # before CLIP's weights are loaded: a folder that cannot be written
    export_checkpoint(checkpoint, out, embed_clip=embed_clip, clip_pretrained=clip_pretrained)
    kind = "self-contained, CLIP included" if embed_clip else "CLIP weights referenced"
    typer.echo(f"wrote {out} ({kind}, {out.stat().st_size / 2**20:.1f} MiB)")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.command()(export)
