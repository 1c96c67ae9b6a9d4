"""The render stage's parts: `part-XXXXX.tar` holding, per object, `<id>.view_XX.png` (one per
view) and `<id>.cameras.json`, written deterministically.

cameras.json (its convention: `cg3d.render.cameras`) has its one writer and reader here,
`dumps_cameras` and `loads_cameras`: the render stage writes it, `show`, `pack` and `verify`
read it through the same checks (it also travels into the shards)."""

import math
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cg3d.files import json_text, loads_json
from cg3d.formats.intact import not_a_file
from cg3d.formats.tar import FormatError, member_key, tar_members, tar_samples, write_tar
from cg3d.params import MAX_RESOLUTION, MAX_VIEWS

PART_SUFFIX = ".tar"
STAGE = "render"  # the stage that writes (and rebuilds) the parts
CAMERAS = "cameras.json"


def dumps_cameras(cameras: dict) -> bytes:
    """The bytes of one object's cameras.json (the render stage's writer)."""
    return json_text(cameras, indent=1).encode()


class CamerasError(ValueError):
    """A cameras.json that is not one `dumps_cameras` wrote: the message says what is wrong."""


def loads_cameras(data: bytes) -> dict:
    """The cameras.json document `dumps_cameras` wrote, checked before anything is sized or
    projected by it or packed with it (a hand edit was a TypeError traceback in `cg3d show`,
    whose width and height size the contact sheet): sizes within render.resolution's bounds, 1
    to render.views' bound of views, each named, with a finite 3×3 K and 4×4 world_to_camera
    and numeric angles. CamerasError naming the first problem otherwise."""
    try:
        cameras = loads_json(data)
    except ValueError as error:  # nesting too deep included
        raise CamerasError(f"not JSON ({error})") from None
    if not isinstance(cameras, dict):
        raise CamerasError("not an object")
    for key in ("width", "height"):
        size = cameras.get(key)
        if type(size) is not int or not 1 <= size <= MAX_RESOLUTION:
            raise CamerasError(f"{key} {str(size)[:20]} is not a size of 1 to {MAX_RESOLUTION}")
    views = cameras.get("views")
    if not isinstance(views, list) or not 1 <= len(views) <= MAX_VIEWS:
        raise CamerasError(f"'views' is not a list of 1 to {MAX_VIEWS} views")
    for number, view in enumerate(views):
        if not isinstance(view, dict) or not isinstance(view.get("name"), str):
            raise CamerasError(f"view {number} is not an object with a name")
        for key, shape in (("K", (3, 3)), ("world_to_camera", (4, 4))):
            try:
                matrix = np.asarray(view.get(key), dtype=np.float64)
            except (TypeError, ValueError):
                matrix = np.empty(0)
            if matrix.shape != shape or not np.isfinite(matrix).all():
                raise CamerasError(f"view {number}: {key} is not a finite {shape[0]}×{shape[1]}")
        for key in ("azimuth_deg", "elevation_deg"):
            value = view.get(key)
            if type(value) not in (int, float) or not math.isfinite(value):
                raise CamerasError(f"view {number}: {key} is not a number")
    return cameras


@dataclass
class Rendered:
    """One object's renders: PNG bytes by view name (`view_00`, …) and its cameras.json bytes."""

    views: dict[str, bytes]
    cameras: bytes | None


def write_render_part(path: Path, objects: dict[str, Rendered]) -> None:
    """Atomically write one part holding every object of `objects` (id → renders)."""
    members: dict[str, bytes] = {}
    for object_id, rendered in objects.items():
        for view, png in rendered.views.items():
            members[f"{object_id}.{view}.png"] = png
        if rendered.cameras is not None:
            members[f"{object_id}.{CAMERAS}"] = rendered.cameras
    write_tar(path, members)


def render_parts(renders_dir: Path) -> list[Path]:
    return sorted(Path(renders_dir).glob(f"part-*{PART_SUFFIX}"))


def _open_part(part: Path) -> BinaryIO:
    """A render part open to read; a FIFO, folder or symlink loop in its place is a
    FormatError naming it (opening a FIFO blocked `cg3d inspect` and pack forever)."""
    if problem := not_a_file(Path(part)):
        raise FormatError(f"{part}: {problem} (rerun `cg3d {STAGE}` to rebuild it)")
    return open(part, "rb")


def _rendered(members: dict[str, bytes]) -> Rendered:
    views = {
        suffix.removesuffix(".png"): data
        for suffix, data in members.items()
        if suffix.startswith("view_") and suffix.endswith(".png")
    }
    return Rendered(dict(sorted(views.items())), members.get(CAMERAS))


def read_render_part(
    part: Path, only: Collection[str] | None = None
) -> Iterator[tuple[str, Rendered]]:
    """(id, renders) of every object of a part (or of the ids in `only`, whose members alone
    are read: the others' data is seeked over); a member not named `<id>.<suffix>`, or a
    damaged tar, is a FormatError naming the part (and the member)."""
    wanted = True if only is None else (lambda name: name.partition(".")[0] in only)
    with _open_part(part) as stream:
        try:
            for sample in tar_samples(stream, wanted):
                if "__error__" in sample:
                    raise FormatError(sample["__error__"])
                if only is None or sample["__key__"] in only:
                    yield sample["__key__"], _rendered(sample)
        except FormatError as error:
            raise FormatError(f"{part}: {error} (rerun `cg3d {STAGE}` to rebuild it)") from None


def part_ids(part: Path) -> list[str]:
    """The object ids of one part, in order, from the tar headers only."""
    ids: list[str] = []
    with _open_part(part) as stream:
        try:
            for name, _ in tar_members(stream, read_data=False):
                key, _ = member_key(name)
                if not ids or ids[-1] != key:
                    ids.append(key)
        except FormatError as error:
            raise FormatError(f"{part}: {error} (rerun `cg3d {STAGE}` to rebuild it)") from None
    return ids


class RendersLookup:
    """Renders by id over a renders folder; each part known by its id range (from its tar
    headers), and only the members of the ids asked for are read (parts may overlap in id
    range: a grown data set puts new objects into new parts)."""

    def __init__(self, renders_dir: Path):
        self.parts: list[tuple[str, str, str]] = []  # (lowest id, highest id, part)
        for part in render_parts(renders_dir):
            ids = part_ids(part)
            if ids:
                self.parts.append((min(ids), max(ids), str(part)))

    def near(self, ids: Iterable[str]) -> list[tuple[str, str, str]]:
        """The parts whose id range meets that of `ids`: a pack shard's few, which its job
        carries to a pool worker (each worker read every part's headers again, 143 µs an
        object: some 2 minutes a process for 800k objects)."""
        wanted = set(ids)
        if not wanted:
            return []
        low, high = min(wanted), max(wanted)
        return [
            (first, last, part) for first, last, part in self.parts if first <= high and low <= last
        ]


def read_renders(parts: Iterable[tuple[str, str, str]], ids: Iterable[str]) -> dict[str, Rendered]:
    """The renders of those of `ids` that `parts` (`RendersLookup.near`'s) hold."""
    wanted = set(ids)
    found: dict[str, Rendered] = {}
    for _, _, part in parts:
        for object_id, rendered in read_render_part(Path(part), wanted):
            check_cameras(part, object_id, rendered)
            found[object_id] = rendered
    return found


def check_cameras(part: Path | str, object_id: str, rendered: Rendered) -> None:
    """A cameras.json that `loads_cameras` refuses is a damaged part, as a damaged tar is:
    FormatError naming the part, the member and the stage that rebuilds it (it would otherwise
    be packed into the shards as it is)."""
    if rendered.cameras is None:
        return
    try:
        loads_cameras(rendered.cameras)
    except CamerasError as error:
        raise FormatError(
            f"{part}: member {object_id}.{CAMERAS}: {error} (rerun `cg3d {STAGE}` to rebuild it)"
        ) from None


def find_rendered(parts: Iterable[Path], object_id: str) -> Rendered | None:
    """The renders of one object from whichever of `parts` holds them, or None (one header
    walk per part; only that object's members are read). `parts`: `render_parts` of a folder,
    or the ones a caller knows hold the object (`cg3d.render.show.locate`)."""
    for part in parts:
        for _, rendered in read_render_part(part, only={object_id}):
            if rendered.cameras is not None:
                return rendered
    return None
