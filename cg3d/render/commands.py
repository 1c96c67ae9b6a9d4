"""`cg3d` subcommands of the render area (thin wrappers over stage functions)."""

from pathlib import Path
from typing import Annotated

import typer

from cg3d.render.config import RenderConfig

DEFAULTS = RenderConfig()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
    app.command("render")(render)
    app.command("show")(show)


def render(
    meshes: Annotated[Path, typer.Option(help="Output folder of `cg3d meshes`.")],
    out: Annotated[Path, typer.Option(help="Folder for part-XXXXX.tar and failures.")],
    views: Annotated[int, typer.Option(help="Views per object.")] = DEFAULTS.views,
    resolution: Annotated[
        int, typer.Option(help="Square image size in pixels.")
    ] = DEFAULTS.resolution,
    engine: Annotated[
        str, typer.Option(help="workbench (fast) or cycles (CPU path tracing).")
    ] = DEFAULTS.engine,
    samples: Annotated[int, typer.Option(help="Cycles samples per pixel.")] = DEFAULTS.samples,
    chunk_size: Annotated[int, typer.Option(help="Objects per part file.")] = DEFAULTS.chunk_size,
    seed: Annotated[int, typer.Option(help="Seed of the per-object cameras.")] = DEFAULTS.seed,
    workers: Annotated[
        int, typer.Option(help="Blender processes; 0: one per CPU.")
    ] = DEFAULTS.workers,
    executor: Annotated[
        str, typer.Option(help="local (threads) or ray (actors).")
    ] = DEFAULTS.executor,
    timeout: Annotated[
        float, typer.Option(help="Seconds per object before its Blender is killed.")
    ] = DEFAULTS.timeout,
    background: Annotated[
        str, typer.Option(help="white (RGB) or transparent (RGBA).")
    ] = DEFAULTS.background,
    elevation_min: Annotated[
        float, typer.Option(help="Lowest camera elevation, degrees.")
    ] = DEFAULTS.elevation_min,
    elevation_max: Annotated[
        float, typer.Option(help="Highest camera elevation, degrees.")
    ] = DEFAULTS.elevation_max,
    azimuth_jitter: Annotated[
        float, typer.Option(help="Random azimuth shift, as a fraction of the even spacing (0–1).")
    ] = DEFAULTS.azimuth_jitter,
    fov_deg: Annotated[
        float, typer.Option(help="Camera field of view, degrees.")
    ] = DEFAULTS.fov_deg,
) -> None:
    """Render every object from several orbit views with Blender (headless, persistent workers)."""
    from rich import print as rprint

    from cg3d.config import from_arguments
    from cg3d.formats.failures import summarize
    from cg3d.render.stage import render_meshes

    config = from_arguments(RenderConfig, locals())
    summary = render_meshes(meshes, out, config)
    kinds = ", ".join(f"{kind} {n}" for kind, n in summarize(summary.failures).most_common())
    rate = summary.views / max(summary.seconds, 1e-9)
    rprint(
        f"rendered {summary.rendered}/{summary.objects} objects into {out} "
        f"({summary.views} views at {rate:.1f} views/s; {summary.chunks_run} of "
        f"{summary.chunks_total} chunks computed, the rest already done); "
        f"failed {len(summary.failures)}{f' ({kinds})' if kinds else ''}; "
        f"{summary.skipped_upstream} skipped, failed at the meshes stage"
    )


def show(
    object_id: Annotated[str, typer.Argument(metavar="ID", help="Object id.")],
    renders: Annotated[Path, typer.Option(help="Output folder of `cg3d render`.")],
    points: Annotated[
        Path | None, typer.Option(help="Output folder of `cg3d sample`: project its points.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="PNG to write; default ID.png here.")] = None,
) -> None:
    """Write a contact sheet PNG of an object's views (with its points projected when given)."""
    from cg3d.render.show import show as write_sheet

    path = write_sheet(object_id, renders, out or Path(f"{object_id}.png"), points)
    print(f"wrote {path}")
