"""`cg3d` subcommands of the eval area (thin wrappers over stage functions).

cg3d eval zeroshot    zero-shot classification on a benchmark or our shards
cg3d eval retrieval   point↔text and point↔image retrieval on our shards
cg3d finetune         full fine-tuning / linear probe / few-shot classification
cg3d scene-query      heat map of a text query over a scene point cloud
cg3d classify         top labels of a user's mesh or point cloud
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
eval_app = typer.Typer(
    help="Evaluate a trained checkpoint: zero-shot and retrieval.", no_args_is_help=True
)

Checkpoint = Annotated[
    Path, typer.Option("--checkpoint", help="A CG3D checkpoint (cg3d train's last.pt).")
]
Out = Annotated[Path, typer.Option("--out", help="Output folder (metrics.json and plots).")]
PARAMS_HELP = "params.yaml to read defaults from (section eval.*); CLI options override it."


def _config(cls, section: str, params: Path | None, **overrides):
    """A stage config from params.yaml's eval.<section> (if given) with CLI overrides."""
    from cg3d.config import from_dict, read_params

    values = {}
    if params is not None:
        values = dict((read_params(params).get("eval") or {}).get(section) or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, values, f"eval.{section}")


@eval_app.command("zeroshot")
def zeroshot_command(
    checkpoint: Checkpoint,
    out: Out,
    shards: Annotated[
        Path | None,
        typer.Option("--shards", help="Our labelled shards (same as --dataset shards --root DIR)."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="modelnet40 | modelnet10 | ulip_modelnet40 | scanobjectnn | shapenet55 | shards",
        ),
    ] = None,
    root: Annotated[Path | None, typer.Option("--root", help="The benchmark's files.")] = None,
    split: Annotated[str | None, typer.Option("--split")] = None,
    variant: Annotated[
        str | None, typer.Option("--variant", help="scanobjectnn: obj_only | obj_bg | pb_t50_rs")
    ] = None,
    single_prompt: Annotated[
        str | None,
        typer.Option(
            "--single-prompt",
            help='One template, e.g. "This is a {}" (CG3D parity); default: the 64-template ensemble.',
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="First N shapes only (0 = all).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Processes preparing shapes (FPS) beside the model."),
    ] = None,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle",
            help="Allow reading ULIP's .dat pickle: unpickling a tampered file runs arbitrary code.",
        ),
    ] = False,
    params: Annotated[Path | None, typer.Option("--params", help=PARAMS_HELP)] = None,
) -> None:
    """Zero-shot classification: top-1/top-5/class-mean accuracy and a confusion matrix."""
    from cg3d.errors import UsageError
    from cg3d.eval.zeroshot import ZeroShotConfig, zeroshot

    if shards is not None:
        if dataset not in (None, "shards") or root is not None:
            raise UsageError("--shards cannot be combined with --dataset/--root")
        dataset, root = "shards", shards
    config = _config(
        ZeroShotConfig, "zeroshot", params, dataset=dataset, root=str(root) if root else None, split=split,
        variant=variant, single_prompt=single_prompt, batch_size=batch_size, limit=limit,
        workers=workers, allow_pickle=allow_pickle or None,
    )  # fmt: skip
    metrics = zeroshot(checkpoint, out, config)
    console.print(
        f"{metrics['dataset']} ({metrics['variant']}), {metrics['n_shapes']} shapes: top-1 {metrics['top1']:.2f}%  "
        f"top-5 {metrics['top5']:.2f}%  class-mean {metrics['class_mean']:.2f}%  [CLIP {metrics['clip_model']}/"
        f"{metrics['clip_weights']}] → {out / 'metrics.json'}",
        markup=False,
    )


@eval_app.command("retrieval")
def retrieval_command(
    checkpoint: Checkpoint,
    shards: Annotated[Path, typer.Option("--shards", help="Our shards (with views and captions).")],
    out: Out,
    split: Annotated[str | None, typer.Option("--split")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    grid_queries: Annotated[
        int | None,
        typer.Option("--grid-queries", help="Queries per direction in the picture grid."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="First N objects only (0 = all).")
    ] = None,
    params: Annotated[Path | None, typer.Option("--params", help=PARAMS_HELP)] = None,
) -> None:
    """Point↔text and point↔image retrieval: R@1, R@5, R@10 and mAP."""
    from cg3d.eval.retrieval import RetrievalConfig, retrieval

    config = _config(
        RetrievalConfig,
        "retrieval",
        params,
        split=split,
        batch_size=batch_size,
        grid_queries=grid_queries,
        limit=limit,
    )
    metrics = retrieval(checkpoint, shards, out, config)
    table = Table(
        "direction", "R@1", "R@5", "R@10", "mAP", title=f"retrieval, {metrics['n_objects']} objects"
    )
    for name in ("point_to_text", "text_to_point", "point_to_image", "image_to_point"):
        m = metrics[name]
        table.add_row(name, *(f"{m[k]:.1f}" for k in ("R@1", "R@5", "R@10", "mAP")))
    console.print(table)


def finetune_command(
    checkpoint: Checkpoint,
    out: Out,
    shards: Annotated[
        Path | None, typer.Option("--shards", help="Our labelled shards (train and test splits).")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="A benchmark reader name (see cg3d eval zeroshot)."),
    ] = None,
    root: Annotated[Path | None, typer.Option("--root")] = None,
    variant: Annotated[str | None, typer.Option("--variant")] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="full | linear (linear probe on frozen features).")
    ] = None,
    shots: Annotated[
        int | None, typer.Option("--shots", help="Few-shot: K training shapes per class (0 = all).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    params: Annotated[
        Path | None, typer.Option("--params", help="params.yaml (section finetune).")
    ] = None,
) -> None:
    """Classification from the pretrained encoder: full fine-tuning, linear probe or few-shot."""
    from cg3d.config import from_dict, read_params
    from cg3d.eval.finetune import FinetuneConfig, finetune

    values = dict(read_params(params).get("finetune") or {}) if params else {}
    if shards is not None:
        dataset, root = "shards", shards
    overrides = dict(
        dataset=dataset,
        root=str(root) if root else None,
        variant=variant,
        mode=mode,
        shots=shots,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    metrics = finetune(checkpoint, out, from_dict(FinetuneConfig, values, "finetune"))
    best = metrics["best_test_selected"]
    console.print(
        f"{metrics['mode']} ({metrics['shots'] or 'all'} shots), last epoch: test top-1 "
        f"{metrics['top1']:.2f}%  class-mean {metrics['class_mean']:.2f}%  (best epoch chosen on "
        f"test, optimistic: {best['top1']:.2f}% at epoch {best['epoch']}) → {out / 'metrics.json'}",
        markup=False,
    )


def scene_query_command(
    scene: Annotated[
        Path, typer.Argument(help="Scene point cloud: .ply, .npy or .txt (xyz columns).")
    ],
    text: Annotated[str, typer.Option("--text", help='The query, e.g. "a chair".')],
    checkpoint: Checkpoint,
    out: Out,
    regions: Annotated[
        int, typer.Option("--regions", help="Number of regions (FPS centres).")
    ] = 64,
    region_points: Annotated[
        int, typer.Option("--region-points", help="Scene points per region (kNN of the centre).")
    ] = 4096,
    up_axis: Annotated[str, typer.Option("--up-axis", help="The scene's up axis: y or z.")] = "y",
    top: Annotated[int, typer.Option("--top")] = 5,
) -> None:
    """Heat map of a text query over a scene (coloured PLY + PNG); prints the best regions."""
    from cg3d.eval.scene import SceneConfig, scene_query

    best = scene_query(
        scene,
        text,
        checkpoint,
        out,
        SceneConfig(regions=regions, region_points=region_points, up_axis=up_axis, top=top),
    )
    table = Table("region", "score", "centre (x, y, z)", "points", title=f"“{text}”: best regions")
    for region in best:
        table.add_row(
            str(region["region"]),
            f"{region['score']:.4f}",
            ", ".join(f"{v:.2f}" for v in region["centre"]),
            str(region["points"]),
        )
    console.print(table)
    console.print(f"heat map: {out / 'heatmap.ply'}, {out / 'heatmap.png'}", markup=False)


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
            help="Comma-separated labels or a file with one per line (default: the training classes).",
        ),
    ] = "",
    top: Annotated[int, typer.Option("--top")] = 5,
    up_axis: Annotated[str, typer.Option("--up-axis", help="The file's up axis: y or z.")] = "y",
    single_prompt: Annotated[
        str,
        typer.Option("--single-prompt", help="One template instead of the 64-template ensemble."),
    ] = "",
) -> None:
    """Top labels of a mesh or point cloud, sampled and normalised as the pipeline does."""
    from cg3d.eval.classify import classify

    table = Table("rank", "label", "probability", title=str(path))
    for rank, (label, score) in enumerate(
        classify(path, checkpoint, labels, top, up_axis, single_prompt), start=1
    ):
        table.add_row(str(rank), label, f"{score:.4f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.add_typer(eval_app, name="eval")
    app.command("finetune")(finetune_command)
    app.command("scene-query")(scene_query_command)
    app.command("classify")(classify_command)
