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


def reference_keys(record, out_dir: Path) -> set[str]:
    """What `meshes.exclude` matches, written out independently with every path resolved
    (`os.path.realpath`), as `Excluded` did for every record before it trusted stored paths."""
    path = record.path
    absolute = path if os.path.isabs(path) else str(Path(out_dir) / path)
    keys = {record.id, path, absolute, os.path.realpath(absolute), Path(path).stem}
    if Path(path).stem in ("model", "model_normalized"):  # ShapeNet: the model's folder
        parent = Path(path).parent
        keys.add(parent.parent.name if parent.name == "models" else parent.name)
    return keys


def _shapenet_links(tmp_path: Path, root: Path) -> None:
    """ShapeNet's layout, with a model folder that is a link to another and one that links
    out of the root (each model resolved by the listing)."""
    from tests.pipeline.sources.helpers import make_shapenet

    make_shapenet(root)
    (root / "03211117" / "m9").symlink_to(root / "03211117" / "m1", target_is_directory=True)
    outside = tmp_path / "outside-model"
    shutil.copytree(root / "02747177" / "a1", outside)
    (root / "02747177" / "a9").symlink_to(outside, target_is_directory=True)


@pytest.mark.parametrize("repository", [False, True])
@pytest.mark.parametrize("out_spelling", ["absolute", "relative"])
@pytest.mark.parametrize("out_place", ["outside", "inside", "outside_through_symlink"])
@pytest.mark.parametrize("root_spelling", ["absolute", "relative", "symlink"])
@pytest.mark.parametrize("source", ["folder", "objaverse", "modelnet", "shapenet"])
def test_exclusion_keys_are_those_of_resolving_every_path(
    tmp_path, monkeypatch, source, root_spelling, out_place, out_spelling, repository
):
    """`Excluded` takes an ok row's stored path as resolved (the listing's invariant, tested
    in test_stored_paths.py) and resolves only failure rows (a link's own path). Over every
    hardening case of the listings (links in, out and broken, symlinked folders, root and
    output folder spelled and placed every way) its keys, and so what an exclude list drops,
    are those of resolving every path."""
    from cg3d.pipeline.sources import Excluded, source_listing
    from tests.pipeline.sources.helpers import plant_links

    real_root = tmp_path / "data" / "root"
    inside = real_root / "chair" / ("train" if source == "modelnet" else "out")
    if source == "shapenet":  # a model's folder: its file is stored relative to it
        inside = real_root / "03001627" / "c1"
    out = {
        "outside": tmp_path / "out",
        "inside": inside,
        "outside_through_symlink": tmp_path / "linked-out",
    }[out_place]
    if out_place == "outside_through_symlink":
        (tmp_path / "real-out").mkdir()
        out.symlink_to(tmp_path / "real-out", target_is_directory=True)
    if source == "shapenet":
        _shapenet_links(tmp_path, real_root)
    else:
        plant_links(tmp_path, real_root, source, out)
    (tmp_path / "root-link").symlink_to(real_root, target_is_directory=True)
    if repository:  # the rows beside the output folder stored with `../`
        (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    root = {"absolute": real_root, "relative": Path("data/root"), "symlink": Path("root-link")}[
        root_spelling
    ]
    out.mkdir(parents=True, exist_ok=True)
    out = out if out_spelling == "absolute" else Path(os.path.relpath(out, tmp_path))
    config = MeshesConfig(source=source, root=str(root), workers=1)
    records = list(source_listing(source)(config, out).records)
    assert any(r.status == "ok" for r in records)
    if source in ("folder", "objaverse"):  # they list links as failure rows, paths unresolved
        assert any(r.status != "ok" for r in records)
    excluded = Excluded(set(), out)
    for record in records:
        assert excluded.keys(record) == reference_keys(record, out), record
    # what a list of resolved paths drops: every other record, by its real path
    names = {os.path.realpath(Path(out) / r.path) for r in records[::2]}
    kept = list(Excluded(names, out).filter(records))
    assert kept == [r for r in records if os.path.realpath(Path(out) / r.path) not in names]


def test_excluding_n_listed_files_resolves_no_file(tmp_path, monkeypatch):
    """Before: `Excluded` resolved every record's path, an lstat per component and a stat per
    file, bringing back the per-file cost the listings shed. Now 10 ok rows and 200 cost the
    same calls."""
    from cg3d.pipeline.sources import Excluded, source_listing
    from tests.pipeline.sources.helpers import count_path_resolution, mesh_files

    costs = []
    for n in (10, 200):
        root, out = tmp_path / f"root-{n}", tmp_path / f"out-{n}"
        out.mkdir()
        paths = mesh_files(root, "objaverse", [f"{k:04d}" for k in range(n)])
        config = MeshesConfig(source="objaverse", root=str(root.resolve()), workers=1)
        records = list(source_listing("objaverse")(config, out).records)
        assert len(records) == n and all(r.status == "ok" for r in records)
        counts = count_path_resolution(monkeypatch)
        kept = list(Excluded({str(paths[0].resolve())}, out).filter(records))
        monkeypatch.undo()
        assert len(kept) == n - 1
        costs.append(counts)
    assert costs[1] == costs[0]
