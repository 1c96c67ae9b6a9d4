"""Objaverse: a folder of `<uid>.glb` files (any depth, as objaverse's `glbs/000-xxx/`; or
of other mesh formats, as Objaverse-XL's GitHub and Thingiverse files: `<uid>.stl`, `.obj`,
`.fbx`..., each an object, the unsupported ones rows naming their format) and an annotation
JSON, from `--annotations` or `ROOT/annotations.json`, in one of the forms

- LVIS style `{category: [uid, ...]}` (objaverse's lvis-annotations.json),
- `{uid: category}`, or
- `{uid: {"category": ..., "name": ...}}`: the free-text `name` goes to the manifest's `name`.

glTF is Y-up. Files whose uid has no annotation are left out (they have no class). A uid found
twice (a second `<uid>.glb` in another folder) or annotated under two categories, and a
symlinked folder, are failure rows (`duplicate`, `ambiguous_label`, `outside_root`...).
A downloader's leftover of a uid's file (`<uid>.glb.aria2`, `.part`...: the folder source's
`LEFTOVER_SUFFIXES`) is no object: the file beside it is an "unfinished download" row (or,
where a finished file of its uid is the object, a duplicate row saying so), one alone a row
saying that its download never finished.
Classes sorted; split seeded per class.
"""

import os
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

from cg3d.errors import UsageError
from cg3d.files import require_regular_file, resolved_root
from cg3d.formats.manifest import MeshRecord
from cg3d.geometry.meshio import NAMED_UNSUPPORTED, SUPPORTED_SUFFIXES, MeshError, check_suffix
from cg3d.pipeline.ids import object_id
from cg3d.pipeline.sources import (
    Listing,
    MeshesConfig,
    cap_per_class,
    iter_sorted_entries,
    not_a_file,
    read_json,
    root_file,
    seeded_split,
    stored_path,
)
from cg3d.pipeline.sources.folder import LEFTOVER_SUFFIXES, half_download, lone_leftover

DEFAULT_ANNOTATIONS = "annotations.json"
# The files that are objects when their stem is an annotated uid: Objaverse's .glb, and the
# formats of Objaverse-XL's other sources (an annotated `<uid>.stl` was left out unsaid).
OBJECT_SUFFIXES = frozenset(SUPPORTED_SUFFIXES) | NAMED_UNSUPPORTED.keys()


def _preference(path: Path) -> int:
    """Which of one uid's files is its object, lowest first: a .glb (Objaverse's own), then a
    format read here, then one named unsupported. Path order alone took `<uid>.fbx` (or a
    `.blend`, a `.dae`) kept beside `<uid>.glb` as the object, an unsupported_format row where
    the .glb had been an ok object, and the .glb a duplicate."""
    suffix = path.suffix.lower()
    return 0 if suffix == ".glb" else 1 if suffix in SUPPORTED_SUFFIXES else 2


def listing(config: MeshesConfig, out_dir: Path) -> Listing:
    root = Path(config.root)
    # --annotations may be anywhere (the user named it); the layout's own file is confined
    default = root / DEFAULT_ANNOTATIONS
    if not config.annotations and default.is_file():
        root_file(root, DEFAULT_ANNOTATIONS, "--annotations")
    labels = read_annotations(Path(config.annotations) if config.annotations else default)
    files: dict[str, str] = {}  # uid: its first file in path order
    symlinked: set[str] = set()  # the uids whose file is a link: stored as its target's path
    # the few uids with more files: [(file, is a link)] in path order, the first included (a
    # list for every uid of Objaverse-XL's millions would cost ~120 bytes each)
    several: dict[str, list[tuple[str, bool]]] = {}
    failures: list[MeshRecord] = []  # each object left out, with why: nothing dropped unsaid
    leftovers: list[str] = []  # a downloader's, of an annotated uid's file (`<uid>.glb.aria2`)
    # from the root resolved (once: the stage's is already), the entries' paths need no
    # resolving of their own (`stored_path`)
    for entry in iter_sorted_entries(resolved_root(root)):
        path, failure = Path(entry.path), not_a_file(entry, root)
        if failure is not None:
            failures.append(_failure(path.as_posix(), "", failure.kind, failure.reason))
        elif path.suffix.lower() in LEFTOVER_SUFFIXES:
            target = path.with_suffix("")
            if target.suffix.lower() in OBJECT_SUFFIXES and target.stem in labels:
                leftovers.append(str(path))
        elif path.suffix.lower() in OBJECT_SUFFIXES and path.stem in labels:
            uid, link = path.stem, entry.is_symlink()
            if uid in files:
                first = several.setdefault(uid, [(files[uid], uid in symlinked)])
                first.append((str(path), link))
                continue
            files[uid] = str(path)
            if link:
                symlinked.add(uid)
    _choose_objects(several, files, symlinked, leftovers, labels, failures)
    unfinished = _unfinished(files, leftovers, labels, failures)
    by_class: dict[str, list[str]] = {}
    for uid in files:
        category, _ = labels[uid]
        if category is None:  # annotated under two categories: which one is unknowable
            reason = f"uid {uid} is annotated under {' and '.join(labels[uid][1])}"
            failures.append(_failure(files[uid], "", "ambiguous_label", reason))
        else:
            by_class.setdefault(category, []).append(uid)
    if not by_class:
        raise UsageError(f"--annotations: none of the mesh files in {root} is annotated")
    records = _records(by_class, files, symlinked, unfinished, labels, config, out_dir)
    return Listing(sorted(by_class), chain(records, failures))


def _choose_objects(
    several: dict[str, list[tuple[str, bool]]],
    files: dict[str, str],
    symlinked: set[str],
    leftovers: list[str],
    labels: dict,
    failures: list[MeshRecord],
) -> None:
    """Sets `files[uid]` (and `symlinked`) of each uid with several files to its object; the
    others are duplicate rows. The object is a finished download first (`x.glb` half written
    beside `x.glb.aria2` gave way to a whole `x.obj`: before, the .glb was taken and an
    unfinished row, the finished .obj a duplicate), then `_preference`, then path order."""
    halves = {str(Path(leftover).with_suffix("")): leftover for leftover in leftovers}
    for uid, paths in several.items():
        # min keeps the first of equals: path order
        kept, link = min(paths, key=lambda c: (c[0] in halves, _preference(Path(c[0]))))
        files[uid] = kept
        if link:
            symlinked.add(uid)
        else:
            symlinked.discard(uid)
        for path, _ in paths:
            if path != kept:
                failures.append(_duplicate(uid, path, kept, labels, halves.get(path)))


def _unfinished(
    files: dict[str, str], leftovers: list[str], labels: dict, failures: list[MeshRecord]
) -> dict[str, MeshError]:
    """{uid: why its file is unfinished} for each object file beside a downloader's leftover
    (`aa11.glb` beside `aa11.glb.aria2`: aria2 writes into the file's own name, so the .glb
    was taken whole while half of it was zeros); a leftover beside no object file is a row of
    its own (its uid's class), saying that the download never finished. Before, both were
    passed over unsaid, as the folder source had until t87d. A leftover beside a file that is
    not its uid's object (a second file of the uid) is none: that file's row says what it is."""
    unfinished = {}
    for leftover in leftovers:
        target = Path(leftover).with_suffix("")
        if files.get(target.stem) == str(target):
            unfinished[target.stem] = half_download(leftover)
        elif not os.path.lexists(target):  # one stat, for the leftovers only
            failure = lone_leftover(leftover)
            category = labels[target.stem][0] or ""
            failures.append(_failure(leftover, category, failure.kind, failure.reason))
    return unfinished


def _duplicate(
    uid: str, path: str, kept: str, labels: dict, leftover: str | None = None
) -> MeshRecord:
    """The row of `path`, a second file of `uid`, whose object is `kept`; `leftover`, a
    downloader's beside `path`, is noted."""
    reason = (
        f"uid {uid} is also {kept}, the one taken (a finished download first, then a .glb, "
        "then a format read here, then the first in path order)"
    )
    if leftover is not None:
        reason += f"; this one is {half_download(leftover).reason}"
    return _failure(path, labels[uid][0] or "", "duplicate", reason)


def _failure(path: str, class_name: str, status: str, error: str) -> MeshRecord:
    """The row of a file that is no object of the set (split and up axis unused)."""
    return MeshRecord(
        id=object_id("objaverse", f"{status}/{path}"),  # unique: a uid may have two such rows
        source="objaverse",
        path=path,
        class_name=class_name,
        split="train",
        status=status,
        error=error,
    )


def _records(
    by_class, files, symlinked, unfinished, labels, config: MeshesConfig, out_dir: Path
) -> Iterator[MeshRecord]:
    for class_name in sorted(by_class):
        uids = cap_per_class(by_class[class_name], config.per_class, config.seed)
        split_of = seeded_split(uids, config.seed, config.test_fraction)
        for uid in uids:
            try:
                check_suffix(Path(files[uid]))  # a .fbx: a row naming the format
                if uid in unfinished:
                    raise unfinished[uid]
                status, error = "ok", ""
            except MeshError as failure:
                status, error = failure.kind, failure.reason
            yield MeshRecord(
                id=object_id("objaverse", uid),
                source="objaverse",
                path=stored_path(Path(files[uid]), out_dir, resolved=uid not in symlinked),
                class_name=class_name,
                name=labels[uid][1],
                split=split_of[uid],
                up_axis="y",
                status=status,
                error=error,
            )


def read_annotations(path: Path) -> dict[str, tuple[str | None, str | list[str]]]:
    """{uid: (category, free-text name or "")} from any of the supported forms; a uid the file
    puts under two categories is (None, [both categories]) (never the last one silently), and a
    key written twice in one JSON object is a one-line UsageError."""
    require_regular_file(
        path, f"--annotations: no annotation file {path}", "--annotations"
    )  # a FIFO, a folder
    data = read_json(path, "--annotations", unique_keys=True)
    if not isinstance(data, dict):
        raise UsageError(f"--annotations: {path} must hold a JSON object")
    labels: dict[str, tuple[str | None, str | list[str]]] = {}

    def put(uid: str, category: str, name: str) -> None:
        if uid in labels and labels[uid][0] != category:
            first = labels[uid][0]
            known = labels[uid][1] if first is None else [first]
            labels[uid] = (None, sorted({*known, category}))
        else:
            labels[uid] = (category, name)

    for key, value in data.items():
        if isinstance(value, list):  # LVIS: category → uids
            for uid in value:
                put(str(uid), key, "")
        elif isinstance(value, str):
            put(key, value, "")
        elif isinstance(value, dict) and isinstance(value.get("category"), str):
            put(key, value["category"], str(value.get("name") or ""))
        else:
            raise UsageError(
                f"--annotations: {path}: entry {key!r} is neither a category, a uid list "
                "nor an object with a 'category'"
            )
    return labels
