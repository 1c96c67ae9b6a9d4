"""Objaverse: a folder of `<uid>.glb` files (any depth, as objaverse's `glbs/000-xxx/`) and
an annotation JSON, from `--annotations` or `ROOT/annotations.json`, in one of the forms

- LVIS style `{category: [uid, ...]}` (objaverse's lvis-annotations.json),
- `{uid: category}`, or
- `{uid: {"category": ..., "name": ...}}`: the free-text `name` goes to the manifest's `name`.

glTF is Y-up. Files whose uid has no annotation are left out (they have no class).
Classes sorted; split seeded per class.
"""

from collections.abc import Iterator
from pathlib import Path

from cg3d.errors import UsageError
from cg3d.formats.manifest import MeshRecord
from cg3d.pipeline.ids import object_id
from cg3d.pipeline.sources import (
    Listing,
    MeshesConfig,
    cap_per_class,
    iter_sorted_files,
    read_json,
    seeded_split,
    stored_path,
)

DEFAULT_ANNOTATIONS = "annotations.json"


def listing(config: MeshesConfig, out_dir: Path) -> Listing:
    root = Path(config.root)
    labels = read_annotations(
        Path(config.annotations) if config.annotations else root / DEFAULT_ANNOTATIONS
    )
    files = {p.stem: str(p) for p in iter_sorted_files(root) if p.suffix.lower() == ".glb"}
    by_class: dict[str, list[str]] = {}
    for uid in files:
        if uid in labels:
            by_class.setdefault(labels[uid][0], []).append(uid)
    if not by_class:
        raise UsageError(f"--annotations: none of the .glb files in {root} is annotated")
    return Listing(sorted(by_class), _records(by_class, files, labels, config, out_dir))


def _records(by_class, files, labels, config: MeshesConfig, out_dir: Path) -> Iterator[MeshRecord]:
    for class_name in sorted(by_class):
        uids = cap_per_class(by_class[class_name], config.per_class, config.seed)
        split_of = seeded_split(uids, config.seed, config.test_fraction)
        for uid in uids:
            yield MeshRecord(
                id=object_id("objaverse", uid),
                source="objaverse",
                path=stored_path(Path(files[uid]), out_dir),
                class_name=class_name,
                name=labels[uid][1],
                split=split_of[uid],
                up_axis="y",
            )


def read_annotations(path: Path) -> dict[str, tuple[str, str]]:
    """{uid: (category, free-text name or "")} from any of the supported forms."""
    if not path.is_file():
        raise UsageError(f"--annotations: no annotation file {path}")
    data = read_json(path, "--annotations")
    if not isinstance(data, dict):
        raise UsageError(f"--annotations: {path} must hold a JSON object")
    labels: dict[str, tuple[str, str]] = {}
    for key, value in data.items():
        if isinstance(value, list):  # LVIS: category → uids
            labels.update({str(uid): (key, "") for uid in value})
        elif isinstance(value, str):
            labels[key] = (value, "")
        elif isinstance(value, dict) and isinstance(value.get("category"), str):
            labels[key] = (value["category"], str(value.get("name") or ""))
        else:
            raise UsageError(
                f"--annotations: {path}: entry {key!r} is neither a category, a uid list "
                "nor an object with a 'category'"
            )
    return labels
