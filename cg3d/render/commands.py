"""`cg3d` subcommands of the render area (thin wrappers over stage functions)."""

from pathlib import Path
from typing import Annotated

import typer

from cg3d.options import with_params
from cg3d.params import RenderConfig
from cg3d.terminal import say


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.command("render")(render)
    app.command("show")(show)


@with_params(RenderConfig, "render")
def render(
    meshes: Annotated[Path, typer.Option(help="Output folder of `cg3d meshes`.")],
    out: Annotated[Path, typer.Option(help="Folder for part-XXXXX.tar and failures.")],
    config: RenderConfig,
) -> None:
    """Render every object from several orbit views with Blender (headless, persistent workers)."""

    from cg3d.errors import require
    from cg3d.formats.failures import summarize
    from cg3d.pipeline.chunks import require_executor
    from cg3d.render.stage import render_meshes

    # bpy is imported by the Blender workers only: their start-up crash was a traceback
    require("bpy")
    require_executor(config.executor)
    summary = render_meshes(meshes, out, config)
    rate = summary.views / max(summary.seconds, 1e-9)
    say(
        f"rendered {summary.rendered}/{summary.objects} objects into {out} "
        f"({summary.views} views at {rate:.1f} views/s; {summary.chunks_run} of "
        f"{summary.chunks_total} chunks computed, the rest already done); "
        f"failed {len(summary.failures)}{summarize(summary.failures)}; "
        f"{summary.skipped_upstream} skipped, failed at the meshes stage"
    )


def show(
    object_id: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="Object id, a unique start of one, or a unique part (chair-003); "
            "`cg3d inspect RENDERS --ids` lists them.",
        ),
    ],
    renders: Annotated[Path, typer.Option(help="Output folder of `cg3d render`.")],
    out: Annotated[Path, typer.Option(help="The PNG to write, or a folder for ID.png.")],
    points: Annotated[
        Path | None, typer.Option(help="Output folder of `cg3d sample`: project its points.")
    ] = None,
) -> None:
    """Write a contact sheet PNG of an object's views (with its points projected when given)."""
    from cg3d.files import output_lock
    from cg3d.formats.owner import check_owner
    from cg3d.render.show import sheet_path
    from cg3d.render.show import show as write_sheet

    folder = sheet_path(out, object_id).parent  # the folder the sheet goes into
    # a stage's folder (data/render) is a DVC output: a sheet there changes its hash, and the
    # next `dvc repro` reruns the stage
    check_owner(folder, "show", "would add its PNG to it")
    # The lock comes first (a second run is refused before any input is read) and makes the
    # folder, checked by check_out_dir (a file there is one line naming --out); an unknown id
    # or a damaged part then leaves no empty folder behind.
    with output_lock(folder):
        path = write_sheet(object_id, renders, out, points)
    say(f"wrote {path}")
