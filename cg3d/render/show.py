"""`cg3d show`: a contact sheet of one object's views, without untarring anything by hand.

With the sample stage's points, each view also shows the points projected through its saved
camera: dots that sit on the object are the visible proof that points and views share a frame.
"""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from cg3d.errors import UsageError
from cg3d.render.cameras import project

POINT_COLOUR = (230, 20, 60)


def read_object(renders_dir: Path, object_id: str) -> tuple[list[Image.Image], dict]:
    """The views (in order) and the cameras.json of one object, from the chunk tars."""
    parts = sorted(Path(renders_dir).glob("part-*.tar"))
    if not parts:
        raise UsageError(f"--renders: no part-*.tar in {renders_dir}")
    prefix = f"{object_id}."
    for part in parts:
        with tarfile.open(part) as tar:
            members = {m.name: m for m in tar.getmembers() if m.name.startswith(prefix)}
            if f"{object_id}.cameras.json" not in members:
                continue
            cameras = json.loads(tar.extractfile(members[f"{object_id}.cameras.json"]).read())
            views = [
                Image.open(
                    io.BytesIO(tar.extractfile(members[f"{object_id}.{v['name']}.png"]).read())
                )
                for v in cameras["views"]
            ]
            return views, cameras
    raise UsageError(f"no renders of object {object_id!r} in {renders_dir}")


def read_points(points_dir: Path, object_id: str) -> np.ndarray:
    """The sampled points of one object, (N, 3|6), from the sample stage's parts."""
    for part in sorted(Path(points_dir).glob("part-*.parquet")):
        table = pq.read_table(part, filters=[("id", "==", object_id)])
        if table.num_rows:
            n = table["n_points"][0].as_py()
            return np.asarray(table["points"][0].values, dtype=np.float32).reshape(n, -1)
    raise UsageError(f"--points: no points of object {object_id!r} in {points_dir}")


def contact_sheet(
    views: list[Image.Image], cameras: dict, points: np.ndarray | None = None
) -> Image.Image:
    """The views side by side on white, labelled, with projected points when given."""
    width, height = cameras["width"], cameras["height"]
    label_height = 14
    sheet = Image.new("RGB", (width * len(views), height + label_height), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (view, camera) in enumerate(zip(views, cameras["views"], strict=True)):
        tile = Image.new("RGBA", (width, height), "white")
        tile.alpha_composite(view.convert("RGBA"))
        sheet.paste(tile.convert("RGB"), (k * width, 0))
        if points is not None:
            pixels, depth = project(points, camera)
            for u, v in pixels[depth > 0]:
                x, y = k * width + u, v
                draw.point((x, y), fill=POINT_COLOUR)
        label = f"{camera['name']} az {camera['azimuth_deg']:.0f} el {camera['elevation_deg']:.0f}"
        draw.text((k * width + 3, height + 1), label, fill="black")
    return sheet


def show(object_id: str, renders_dir: Path, out_path: Path, points_dir: Path | None = None) -> Path:
    views, cameras = read_object(renders_dir, object_id)
    points = read_points(points_dir, object_id) if points_dir is not None else None
    contact_sheet(views, cameras, points).save(out_path)
    return Path(out_path)
