"""meshes.exclude drops what it names before any work; splits stay disjoint by construction."""

import json
import os
import shutil
from pathlib import Path

import pytest

from cg3d.errors import UsageError
from cg3d.formats.manifest import read_manifest
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.sources.helpers import make_glbs


def objaverse(tmp_path: Path, labels: dict, **options) -> list:
    root = tmp_path / "objaverse"
    if not root.exists():
        make_glbs(root)
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    config = MeshesConfig(
        source="objaverse",
        root=str(root),
        annotations=str(tmp_path / "labels.json"),
        workers=1,
        **options,
    )
    summary = build_manifest(config, tmp_path / "out")
    return read_manifest(tmp_path / "out"), summary


def test_exclude_by_uid_id_or_path_drops_objects_before_validation(tmp_path, monkeypatch):
    labels = {"mug": ["aa11", "bb22"], "chair": ["cc33", "dd44"]}
    records, _ = objaverse(tmp_path, labels)
    by_uid = {Path(r.path).stem: r for r in records}
    exclude = tmp_path / "exclude.txt"
    exclude.write_text(
        f"aa11\n# a comment\n{by_uid['bb22'].id}\n\n{tmp_path / 'objaverse/glbs/000-000/cc33.glb'}\n"
    )
    validated = []
    from cg3d.pipeline import sources

    real = sources.validate_file
    monkeypatch.setattr(
        sources,
        "validate_file",
        lambda path, root, **kw: validated.append(path) or real(path, root, **kw),
    )
    shutil.rmtree(tmp_path / "out")
    records, summary = objaverse(tmp_path, labels, exclude=str(exclude))
    assert [Path(r.path).stem for r in records] == ["dd44"]
    assert summary.excluded == 3
    assert [Path(p).stem for p in validated] == ["dd44"]  # nothing excluded was even opened


def test_exclude_takes_the_lvis_annotation_file_itself(tmp_path):
    lvis = tmp_path / "lvis-annotations.json"
    lvis.write_text(json.dumps({"mug": ["aa11"], "chair": ["dd44"]}))
    records, summary = objaverse(
        tmp_path, {"mug": ["aa11", "bb22"], "chair": ["cc33", "dd44"]}, exclude=str(lvis)
    )
    assert sorted(Path(r.path).stem for r in records) == ["bb22", "cc33"]
    with pytest.raises(UsageError, match="^meshes.exclude: no such file"):
        objaverse(tmp_path, {"mug": ["aa11"]}, exclude=str(tmp_path / "nope.txt"))


def test_splits_stay_disjoint_when_the_same_file_is_listed_twice(tmp_path):
    # Try to break it: one GLB copied under other uids, in both classes, and a uid that two
    # categories claim. Whatever the seeded split does, no file reaches both splits.
    root = tmp_path / "objaverse"
    make_glbs(root)
    source = root / "glbs/000-000/aa11.glb"
    for uid in ("ee55", "ff66", "gg77", "hh88"):
        shutil.copy(source, root / f"glbs/000-001/{uid}.glb")
    labels = {"mug": ["aa11", "ee55", "ff66", "bb22"], "chair": ["gg77", "hh88", "cc33", "aa11"]}
    records, _ = objaverse(tmp_path, labels, test_fraction=0.5)
    ok = [r for r in records if r.status == "ok"]
    assert len({r.id for r in records}) == len(records)  # one row per object
    train = {r.sha256 for r in ok if r.split == "train"}
    test = {r.sha256 for r in ok if r.split == "test"}
    assert train and test and not train & test
    copies = [r for r in records if r.sha256 == ok[0].sha256 or r.status == "duplicate"]
    assert sum(r.status == "ok" for r in copies if r.sha256 == copies[0].sha256) == 1


@pytest.mark.parametrize("kind", ["a folder", "a FIFO", "/dev/zero"])
def test_an_exclude_path_that_is_no_file_is_one_line_before_any_work(tmp_path, kind):
    """Before: the synthetic source generated all its meshes, then said "no such file"; a FIFO
    must never be opened (the read would block)."""
    path = {"a folder": tmp_path, "/dev/zero": Path("/dev/zero")}.get(kind, tmp_path / "fifo")
    if kind == "a FIFO":
        os.mkfifo(path)
    out = tmp_path / "out"
    config = MeshesConfig(source="synthetic", per_class=1, workers=1, exclude=str(path))
    with pytest.raises(UsageError, match=f"^meshes.exclude: not a regular file: {path}$"):
        build_manifest(config, out)
    assert not (out / "synthetic").exists()  # no mesh generated
