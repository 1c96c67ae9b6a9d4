"""`cg3d` subcommands of the pipeline area (thin wrappers over stage functions)."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.command("meshes")(meshes)
    app.command("sample")(sample)
    app.command("caption")(caption)
    app.command("pack")(pack)
    app.command("verify")(verify)


class Switch(StrEnum):
    """A true/false value: DVC templates params.yaml booleans as `true` / `false`."""

    true = "true"
    false = "false"


def meshes(
    out: Annotated[Path, typer.Option(help="Folder for manifest.parquet and classes.json.")],
    source: Annotated[
        str, typer.Option(help="synthetic, modelnet, shapenet, objaverse or folder.")
    ] = "synthetic",
    root: Annotated[str, typer.Option(help="The source's folder (not for synthetic).")] = "",
    per_class: Annotated[
        int,
        typer.Option(
            help="synthetic: objects per class (0: 60); others: at most this many (0: all)."
        ),
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic shapes and of splits.")] = 0,
    test_fraction: Annotated[
        float, typer.Option(help="Share of each class in test, for seeded splits.")
    ] = 0.2,
    split_file: Annotated[
        str, typer.Option(help="shapenet: all.csv, or a folder with train.txt and test.txt.")
    ] = "",
    annotations: Annotated[
        str, typer.Option(help="objaverse: JSON of category → uid list (LVIS) or uid → category.")
    ] = "",
    chunk_size: Annotated[int, typer.Option(help="Objects per validation chunk.")] = 1000,
    workers: Annotated[int, typer.Option(help="Parallel chunks; 0: one per CPU.")] = 0,
    executor: Annotated[str, typer.Option(help="local (process pool) or ray.")] = "local",
) -> None:
    """List a mesh source, validate every mesh, and write the manifest (failures included)."""
    from rich import print as rprint

    from cg3d.config import from_arguments
    from cg3d.pipeline.sources import MeshesConfig, build_manifest

    config = from_arguments(MeshesConfig, locals())
    summary = build_manifest(config, out)
    ok = summary.counts.get("ok", 0)
    failed = ", ".join(f"{k} {n}" for k, n in sorted(summary.counts.items()) if k != "ok")
    rprint(
        f"{summary.objects} objects from {source} in {len(summary.classes)} classes into {out}: "
        f"ok {ok}; failed {summary.objects - ok}{f' ({failed})' if failed else ''} "
        f"({summary.chunks_run} of {summary.chunks_total} chunks validated, the rest already done)"
    )


def sample(
    meshes: Annotated[Path, typer.Option(help="Output folder of `cg3d meshes`.")],
    out: Annotated[Path, typer.Option(help="Folder for part-XXXXX.parquet and failures.")],
    points: Annotated[
        int, typer.Option(help="Points per object (farthest point sampling).")
    ] = 8192,
    normals: Annotated[Switch, typer.Option(help="Also store face normals (N×6).")] = Switch.false,
    chunk_size: Annotated[int, typer.Option(help="Objects per part file.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the per-object random generators.")] = 0,
    workers: Annotated[int, typer.Option(help="Parallel chunks; 0: one per CPU.")] = 0,
    executor: Annotated[str, typer.Option(help="local (process pool) or ray.")] = "local",
) -> None:
    """Sample point clouds from meshes: area-weighted surface samples, then farthest point sampling."""
    from rich import print as rprint

    from cg3d.config import from_arguments
    from cg3d.formats.failures import summarize
    from cg3d.pipeline.sample import SampleConfig, sample_points

    config = from_arguments(SampleConfig, locals() | {"normals": normals is Switch.true})
    summary = sample_points(meshes, out, config)
    kinds = ", ".join(f"{kind} {n}" for kind, n in summarize(summary.failures).most_common())
    rprint(
        f"sampled {summary.sampled}/{summary.objects} objects into {out} "
        f"({summary.chunks_run} chunks computed, {summary.chunks_total - summary.chunks_run} "
        "already done); "
        f"failed {len(summary.failures)}{f' ({kinds})' if kinds else ''}; "
        f"{summary.skipped_upstream} skipped, failed at the meshes stage"
    )


def caption(
    meshes: Annotated[Path, typer.Option(help="Output folder of `cg3d meshes`.")],
    out: Annotated[Path, typer.Option(help="Folder for captions.parquet and failures.")],
    templates: Annotated[
        str, typer.Option(help="cg3d (63 training templates) or ulip64 (64 zero-shot).")
    ] = "cg3d",
    seed: Annotated[int, typer.Option(help="Seed of the per-object caption order.")] = 0,
) -> None:
    """Captions per object: class names and synonyms in templates, plus free-text names."""
    from rich import print as rprint

    from cg3d.pipeline.captions import CaptionConfig, caption_objects

    summary = caption_objects(meshes, out, CaptionConfig(templates=templates, seed=seed))
    rprint(
        f"captioned {summary.captioned}/{summary.objects} objects into {out}; "
        f"{summary.failures} carried forward as failed at the meshes stage"
    )


def pack(
    meshes: Annotated[Path, typer.Option(help="Output folder of `cg3d meshes`.")],
    points: Annotated[Path, typer.Option(help="Output folder of `cg3d sample`.")],
    renders: Annotated[Path, typer.Option(help="Output folder of `cg3d render`.")],
    captions: Annotated[Path, typer.Option(help="Output folder of `cg3d caption`.")],
    out: Annotated[Path, typer.Option(help="Folder for {train,test}/shard-*.tar and index.json.")],
    shard_size: Annotated[int, typer.Option(help="Samples per shard.")] = 1000,
) -> None:
    """Pack points, views and captions into WebDataset shards with an index of checksums."""
    from rich import print as rprint

    from cg3d.formats.failures import summarize
    from cg3d.pipeline.pack import PackConfig, pack_shards

    summary = pack_shards(meshes, points, renders, captions, out, PackConfig(shard_size=shard_size))
    stages = ", ".join(f"{s} {n}" for s, n in summarize(summary.failures, "stage").most_common())
    written = "; ".join(
        f"{split} {summary.samples[split]} samples in {summary.shards[split]} shards"
        for split in summary.samples
    )
    rprint(
        f"packed into {out}: {written}; left out {len(summary.failures)} failed objects"
        f"{f' ({stages})' if stages else ''}, listed in failures.parquet"
    )


def verify(
    shards: Annotated[Path, typer.Argument(help="Output folder of `cg3d pack`.")],
) -> None:
    """Re-read every shard: checksums and counts against index.json, every sample decoded."""
    from rich import print as rprint

    from cg3d.pipeline.verify import verify_shards

    report = verify_shards(shards)
    for problem in report.problems:
        typer.echo(f"bad {problem}")
    if report.problems:
        raise typer.Exit(1)
    rprint(f"ok: {report.shards} shards, {report.samples} samples in {shards}")
