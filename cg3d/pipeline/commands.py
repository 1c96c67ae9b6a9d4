"""`cg3d` subcommands of the pipeline area (thin wrappers over stage functions)."""

from pathlib import Path
from typing import Annotated

import typer

from cg3d import terminal
from cg3d.errors import UsageError, printable
from cg3d.files import json_text
from cg3d.options import with_params
from cg3d.params import CaptionConfig, MeshesConfig, PackConfig, SampleConfig
from cg3d.terminal import say


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.command("meshes")(meshes)
    app.command("sample")(sample)
    app.command("caption")(caption)
    app.command("pack")(pack)
    app.command("verify")(verify)
    app.command("inspect")(inspect_command)


@with_params(MeshesConfig, "meshes")
def meshes(
    out: Annotated[Path, typer.Option(help="Folder for manifest.parquet and classes.json.")],
    config: MeshesConfig,
    params_file: Path | None = None,
) -> None:
    """List a mesh source, validate every mesh, and write the manifest (failures included)."""

    from cg3d.errors import require
    from cg3d.pipeline.chunks import require_executor
    from cg3d.pipeline.sources import build_manifest

    require("trimesh")
    require_executor(config.executor)  # before --out is made
    summary = build_manifest(config, out)
    if params_file is not None:
        check_training_batch(out, params_file)
    ok = summary.counts.get("ok", 0)
    failed = ", ".join(f"{k} {n}" for k, n in sorted(summary.counts.items()) if k != "ok")
    # ok, but read without a material or texture it names: said here, where a researcher
    # looks first, not only in the manifest
    lacking = (
        f" ({summary.lacking} naming an MTL or texture the source lacks, read without it: "
        f"`cg3d inspect {out}` lists them)"
        if summary.lacking
        else ""
    )
    say(
        f"{summary.objects} objects from {config.source} in {len(summary.classes)} classes into "
        f"{out}: ok {ok}{lacking}; failed {summary.objects - ok}{f' ({failed})' if failed else ''} "
        f"({summary.chunks_run} of {summary.chunks_total} chunks validated, the rest already done)"
        + (f"; {summary.excluded} excluded by meshes.exclude" if config.exclude else "")
    )


def check_training_batch(meshes_dir: Path, params_file: Path) -> None:
    """Issue 26: a data set too small for the `train` section's batch failed only at train,
    after every data stage. The manifest's ok training objects are an upper bound of the
    training samples: fewer than one update is a UsageError now, naming the fix."""
    from cg3d.formats.manifest import manifest_rows
    from cg3d.params import TrainConfig, batch_problem, load_section

    train = load_section(TrainConfig, "train", params_file)
    objects = sum(
        1
        for row in manifest_rows(meshes_dir, ["split", "status"])
        if row["split"] == "train" and row["status"] == "ok"
    )
    problem = batch_problem(train, objects, f"{meshes_dir} (cg3d meshes)")
    if problem:
        raise UsageError(f"{problem} ({params_file}); no later stage can train on it")


@with_params(SampleConfig, "sample")
def sample(
    meshes: Annotated[Path, typer.Option(help="Output folder of `cg3d meshes`.")],
    out: Annotated[Path, typer.Option(help="Folder for part-XXXXX.parquet and failures.")],
    config: SampleConfig,
) -> None:
    """Sample point clouds from meshes: area-weighted surface samples, then farthest point sampling."""

    from cg3d.errors import require
    from cg3d.formats.failures import summarize
    from cg3d.pipeline.chunks import require_executor
    from cg3d.pipeline.sample import sample_points

    # fpsample is imported per object in the workers: it was a failure row each
    require("trimesh", *(["fpsample"] if config.fps == "bucket" else []))
    require_executor(config.executor)  # before --out is made
    summary = sample_points(meshes, out, config)
    say(
        f"sampled {summary.sampled}/{summary.objects} objects into {out} "
        f"({summary.chunks_run} chunks computed, {summary.chunks_total - summary.chunks_run} "
        "already done); "
        f"failed {len(summary.failures)}{summarize(summary.failures)}; "
        f"{summary.skipped_upstream} skipped, failed at the meshes stage"
    )


@with_params(CaptionConfig, "caption")
def caption(
    meshes: Annotated[Path, typer.Option(help="Output folder of `cg3d meshes`.")],
    out: Annotated[Path, typer.Option(help="Folder for captions.parquet and failures.")],
    config: CaptionConfig,
) -> None:
    """Captions per object: class names (and synonyms) in templates, plus free-text names."""

    from cg3d.pipeline.captions import caption_objects

    summary = caption_objects(meshes, out, config)
    say(
        f"captioned {summary.captioned}/{summary.objects} objects into {out}; "
        f"{summary.failures - summary.refused} carried forward as failed at the meshes stage"
        + (f"; {summary.refused} failed here (too many synonyms)" if summary.refused else "")
    )


@with_params(PackConfig, "pack")
def pack(
    meshes: Annotated[Path, typer.Option(help="Output folder of `cg3d meshes`.")],
    points: Annotated[Path, typer.Option(help="Output folder of `cg3d sample`.")],
    renders: Annotated[Path, typer.Option(help="Output folder of `cg3d render`.")],
    captions: Annotated[Path, typer.Option(help="Output folder of `cg3d caption`.")],
    out: Annotated[Path, typer.Option(help="Folder for {train,test}/shard-*.tar and index.json.")],
    config: PackConfig,
) -> None:
    """Pack points, views and captions into WebDataset shards with an index of checksums."""

    from cg3d.formats.failures import summarize
    from cg3d.pipeline.pack import pack_shards

    summary = pack_shards(meshes, points, renders, captions, out, config)
    written = "; ".join(
        f"{split} {summary.samples[split]} samples in {summary.shards[split]} shards"
        for split in summary.samples
    )
    say(
        f"packed into {out}: {written}; left out {len(summary.failures)} failed objects"
        f"{summarize(summary.failures, 'stage')}, listed in failures.parquet"
    )


def verify(
    shards: Annotated[
        str,
        typer.Argument(
            help="Output of `cg3d pack`: a folder, an http(s):// URL or a pipe: prefix."
        ),
    ],
) -> None:
    """Re-read every shard: checksums and counts against index.json, every sample decoded."""

    from cg3d.pipeline.verify import verify_shards

    report = verify_shards(shards)
    for problem in report.problems:
        say(f"bad {problem}")
    if report.problems:
        raise typer.Exit(1)
    say(f"ok: {report.shards} shards, {report.samples} samples in {shards}")


def inspect_command(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="A stage output (data/meshes, points, render, captions), shards, a run, results "
            "or a `cg3d index` folder.",
        ),
    ],
    ids: Annotated[
        bool, typer.Option("--ids", help="Print every id, one a line (for `cg3d show`), only.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Everything found, as JSON.")] = False,
    meshes: Annotated[
        Path | None,
        typer.Option(help="The meshes folder that names the classes (default: DIR/../meshes)."),
    ] = None,
    failures: Annotated[
        int,
        typer.Option(
            help="Failures (and objects lacking a file they name) listed (0: all).", min=0
        ),
    ] = 20,
) -> None:
    """What a folder holds: ids, per-class counts, failures with reasons, and what made it."""

    from rich.table import Table

    from cg3d.pipeline.inspect import inspect_folder

    found = inspect_folder(folder, meshes)
    console = terminal.console(highlight=False, soft_wrap=True)
    if ids:
        for object_id in found.ids:
            print(printable(object_id))
        return
    if as_json:
        print(json_text(found.as_dict(), indent=2, default=str))
        return
    noun = "classes" if found.kind == "run" else "ids"
    console.print(found.headline())
    if found.ids:
        shown = found.ids[:3] + (["…"] if len(found.ids) > 4 else []) + found.ids[3:][-1:]
        console.print(f"  {noun}: {', '.join(shown)} (--ids: all)")
    if found.splits:
        splits = ", ".join(f"{name} {n}" for name, n in sorted(found.splits.items()))
        console.print(f"  splits: {splits}")
    if found.classes:
        table = Table("class", "count", title=None, box=None, padding=(0, 2))
        for name, count in sorted(found.classes.items()):
            table.add_row(name, str(count))
        console.print(table)
    if found.failures:
        listed = found.failures[:failures] if failures else found.failures
        table = Table("failed id", "stage", "reason", box=None, padding=(0, 2))
        for row in listed:
            table.add_row(*(str(row[key]) for key in ("id", "stage", "reason")))
        console.print(table)
        if len(listed) < len(found.failures):
            more = len(found.failures) - len(listed)
            console.print(f"  … {more} more (--failures 0: all)")
    if found.lacking:  # ok objects, read without these: bounded as the failures are
        listed = found.lacking[:failures] if failures else found.lacking
        console.print(f"  {len(found.lacking)} ok objects name files the source lacks:")
        table = Table("id", "missing (as the file names it)", box=None, padding=(0, 2))
        for row in listed:
            table.add_row(row["id"], row["missing"])
        console.print(table)
        if len(listed) < len(found.lacking):
            more = len(found.lacking) - len(listed)
            console.print(f"  … {more} more (--failures 0: all)")
    for key, value in {**found.details, **found.made_by}.items():
        text = json_text(value, default=str) if isinstance(value, dict | list) else str(value)
        console.print(f"  {key}: {text}")
