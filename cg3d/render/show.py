"""`cg3d show`: a contact sheet of one object's views, without untarring anything by hand.

With the sample stage's points, each view also shows the points projected through its saved
camera: dots that sit on the object are the visible proof that points and views share a frame.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cg3d.errors import UsageError
from cg3d.files import atomic_path, check_out_dir, require_folder
from cg3d.formats.images import ImageError, open_image
from cg3d.formats.points import find_points
from cg3d.formats.renders import CamerasError, find_rendered, loads_cameras, render_parts
from cg3d.formats.tar import FormatError
from cg3d.render.cameras import project

POINT_COLOUR = (230, 20, 60)


def read_object(
    renders_dir: Path, object_id: str, parts: list[Path]
) -> tuple[list[Image.Image], dict]:
    """The views (in the cameras' order) and the cameras.json of one object of `renders_dir`,
    from `parts` (`locate` gives the id and the parts that hold it)."""
    try:
        rendered = find_rendered(parts, object_id)
    except FormatError as error:
        raise UsageError(f"--renders: {error}") from None
    if rendered is None:
        raise UsageError(f"no renders of object {object_id!r} in {renders_dir}")
    try:
        cameras = loads_cameras(rendered.cameras)
    except CamerasError as error:
        raise UsageError(f"--renders: object {object_id!r}: its cameras.json {error}") from None
    missing = [v["name"] for v in cameras["views"] if v["name"] not in rendered.views]
    if missing:
        raise UsageError(f"--renders: object {object_id!r} lacks the views {missing}")
    try:
        views = [open_image(rendered.views[v["name"]], v["name"]) for v in cameras["views"]]
    except ImageError as error:
        raise UsageError(f"{object_id}: {error}") from None
    size = (cameras["width"], cameras["height"])
    wrong = next(
        (v["name"] for v, im in zip(cameras["views"], views, strict=True) if im.size != size), None
    )
    if wrong is not None:  # each view is laid into a tile of the cameras' size
        raise UsageError(
            f"--renders: object {object_id!r}: {wrong} is not {size[0]}×{size[1]} as its cameras.json says"
        )
    return views, cameras


def read_points(points_dir: Path, object_id: str) -> np.ndarray:
    """The sampled points of one object, (N, 3|6), from the sample stage's parts."""
    points = find_points(points_dir, object_id)
    if points is None:
        require_folder(points_dir, "--points")
        raise UsageError(f"--points: no points of object {object_id!r} in {points_dir}")
    return points


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


def sheet_path(out: Path, object_id: str) -> Path:
    """`out` itself when it names a .png file, else `out/<id>.png` (a folder, made if missing).
    Its folder is checked by `check_out_dir`, the one output-folder check (`cg3d show` runs it
    through `output_lock` before any input is read, `show` again where it writes)."""
    out = Path(out)
    return out if out.suffix.lower() == ".png" else out / f"{object_id}.png"


def locate(renders_dir: Path, query: str) -> tuple[str, list[Path]]:
    """The object id `query` names in `renders_dir`, with the parts that hold it. The id is the
    query itself, else the one id that starts with it, else the one id that contains it (a
    name, as `chair-003`); a UsageError lists a few candidates when several match, or says how
    to list the ids when none does. The folder is listed once and each part's headers walked
    once; reading the object then opens only the parts that hold it."""
    from cg3d.formats.renders import part_ids

    parts = render_parts(renders_dir)  # one glob: a folder of renders may hold many parts
    if not parts:
        require_folder(renders_dir, "--renders")  # a file or FIFO is named as what it is
        raise UsageError(f"--renders: no part-*.tar in {renders_dir}")
    try:
        ids_of = {part: part_ids(part) for part in parts}
    except FormatError as error:
        raise UsageError(f"--renders: {error}") from None
    object_id = _match([i for part in parts for i in ids_of[part]], query, renders_dir)
    return object_id, [part for part in parts if object_id in ids_of[part]]


def _match(ids: list[str], query: str, renders_dir: Path) -> str:
    """The id of `ids` that `query` names (see `locate`)."""
    if query in ids:
        return query
    for matches in ([i for i in ids if i.startswith(query)], [i for i in ids if query in i]):
        if len(matches) == 1:
            return matches[0]
        if matches:
            shown = ", ".join(sorted(matches)[:5]) + (", …" if len(matches) > 5 else "")
            raise UsageError(f"{query!r} matches {len(matches)} objects ({shown}): say more")
    raise UsageError(
        f"no object {query!r} in {renders_dir} (`cg3d inspect {renders_dir} --ids` lists them)"
    )


def show(object_id: str, renders_dir: Path, out: Path, points_dir: Path | None = None) -> Path:
    """Write the contact sheet of `object_id` (an id, a unique prefix of one or a unique part
    of one: `locate`) to `out` (a .png file or a folder); its path."""
    object_id, parts = locate(renders_dir, object_id)  # the folder listed once, here
    path = sheet_path(out, object_id)
    views, cameras = read_object(renders_dir, object_id, parts)
    points = read_points(points_dir, object_id) if points_dir is not None else None
    sheet = contact_sheet(views, cameras, points)
    # made (and checked) only now: a refused call leaves no folder behind
    check_out_dir(path.parent)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path
