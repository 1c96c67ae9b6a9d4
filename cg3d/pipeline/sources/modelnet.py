"""ModelNet10/40: `ROOT/<class>/{train,test}/<class>_XXXX.off` (Princeton's layout).

The official split comes from the folders. The real files are Z-up, and some have the
malformed header `OFF490 518 0` on one line (`load_mesh` reads it). Class names are the
benchmark's (protocol.json: "night stand" for the folder night_stand); classes.json holds the
full benchmark list, in benchmark order, so that class indices match published results.
"""

from collections.abc import Iterator
from pathlib import Path

from cg3d.errors import UsageError
from cg3d.files import sorted_entries, why_unlisted
from cg3d.formats.manifest import MeshRecord
from cg3d.pipeline.ids import object_id
from cg3d.pipeline.sources import (
    Listing,
    MeshesConfig,
    cap_per_class,
    is_file,
    match_protocol_names,
    stored_path,
)

SPLITS = ("train", "test")


def listing(config: MeshesConfig, out_dir: Path) -> Listing:
    root = Path(config.root)
    # a class folder that cannot be listed is one too (its row says so): it was left out
    folders = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and (any((p / s).is_dir() for s in SPLITS) or sorted_entries(p) is None)
    )
    if not folders:
        raise UsageError(
            f"--root: no ModelNet class folders (<class>/train, <class>/test) in {root}"
        )
    matched = match_protocol_names(folders)
    if matched is None:
        unknown = [f for f in folders if match_protocol_names([f]) is None]
        raise UsageError(
            f"--root: {', '.join(unknown[:5])} not ModelNet10 or ModelNet40 classes in {root}"
        )
    names, classes = matched
    return Listing(classes, _records(root, folders, names, config, out_dir))


def _records(
    root: Path, folders: list[str], names: dict[str, str], config: MeshesConfig, out_dir: Path
) -> Iterator[MeshRecord]:
    for folder in folders:
        if sorted_entries(root / folder) is None:
            yield _unlisted(root, folder, names[folder], "train")
            continue
        for split in SPLITS:
            split_dir = root / folder / split
            if not split_dir.is_dir():
                continue
            entries = sorted_entries(split_dir)
            if entries is None:
                yield _unlisted(root, f"{folder}/{split}", names[folder], split)
                continue
            # the folder resolved once (a class folder may be a link), and each file's type
            # from its `DirEntry` (free): a file that is no link needs no resolving of its own
            real_dir = split_dir.resolve()
            files, symlinked = [], set()
            for entry in entries:
                if is_file(entry) and Path(entry.name).suffix.lower() == ".off":
                    files.append(entry.name)
                    if entry.is_symlink():
                        symlinked.add(entry.name)
            for name in cap_per_class(files, config.per_class, config.seed):
                relpath = f"{folder}/{split}/{name}"
                yield MeshRecord(
                    id=object_id("modelnet", relpath),
                    source="modelnet",
                    path=stored_path(real_dir / name, out_dir, resolved=name not in symlinked),
                    class_name=names[folder],
                    split=split,
                    up_axis="z",
                )


def _unlisted(root: Path, relpath: str, class_name: str, split: str) -> MeshRecord:
    """The failure row of a folder that cannot be listed: its files are no rows."""
    return MeshRecord(
        id=object_id("modelnet", relpath),
        source="modelnet",
        path=(root / relpath).as_posix(),
        class_name=class_name,
        split=split,
        up_axis="z",
        status="unreadable",
        error=why_unlisted(root / relpath),
    )
