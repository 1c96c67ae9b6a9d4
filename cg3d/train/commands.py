"""`cg3d` subcommands of the train area (thin wrappers over stage functions)."""

from pathlib import Path
from typing import Annotated

import typer


def train(
    shards: Annotated[
        Path, typer.Option(help="Pack stage folder: {train,test}/shard-*.tar, index.json.")
    ],
    out: Annotated[Path, typer.Option(help="Run folder: last.pt, metrics.json, dvclive/.")],
    params: Annotated[
        Path | None,
        typer.Option(
            help="Params file whose `train` section configures the run (default: ./params.yaml if present)."
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (overrides the params file).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size per process.")] = None,
    encoder: Annotated[
        str | None, typer.Option(help="Point encoder: pointtransformer, pointnet2.")
    ] = None,
    clip_model: Annotated[
        str | None, typer.Option(help="open_clip model name, e.g. ViT-B-16.")
    ] = None,
    clip_pretrained: Annotated[
        str | None, typer.Option(help="open_clip tag (e.g. openai), a checkpoint file, or none.")
    ] = None,
    require_pretrained: Annotated[
        bool,
        typer.Option(
            "--require-pretrained", help="Fail instead of training with a random-init CLIP."
        ),
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")] = False,
) -> None:
    """Train the point encoder and visual prompts against CLIP (torchrun for several processes)."""
    from cg3d.config import from_dict, load_config
    from cg3d.train.loop import TrainConfig, train_stage

    overrides = dict(
        epochs=epochs,
        batch_size=batch_size,
        encoder=encoder,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        require_pretrained=require_pretrained or None,
    )
    if params is None and Path("params.yaml").is_file():
        params = Path("params.yaml")
    if params is None:
        config = from_dict(
            TrainConfig, {k: v for k, v in overrides.items() if v is not None}, "train"
        )
    else:
        config = load_config(TrainConfig, "train", params, **overrides)
    train_stage(shards, out, config, resume=resume)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.command()(train)
