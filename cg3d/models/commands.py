"""`cg3d` subcommands of the model library (thin wrappers over cg3d.models functions)."""

from pathlib import Path
from typing import Annotated

import typer

from cg3d.terminal import say


def export(
    checkpoint: Annotated[
        Path, typer.Option(help="Checkpoint to export, e.g. runs/train/last.pt.")
    ],
    out: Annotated[
        Path, typer.Option(help="File to write, e.g. model.pt; with --format hub, a folder.")
    ],
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
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="pt: one checkpoint file; hub: a folder of config.json, model.safetensors "
            "(no pickle) and a README.md model card, which cg3d.load reads too.",
        ),
    ] = "pt",
    measured: Annotated[
        list[Path] | None,
        typer.Option(
            "--measured",
            help="hub: our numbers for the card, from a cg3d benchmark JSON or a cg3d eval "
            "zeroshot metrics.json (repeatable); the leakage audit they record goes in too "
            "(benchmark --audits, zeroshot --audit: were the benchmark's objects in training).",
        ),
    ] = None,
) -> None:
    """Write a checkpoint's model without its training state; --embed-clip makes it self-contained.

    --format hub writes a folder loadable without pickle, with a model card.
    """
    from cg3d.errors import UsageError
    from cg3d.files import (
        check_name_allowed,
        check_not_special,
        check_not_the_input,
        check_out_dir,
    )
    from cg3d.models.checkpoint import export_checkpoint

    if format not in ("pt", "hub"):
        raise UsageError(f"--format must be pt or hub, got {format!r}")
    if measured and format != "hub":  # a pt file has no card: the numbers went nowhere, exit 0
        raise UsageError("--measured goes in a model card: give --format hub")
    # a training run's last.pt, rewritten without its training state: its resume is lost
    check_not_the_input(out, checkpoint, "--checkpoint", "export")
    if format == "hub":
        _export_hub(checkpoint, out, embed_clip, clip_pretrained, measured or [])
        return

    if out.is_dir():  # the rename at the end would fail, after CLIP's weights were loaded
        raise UsageError(f"--out: {out} is a folder; name the file to write, e.g. {out}/model.pt")
    check_out_dir(out.parent)  # before CLIP's weights are loaded: a folder that cannot be written
    check_not_special(out, "--out")
    check_name_allowed(out)  # and a name its disk refuses (exFAT: `a:b.pt`)
    export_checkpoint(checkpoint, out, embed_clip=embed_clip, clip_pretrained=clip_pretrained)
    kind = "self-contained, CLIP included" if embed_clip else "CLIP weights referenced"
    say(f"wrote {out} ({kind}, {out.stat().st_size / 2**20:.1f} MiB)")


def _export_hub(
    checkpoint: Path,
    out: Path,
    embed_clip: bool,
    clip_pretrained: str | None,
    measured: list[Path],
) -> None:
    from cg3d.errors import UsageError
    from cg3d.models.hub import export_hub

    if out.is_file():
        raise UsageError(f"--out: {out} is a file; --format hub writes a folder")
    # export_hub holds OUT's output lock (which checks the folder can be written) throughout
    config = export_hub(checkpoint, out, clip_pretrained, embed_clip, measured)
    teacher = config["teacher"]
    say(
        f"wrote {out}/: config.json, model.safetensors, README.md ({config['encoder']}, "
        f"teacher {teacher['model']}/{teacher['pretrained']}, protocol {config['protocol']})"
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.command()(export)
