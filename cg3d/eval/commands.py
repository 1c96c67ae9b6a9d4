"""`cg3d` subcommands of the eval area (thin wrappers over stage functions).

cg3d eval zeroshot    zero-shot classification on a benchmark or our shards
cg3d eval retrieval   point↔text and point↔image retrieval on our shards
cg3d finetune         full fine-tuning / linear probe / few-shot classification
cg3d scene-query      heat map of a text query over a scene point cloud
cg3d audit            training and test shapes that are the same file or the same shape
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cg3d import terminal
from cg3d.files import (
    check_companion_name,
    check_name_allowed,
    check_out_dir,
    file_lock,
    locks_folder,
)
from cg3d.options import with_params
from cg3d.params import FinetuneConfig, RetrievalConfig, SceneConfig, ZeroShotConfig

console = terminal.console()
eval_app = typer.Typer(
    help="Evaluate a trained checkpoint: zero-shot and retrieval.", no_args_is_help=True
)

Checkpoint = Annotated[
    Path, typer.Option("--checkpoint", help="A CG3D checkpoint (cg3d train's last.pt).")
]
Out = Annotated[Path, typer.Option("--out", help="Output folder (metrics.json and plots).")]


@eval_app.command("zeroshot")
@with_params(ZeroShotConfig, "eval.zeroshot")
@locks_folder("out")  # one run at a time into OUT: a second is refused at once
def zeroshot_command(
    checkpoint: Checkpoint,
    out: Out,
    config: ZeroShotConfig,
    shards: Annotated[
        str | None,
        typer.Option("--shards", help="Our labelled shards (same as --dataset shards --root DIR)."),
    ] = None,
    text_features: Annotated[
        Path | None,
        typer.Option(
            "--text-features",
            help="Class text features FILE.npy (+ FILE.json naming its classes), e.g. from "
            "`cg3d eval text-features`, instead of the model's text tower.",
        ),
    ] = None,
) -> None:
    """Zero-shot classification: top-1/3/5 and class-mean accuracy, confusion matrix.

    Top-k is reported for k below the class count; above 100 classes a table of the most
    frequent confusions replaces the matrix.

    --dataset: modelnet40 | modelnet10 | ulip_modelnet40 | scanobjectnn | shapenet55 |
    objaverse-lvis (--root: our shards of the LVIS objects, or OpenShape's LVIS split with
    --allow-pickle) | shards.
    """
    from cg3d.eval.zeroshot import zeroshot

    config = _with_shards(config, shards)
    metrics = zeroshot(checkpoint, out, config, text_features=text_features)
    console.print(
        f"{metrics['dataset']} ({metrics['variant']}), {metrics['n_shapes']} shapes: top-1 {metrics['top1']:.2f}%  "
        + "".join(f"top-{k} {metrics[f'top{k}']:.2f}%  " for k in (3, 5) if f"top{k}" in metrics)
        + f"class-mean {metrics['class_mean']:.2f}%  [CLIP {metrics['clip_model']}/"
        f"{metrics['clip_weights']}; protocol {metrics['protocol']}] → {out / 'metrics.json'}",
    )


@eval_app.command("text-features")
def text_features_command(
    checkpoint: Checkpoint,
    out: Annotated[
        Path, typer.Option("--out", help="FILE.npy to write (and FILE.json, its class names).")
    ],
    classes: Annotated[
        str | None, typer.Option("--classes", help="Comma-separated class names.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Or a benchmark's classes (as `cg3d eval zeroshot`)."),
    ] = None,
    root: Annotated[Path | None, typer.Option("--root", help="The benchmark's files.")] = None,
    variant: Annotated[str, typer.Option("--variant", help="scanobjectnn's variant.")] = "",
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol", help="Whose templates and class names ('': the one the model names)."
        ),
    ] = "",
    clip_pretrained: Annotated[
        str | None, typer.Option(help="Where the teacher's weights are, if they moved.")
    ] = None,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Allow reading pickled benchmark files.")
    ] = False,
) -> None:
    """Class text features of a model's teacher, written once for `zeroshot --text-features`."""
    from cg3d.errors import UsageError
    from cg3d.eval.textfeatures import benchmark_classes, write_class_features
    from cg3d.formats.textfeatures import sidecar

    if (classes is None) == (dataset is None):
        raise UsageError("give the classes: --classes a,b,c or --dataset NAME --root DIR")
    if dataset is not None and root is None:
        raise UsageError("--dataset needs --root, the benchmark's files")
    check_companion_name(sidecar(out), out)
    # The file locked before any work: two runs into one FILE.npy at once could leave one's
    # rows beside the other's sidecar (the pair is two files, each atomic alone). A second run
    # into it is refused at once; a run writing another file of the folder goes ahead.
    with file_lock(out):
        for written in (out, sidecar(out)):  # a name its disk refuses (exFAT: `a:b.npy`)
            check_name_allowed(written)
        if dataset is not None:
            names = benchmark_classes(dataset, root, variant, allow_pickle)
        else:
            names = [name.strip() for name in (classes or "").split(",") if name.strip()]
        record = write_class_features(checkpoint, out, names, protocol, clip_pretrained)
    console.print(
        f"{record['classes']} classes × {record['dim']} ({record['protocol']}, "
        f"{record['templates']} templates) → {out}",
    )


def _with_shards(config, shards: str | None):
    """`--shards DIR` is `--dataset shards --root DIR`, and excludes another dataset."""
    from dataclasses import replace

    from cg3d.errors import UsageError

    if shards is None:
        return config
    if config.dataset != "shards":
        raise UsageError("--shards cannot be combined with --dataset other than shards")
    return replace(config, root=shards)


@eval_app.command("retrieval")
@with_params(RetrievalConfig, "eval.retrieval")
@locks_folder("out")  # one run at a time into OUT: a second is refused at once
def retrieval_command(
    checkpoint: Checkpoint,
    shards: Annotated[
        str, typer.Option("--shards", help="Our shards (with views and captions): folder or URL.")
    ],
    out: Out,
    config: RetrievalConfig,
) -> None:
    """Point↔text and point↔image retrieval: R@1, R@5, R@10 and mAP."""
    from cg3d.eval.retrieval import retrieval

    metrics = retrieval(checkpoint, shards, out, config)
    table = Table(
        "direction", "R@1", "R@5", "R@10", "mAP", title=f"retrieval, {metrics['n_objects']} objects"
    )
    for name in ("point_to_text", "text_to_point", "point_to_image", "image_to_point"):
        m = metrics[name]
        # an R@K with K at or above the gallery size is not reported: "—"
        cells = (f"{m[k]:.1f}" if k in m else "—" for k in ("R@1", "R@5", "R@10", "mAP"))
        table.add_row(name, *cells)
    console.print(table)


@with_params(FinetuneConfig, "finetune")
@locks_folder("out")  # one run at a time into OUT: a second is refused at once
def finetune_command(
    checkpoint: Checkpoint,
    out: Out,
    config: FinetuneConfig,
    shards: Annotated[
        str | None, typer.Option("--shards", help="Our labelled shards (train and test splits).")
    ] = None,
) -> None:
    """Classification from the pretrained encoder: full fine-tuning, linear probe or few-shot."""
    from cg3d.eval.finetune import finetune

    metrics = finetune(checkpoint, out, _with_shards(config, shards))
    if metrics["mode"] == "full":
        best = metrics["best_test_selected"]
        how = "last epoch"
        aside = (
            f"best epoch chosen on test, optimistic: {best['top1']:.2f}% at epoch {best['epoch']}"
        )
    else:  # the linear probe is fitted once: there is no epoch to choose
        how = "fitted probe"
        aside = f"{metrics['probe']['iterations']} L-BFGS iterations"
    console.print(
        f"{metrics['mode']} ({metrics['shots'] or 'all'} shots), {how}: test top-1 "
        f"{metrics['top1']:.2f}%  class-mean {metrics['class_mean']:.2f}%  ({aside}) → "
        f"{out / 'metrics.json'}",
    )


@with_params(SceneConfig, "scene")
@locks_folder("out")  # one run at a time into OUT: a second is refused at once
def scene_query_command(
    scene: Annotated[
        Path, typer.Argument(help="Scene point cloud: .ply, .npy or .txt (xyz columns).")
    ],
    text: Annotated[str, typer.Option("--text", help='The query, e.g. "a chair".')],
    checkpoint: Checkpoint,
    out: Out,
    config: SceneConfig,
) -> None:
    """Heat map of a text query over a scene (coloured PLY + PNG); prints the best regions."""
    from cg3d.eval.scene import scene_query

    best = scene_query(scene, text, checkpoint, out, config)
    table = Table("region", "score", "centre (x, y, z)", "points", title=f"“{text}”: best regions")
    for region in best:
        table.add_row(
            str(region["region"]),
            f"{region['score']:.4f}",
            ", ".join(f"{v:.2f}" for v in region["centre"]),
            str(region["points"]),
        )
    console.print(table)
    console.print(f"heat map: {out / 'heatmap.ply'}, {out / 'heatmap.png'}")


@locks_folder("out")
def audit_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for pairs.csv and audit.json.")],
    train: Annotated[
        str | None,
        typer.Option("--train", help="Training shards (their train split): folder or URL."),
    ] = None,
    test: Annotated[
        str | None, typer.Option("--test", help="Test shards (their test split): folder or URL.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Or a benchmark reader name (as `cg3d eval zeroshot`)."),
    ] = None,
    root: Annotated[str | None, typer.Option("--root", help="The benchmark's files.")] = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold", help="Same-shape descriptor distance (BENCHMARKS.md: how it was chosen)."
        ),
    ] = 0.04,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle", help="Allow reading pickled benchmark files (trusted only)."
        ),
    ] = False,
    train_list: Annotated[
        Path | None,
        typer.Option(
            "--train-list",
            help="Or a ShapeNet training list (CG3D's train_img.txt: <synset>-<model>.npy lines).",
        ),
    ] = None,
    test_list: Annotated[
        Path | None,
        typer.Option(
            "--test-list", help="With --train-list: the test list (Point-BERT's test.txt)."
        ),
    ] = None,
) -> None:
    """Leakage audit: training and test shapes that are the same file or the same shape.

    For two ShapeNet lists: the ids they share (no geometry needed)."""
    from cg3d.errors import UsageError
    from cg3d.eval.audit import audit, audit_lists

    if train_list is not None or test_list is not None:
        if train_list is None or test_list is None:
            raise UsageError("--train-list and --test-list go together")
        if train is not None or test is not None or dataset is not None:
            raise UsageError("--train-list/--test-list: give no --train, --test or --dataset")
        summary = audit_lists(train_list, test_list, out)
        console.print(
            f"{summary['train_shapes']} training and {summary['test_shapes']} test ids: "
            f"{summary['pairs']['same_id']} in both lists, {summary['pairs']['same_model']} "
            f"the same model under another synset; {summary['leaked_test_shapes']} test shapes "
            f"have a training twin → {out}",
        )
        return
    if train is None:
        raise UsageError(
            "give --train SHARDS (with --test or --dataset), or --train-list and --test-list"
        )
    summary = audit(
        train,
        out,
        test_shards=test,
        dataset=dataset,
        root=root,
        threshold=threshold,
        allow_pickle=allow_pickle,
    )
    pairs = ", ".join(f"{kind} {n}" for kind, n in summary["pairs"].items())
    console.print(
        f"{summary['train_shapes']} training and {summary['test_shapes']} test shapes: {pairs}; "
        f"{summary['leaked_test_shapes']} test shapes have a training twin → {out}",
    )


@locks_folder("out")  # a rerun resumes from OUT's JSONs: two at once would mix their tables
def benchmark_command(
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="NAME=WEIGHTS (checkpoint or hub folder) or a model card NAME without weights "
            "(a 'missing weights' row), comma-separated.",
        ),
    ],
    datasets: Annotated[
        str,
        typer.Option(
            "--datasets", help="modelnet40,scanobjectnn:obj_only,objaverse-lvis (zeroshot names)."
        ),
    ],
    roots: Annotated[
        str, typer.Option("--roots", help="Each dataset's files: modelnet40=DIR,scanobjectnn=DIR.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder of the JSONs and results.md/.csv.")],
    audits: Annotated[
        str, typer.Option("--audits", help="`cg3d audit` folders by dataset: modelnet40=DIR.")
    ] = "",
    batch_size: Annotated[int, typer.Option(min=1, help="Shapes per forward pass.")] = 32,
    limit: Annotated[int, typer.Option(min=0, help="First N shapes only (0: all).")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Processes preparing shapes.")] = 1,
    text_cache: Annotated[
        str, typer.Option(help="Folder caching class text features ('': none).")
    ] = ".cache/cg3d/text",
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Allow reading pickled benchmark files.")
    ] = False,
    text_features: Annotated[
        Path | None,
        typer.Option(
            "--text-features",
            help="Folder of class-feature files MODEL__DATASET.npy (+ .json), used instead of "
            "the teacher's text tower where present.",
        ),
    ] = None,
    max_lost: Annotated[
        float,
        typer.Option(
            "--max-lost",
            min=0.0,
            max=1.0,
            help="Largest share of a pair's samples that may be lost (undecodable, outside its "
            "root); past it the pair's row fails, its JSON kept. 1: any.",
        ),
    ] = ZeroShotConfig.max_lost,  # eval.zeroshot.max_lost's default: one rule, one default
) -> None:
    """Every model on every benchmark: one JSON per pair and a table beside the published numbers.

    OUT/<model>__<dataset>.json in clip_benchmark's shape; OUT/results.md and .csv with our
    top-1 beside the card's and the difference. A rerun resumes.
    """
    from cg3d.eval.benchmark import (
        check_result_files,
        check_result_names,
        markdown_table,
        parse_datasets,
        parse_models,
        run_benchmark,
    )

    entries, sets = parse_models(models), parse_datasets(datasets, roots, audits)
    check_result_names(entries, sets)
    check_out_dir(out)
    check_result_files(out, entries, sets)
    config = ZeroShotConfig(
        batch_size=batch_size,
        limit=limit,
        workers=workers,
        text_cache=text_cache,
        allow_pickle=allow_pickle,
        max_lost=max_lost,
    )
    rows = run_benchmark(entries, sets, out, config, text_features)
    # a table of several lines: each line escaped (by the console), the line breaks kept
    console.print(*markdown_table(rows).splitlines(), sep="\n")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.add_typer(eval_app, name="eval")
    app.command("audit")(audit_command)
    app.command("benchmark")(benchmark_command)
    app.command("finetune")(finetune_command)
    app.command("scene-query")(scene_query_command)
