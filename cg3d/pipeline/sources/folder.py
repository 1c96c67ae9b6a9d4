"""Any folder of meshes whose subfolders are the classes: `ROOT/<class>/**/<file>`.

Mesh files (.obj .off .ply .stl .glb .gltf) at any depth are objects; model folders may hold
textures and .mtl files beside them (assets, not objects). Any other file becomes a row with
status `unsupported_format` naming the format (FBX, COLLADA, 3MF...). Names with spaces or
non-ASCII characters are fine (the id is a key-safe slug plus a hash). Classes are the folder
names, sorted (two that are one text to CLIP, `Chair` and `chair`, are refused); split seeded per class; +Y up unless `meshes.up_axis` says otherwise. A file
(or symlink) that resolves outside ROOT is refused by the meshes stage's check, unread; a
symlinked folder is not entered but given a failure row (`outside_root` when it leads out).
A downloader's leftover (`x.glb.part`, `.crdownload`, `.aria2`...) is no object: the mesh
beside it is an "unfinished download" row, a leftover alone a row saying so.
"""

from collections.abc import Iterator
from pathlib import Path

from cg3d.errors import UsageError
from cg3d.files import resolved_root, shown_name
from cg3d.formats.manifest import MeshRecord
from cg3d.geometry.meshio import SUPPORTED_SUFFIXES, MeshError, check_suffix
from cg3d.pipeline.ids import object_id
from cg3d.pipeline.sources import (
    Listing,
    MeshesConfig,
    cap_per_class,
    iter_sorted_entries,
    not_a_file,
    seeded_split,
    stored_path,
)

# glTF's specification says +Y up; OBJ, PLY, STL and OFF say nothing, and +Y is what most
# exporters write. `meshes.up_axis` overrides it for the whole source.
DEFAULT_UP_AXIS = "y"
# Files that accompany meshes: skipped silently.
ASSET_SUFFIXES = {
    ".mtl", ".bin", ".png", ".jpg", ".jpeg", ".tga", ".bmp", ".tif", ".tiff", ".webp", ".exr",
    ".hdr", ".dds", ".ktx2", ".txt", ".md", ".json", ".csv", ".license",
}  # fmt: skip
# What downloaders leave beside (or instead of) a file they have not finished: no objects.
# A mesh beside one of them is unfinished (aria2 writes into the mesh's own name, Firefox
# makes it empty at the start); one alone is a row saying that the download never finished.
LEFTOVER_SUFFIXES = {
    ".part": "Firefox's or wget2's",
    ".partial": "a browser's",
    ".crdownload": "Chrome's",
    ".aria2": "aria2's",
    ".tmp": "a downloader's",
}


def listing(config: MeshesConfig, out_dir: Path) -> Listing:
    root = Path(config.root)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    classes = [p.name for p in entries if p.is_dir() and not p.is_symlink()]
    if not classes:
        meshes = sum(p.suffix.lower() in SUPPORTED_SUFFIXES for p in entries)
        # Thingi10K's `raw_meshes/<id>.stl`: a flat folder of meshes, no classes
        flat = (
            f" (it holds {meshes} mesh files itself: point --root at the folder above it, "
            f"where {root.name!r} is then their one class)"
            if meshes
            else ""
        )
        raise UsageError(f"--root: no class subfolders in {root}{flat}")
    # A symlinked class folder is not entered either (see `iter_sorted_entries`), nor is a broken
    # link taken for a file: one row each. (Plain files beside the classes are no objects.)
    links = [p.name for p in entries if p.is_symlink() and not p.is_file()]
    return Listing(classes, _records(root, classes, links, config, out_dir))


def _records(
    root: Path, classes: list[str], links: list[str], config: MeshesConfig, out_dir: Path
) -> Iterator[MeshRecord]:
    for name in links:
        failure = not_a_file(root / name, root)
        yield _record(name, (root / name).as_posix(), name, "train", failure.kind, failure.reason)
    real_root = resolved_root(root)  # once per listing (the stage's root is resolved already)
    for class_name in classes:
        files, links = [], []  # strings, not Paths: a class may hold millions of files
        leftovers: list[str] = []  # a downloader's (`LEFTOVER_SUFFIXES`)
        symlinked = set()  # the files that are links: their stored path is their target's
        for entry in iter_sorted_entries(root / class_name):
            path, failure = Path(entry.path), not_a_file(entry, root)
            if failure is not None:
                links.append((path.relative_to(root).as_posix(), failure))
            elif path.suffix.lower() in LEFTOVER_SUFFIXES:
                leftovers.append(path.relative_to(root).as_posix())
            elif path.suffix.lower() not in ASSET_SUFFIXES:
                files.append(path.relative_to(root).as_posix())
                if entry.is_symlink():
                    symlinked.add(files[-1])
        unfinished = _unfinished(files, leftovers, links)
        keys = cap_per_class(files, config.per_class, config.seed)
        split_of = seeded_split(keys, config.seed, config.test_fraction)
        for relpath in keys:
            try:
                check_suffix(root / relpath)
                if relpath in unfinished:
                    raise unfinished[relpath]
                status, error = "ok", ""
            except MeshError as failure:
                status, error = failure.kind, failure.reason
            path = stored_path(real_root / relpath, out_dir, resolved=relpath not in symlinked)
            yield _record(relpath, path, class_name, split_of[relpath], status, error)
        # Symlinked folders and broken links: a row each, outside the cap and the split (they
        # are no objects), so that what the folder holds is never left out unsaid.
        for relpath, failure in links:
            path = (root / relpath).as_posix()  # the link's own path, not its target's
            yield _record(relpath, path, class_name, "train", failure.kind, failure.reason)


def _unfinished(
    files: list[str], leftovers: list[str], links: list[tuple[str, MeshError]]
) -> dict[str, MeshError]:
    """{file: why it is unfinished} for each file of `files` beside a downloader's leftover
    (`x.glb` beside `x.glb.aria2`); a leftover beside no file is added to `links` (rows outside
    the cap and split: no object), saying that its download never finished. Before, a leftover
    was an object of its own (".part is not one of .obj …") and the half file beside it
    failed as whatever its cut bytes came to."""
    if not leftovers:
        return {}
    named = set(files)  # only then: a class may hold millions of files
    unfinished = {}
    for leftover in leftovers:
        base = leftover.rsplit(".", 1)[0]
        if base in named:
            unfinished[base] = half_download(leftover)
        else:
            links.append((leftover, lone_leftover(leftover)))
    return unfinished


def _whose(leftover: str) -> str:
    """The downloader and suffix of a leftover's name (`LEFTOVER_SUFFIXES`): "aria2's .aria2"."""
    suffix = leftover.rsplit(".", 1)[1]
    return f"{LEFTOVER_SUFFIXES['.' + suffix.lower()]} .{suffix}"


def half_download(leftover: str) -> MeshError:
    """The failure of the file beside the downloader's `leftover` (`x.glb` beside
    `x.glb.aria2`): aria2 writes into the file's own name, Firefox makes it empty at the start."""
    return MeshError(
        "unreadable",
        f"an unfinished download ({_whose(leftover)} file {shown_name(Path(leftover).name, 60)} "
        "lies beside it): let the download finish, or fetch the file again",
    )


def lone_leftover(leftover: str) -> MeshError:
    """The failure row of a downloader's `leftover` beside no file of its name."""
    return MeshError(
        "unreadable",
        f"{_whose(leftover)} file of a download that never finished, not a mesh: let it "
        "finish (its mesh then takes the name without the suffix), or remove it",
    )


def _record(
    relpath: str, path: str, class_name: str, split: str, status: str, error: str
) -> MeshRecord:
    return MeshRecord(
        id=object_id("folder", relpath),
        source="folder",
        path=path,
        class_name=class_name,
        split=split,
        up_axis=DEFAULT_UP_AXIS,
        status=status,
        error=error,
    )
