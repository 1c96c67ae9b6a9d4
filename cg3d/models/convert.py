"""`cg3d convert`: other projects' checkpoints as ours (thin wrappers over cg3d.models).

cg3d convert cg3d-release   the CG3D authors' released pre-training checkpoints
"""

from pathlib import Path
from typing import Annotated

import typer

convert_app = typer.Typer(
    help="Turn other projects' checkpoints into CG3D checkpoints.", no_args_is_help=True
)


@convert_app.command("cg3d-release")
def cg3d_release(
    checkpoint: Annotated[
        Path,
        typer.Option(help="A released CG3D checkpoint (base_model + visual_clip_model), ckpt.pth."),
    ],
    clip_pretrained: Annotated[
        str, typer.Option(help="SLIP's weights file it was trained on: slip_base_100ep.pt.")
    ],
    out: Annotated[Path, typer.Option(help="Our checkpoint to write, e.g. cg3d_release.pt.")],
    n_points: Annotated[
        int, typer.Option(min=1, help="Points the model takes: 8192, or 1024 for that release.")
    ] = 8192,
    clip_model: Annotated[
        str, typer.Option(help="The SLIP model of CLIP_PRETRAINED (small ones are for tests).")
    ] = "SLIP-ViT-B-16",
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle", help="Read a checkpoint holding other objects (trusted files only)."
        ),
    ] = False,
) -> None:
    """The CG3D authors' released checkpoint (1024 or 8192 points) as our checkpoint.

    Their PointTransformer, for cg3d eval, cg3d.load, classify, index, demo and finetune."""
    from cg3d.models.release import convert_release

    model = convert_release(
        checkpoint, clip_pretrained, out, n_points, clip_model, allow_pickle=allow_pickle
    )
    prompts = tuple(model.visual.prompts.shape)
    typer.echo(
        f"wrote {out}: {model.config['encoder']} + {model.config['clip_model']} with prompts "
        f"{prompts}, CLIP weights {Path(clip_pretrained).name} (sha256 "
        f"{model.config['clip_weights']['sha256'][:12]}…)"
    )


def register(app: typer.Typer) -> None:
    """Add `cg3d convert` to the `cg3d` app."""
    app.add_typer(convert_app, name="convert")
