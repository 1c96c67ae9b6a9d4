"""`cg3d` subcommands of the train area (thin wrappers over stage functions)."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cg3d.options import with_params
from cg3d.params import TrainConfig
from cg3d.terminal import say


class ResumeMode(StrEnum):
    """What `cg3d train` does with a checkpoint already in OUT (cg3d.train.resume)."""

    never = "never"
    auto = "auto"
    always = "always"


@with_params(TrainConfig, "train")
def train(
    shards: Annotated[
        str,
        typer.Option(
            help="Pack stage output: a folder, an http(s):// URL or a pipe: command prefix."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Run folder: last.pt, metrics.json, dvclive/.")],
    config: TrainConfig,
    resume: Annotated[
        ResumeMode,
        typer.Option(
            help="never: start over; always: continue OUT/last.pt (refusing another run's); "
            "auto: continue it when it is this run's (same params and shards), else start over."
        ),
    ] = ResumeMode.never,
    params_file: Path | None = None,
) -> None:
    """Train the point encoder and visual prompts against CLIP.

    Under torchrun for several processes (the only command that runs under a launcher); its
    variables and CG3D_JOIN_TIMEOUT_S: README, "The launcher's variables"."""
    from cg3d.errors import require
    from cg3d.params import write_resolved
    from cg3d.train.loop import open_run, train_stage

    # imported once the run is open (its loader, its views' decoder, its FPS, its CLIP, its
    # log): a run folder was left
    require("webdataset", "torchcodec", "scipy", "open_clip", "timm", "dvclive")

    if params_file is None:  # issue 26: a bare command trained another model than params.yaml's
        say(
            f"no --params: the schema defaults of cg3d/params.py ({config.clip_model}/"
            f"{config.clip_pretrained}, {config.encoder}, {config.n_points} points, "
            f"{config.epochs} epochs, with the options given), not params.yaml's CPU setting: "
            "add --params params.yaml for that"
        )

    # locked, checked and marked train's before params.yaml, its first file: a refused run
    # writes none, a second run into OUT fails before it touches the first's
    with open_run(shards, out):
        write_resolved(out / "params.yaml", "train", config)
        train_stage(shards, out, config, resume=resume.value)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.command()(train)
