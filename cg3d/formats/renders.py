"""The render stage's parts: `part-XXXXX.tar` holding, per object, `<id>.view_XX.png` (one per
view) and `<id>.cameras.json` (`cg3d.render.cameras`), written deterministically."""

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cg3d.formats.tar import FormatError, member_key, tar_members, tar_samples, write_tar

PART_SUFFIX = ".tar"
STAGE = "render"  # the stage that writes (and rebuilds) the parts
CAMERAS = "cameras.json"


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
    with open(part, "rb") as stream:
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
    with open(part, "rb") as stream:
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

    def get_many(self, ids: Iterable[str]) -> dict[str, Rendered]:
        wanted = set(ids)
        if not wanted:
            return {}
        low, high = min(wanted), max(wanted)
        found: dict[str, Rendered] = {}
        for first, last, part in self.parts:
            if first <= high and low <= last:
                found.update(read_render_part(Path(part), wanted))
        return found


def find_rendered(
    renders_dir: Path, object_id: str, parts: Iterable[Path] | None = None
) -> Rendered | None:
    """The renders of one object from whichever part holds them, or None (one header walk
    per part; only that object's members are read). `parts`: where to look, when the caller
    has listed the folder already (or knows which parts hold the object); all parts if None."""
    for part in render_parts(renders_dir) if parts is None else parts:
        for _, rendered in read_render_part(part, only={object_id}):
            if rendered.cameras is not None:
                return rendered
    return None
