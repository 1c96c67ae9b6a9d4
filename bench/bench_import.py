"""What the second import of each object costs: sample and render each import the file in
their own Blender worker. Should one import serve both?

    python bench/bench_import.py --glbs /tmp/bench_objaverse_glbs [--objects 12] [--views 12]
                                 [--base-color-px 2048]

Runs one Blender scene in this process (`cg3d.render.worker.Renderer`, as a worker does) over
the first --objects GLBs of --glbs (written by bench/bench_objaverse.py; with --base-color-px,
only those whose base colour map has that size) and times in CPU seconds (`time.process_time`,
all threads: less noisy than wall time on a shared machine), per object: the import with
colours and the points (what `sample --colors` does), and the import without colours plus the
views (what `render` does). The second import is the render's import; its share of the two
stages' Blender time is what one import serving both would save at most. The two imports
side by side also show what reading the base colour map costs.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cg3d.params import RenderConfig, SampleConfig
from cg3d.pipeline.sample import object_rng, points_from_surface
from cg3d.render.cameras import cameras_of
from cg3d.render.worker import Renderer


def cpu(work, *args) -> tuple[float, object]:
    """(CPU seconds, result) of work(*args)."""
    start = time.process_time()
    result = work(*args)
    return time.process_time() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glbs", type=Path, default=Path("/tmp/bench_objaverse_glbs"))
    parser.add_argument("--objects", type=int, default=12)
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--points", type=int, default=8192)
    parser.add_argument("--base-color-px", type=int, default=0, help="0: any object")
    args = parser.parse_args()
    table = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # Blender's prints go to stderr
    paths = sorted(args.glbs.rglob("*.glb"), key=lambda p: p.name)
    if args.base_color_px:  # only objects whose base colour map is this size (plans.json)
        plans = json.loads((args.glbs / "plans.json").read_text())
        wanted = {p["name"] for p in plans if p["maps"].get("base_color") == args.base_color_px}
        paths = [path for path in paths if path.stem in wanted]
    paths = paths[: args.objects]
    config = RenderConfig(views=args.views, resolution=args.resolution)
    sampling = SampleConfig(points=args.points, colors=True)
    with tempfile.TemporaryDirectory() as scratch:
        renderer = Renderer({**config.worker_settings(), "tmp_dir": scratch})
        renderer.warm_up()
        rows = []
        for path in paths:
            cameras = cameras_of(config, path.stem)["views"]
            request = {"id": path.stem, "path": str(path), "up_axis": "y", "out_dir": scratch}
            request["views"] = cameras
            sample_import, surface = cpu(renderer.load, path, "y", True)
            points, _ = cpu(points_from_surface, surface, sampling, object_rng(0, path.stem))
            render_import, _ = cpu(renderer.load, path, "y", False)
            renderer.clear()
            render, _ = cpu(renderer.render, request)  # its own import, then the views
            rows.append((sample_import, points, render_import, render - render_import))
        rows = np.array(rows)
    sample_import, points, render_import, views = rows.mean(axis=0)
    total = rows.sum(axis=1).mean()
    print(
        f"{len(paths)} GLBs of {args.glbs}, {args.views} views at {args.resolution} px", file=table
    )
    print(
        "| CPU ms per object | import with colours | points | import | views | share |", file=table
    )
    print("|---|---|---|---|---|---|", file=table)
    print(
        f"| mean | {sample_import * 1000:.0f} | {points * 1000:.0f} | {render_import * 1000:.0f}"
        f" | {views * 1000:.0f} | {render_import / total:.1%} |",
        file=table,
    )


if __name__ == "__main__":
    main()
