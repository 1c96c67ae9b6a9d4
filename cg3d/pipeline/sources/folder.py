"""Any folder of meshes whose subfolders are the classes: `ROOT/<class>/**/<file>`.

Mesh files (.obj .off .ply .stl .glb .gltf) at any depth are objects; model folders may hold
textures and .mtl files beside them (assets, not objects). Any other file becomes a row with
status `unsupported_format` naming the format (FBX, COLLADA, 3MF...). Names with spaces or
non-ASCII characters are fine (the id is a key-safe slug plus a hash). Classes are the folder
names, sorted (two that are one text to CLIP, `Chair` and `chair`, are refused); split seeded per class; +Y up unless `meshes.up_axis` says otherwise. A file
(or symlink) that resolves outside ROOT is refused by the meshes stage's check, unread; a
symlinked folder is not entered but given a failure row (`outside_root` when it leads out).
"""

from collections.abc import Iterator
from pathlib import Path

from cg3d.errors import UsageError
from cg3d.files import resolved_root
from cg3d.formats.manifest import MeshRecord
from cg3d.geometry.meshio import MeshError, check_suffix
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


def listing(config: MeshesConfig, out_dir: Path) -> Listing:
    root = Path(config.root)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    classes = [p.name for p in entries if p.is_dir() and not p.is_symlink()]
    if not classes:
        raise UsageError(f"--root: no class subfolders in {root}")
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
        symlinked = set()  # the files that are links: their stored path is their target's
        for entry in iter_sorted_entries(root / class_name):
            path, failure = Path(entry.path), not_a_file(entry, root)
            if failure is not None:
                links.append((path.relative_to(root).as_posix(), failure))
            elif path.suffix.lower() not in ASSET_SUFFIXES:
                files.append(path.relative_to(root).as_posix())
                if entry.is_symlink():
                    symlinked.add(files[-1])
        keys = cap_per_class(files, config.per_class, config.seed)
        split_of = seeded_split(keys, config.seed, config.test_fraction)
        for relpath in keys:
            try:
                check_suffix(root / relpath)
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
