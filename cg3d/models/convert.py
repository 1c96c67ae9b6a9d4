"""`cg3d convert`: other projects' checkpoints as ours (thin wrappers over cg3d.models).

cg3d convert cg3d-release   the CG3D authors' released pre-training checkpoints
cg3d convert NAME           a released ULIP, ULIP-2, OpenShape or Uni3D point encoder
                            (ulip-pointbert, ulip2-pointbert, openshape-pointbert,
                            uni3d-{ti,s,b,l,g}: cg3d.models.peers), the point side only
"""

from pathlib import Path
from typing import Annotated

import typer

from cg3d.terminal import say

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
    from cg3d.files import check_not_the_input, check_out_file
    from cg3d.models.checkpoint import save_checkpoint
    from cg3d.models.release import release_model

    check_out_file(out)  # before the release and SLIP's weights are read
    check_not_the_input(out, checkpoint, "--checkpoint", "convert")
    check_not_the_input(out, clip_pretrained, "--clip-pretrained", "convert")
    model = release_model(
        checkpoint, clip_pretrained, n_points, clip_model, allow_pickle=allow_pickle
    )
    save_checkpoint(out, model)  # SLIP's weights stay in their file: `out` names its sha256
    prompts = tuple(model.visual.prompts.shape)
    say(
        f"wrote {out}: {model.config['encoder']} + {model.config['clip_model']} with prompts "
        f"{prompts}, CLIP weights {Path(clip_pretrained).name} (sha256 "
        f"{model.config['clip_weights']['sha256'][:12]}…)"
    )


def _peer_command(name: str) -> None:
    """Register `cg3d convert NAME` for the released model `name` (its card says what it is)."""
    from cg3d.models.cards import get_card

    card = get_card(name)

    def convert(
        checkpoint: Annotated[
            Path, typer.Option(help=f"The released {card.repository} checkpoint file.")
        ],
        out: Annotated[Path, typer.Option(help="Our checkpoint to write, e.g. model.pt.")],
        clip_pretrained: Annotated[
            str | None,
            typer.Option(
                help=f"The teacher's weights, a tag of {card.teacher_model} or a local file "
                f"(recorded by name and sha256); default {card.teacher_pretrained}.",
                show_default=False,
            ),
        ] = None,
        allow_pickle: Annotated[
            bool,
            typer.Option(
                "--allow-pickle",
                help="Read a checkpoint holding other objects (trusted files only).",
            ),
        ] = False,
    ) -> None:
        from cg3d.files import check_not_the_input, check_out_file
        from cg3d.models.peers import convert_peer

        check_out_file(out)  # before the released file (up to GBs) is read
        check_not_the_input(out, checkpoint, "--checkpoint", "convert")
        if clip_pretrained:
            check_not_the_input(out, clip_pretrained, "--clip-pretrained", "convert")
        written = convert_peer(
            name, checkpoint, out, allow_pickle=allow_pickle, clip_pretrained=clip_pretrained
        )
        tensors = sum(key.startswith("point_encoder.") for key in written["model"])
        teacher = written["config"]["clip_weights"]
        weights = teacher.get("tag") or f"{teacher['name']} (sha256 {teacher['sha256'][:12]}…)"
        say(
            f"wrote {out}: {card.encoder} ({tensors} tensors), teacher {card.teacher_model} "
            f"{weights} (not embedded), protocol {card.protocol}"
        )

    convert.__doc__ = (
        f"{card.repository}'s released {name} as our checkpoint (point side; teacher "
        f"{card.teacher_model} named, not embedded)."
    )
    convert_app.command(name)(convert)


# The released models of other projects `cg3d convert` takes (cg3d.models.peers.LAYOUTS and
# their cards), named here so that the CLI lists them without importing torch
PEER_MODELS = (
    "ulip-pointbert",
    "ulip2-pointbert",
    "openshape-pointbert",
    "uni3d-ti",
    "uni3d-s",
    "uni3d-b",
    "uni3d-l",
    "uni3d-g",
)
for _name in PEER_MODELS:
    _peer_command(_name)


def register(app: typer.Typer) -> None:
    """Add `cg3d convert` to the `cg3d` app."""
    app.add_typer(convert_app, name="convert")
