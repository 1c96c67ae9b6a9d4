"""Confinement does not depend on how --root is spelled (issue 25 §1).

The rule: a reader resolves its root once, where it comes in, and checks every path it opens
against that one resolved root. So for every benchmark reader, and every spelling of the same
root (absolute, relative, through a symlink, with `..` through a real folder or a symlink), a
file that a symlink takes outside is refused the same way, a pickle outside never runs, and a
clean set reads the same shapes.
"""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cg3d.errors import UsageError
from cg3d.eval.readers import open_benchmark

from .files import (
    write_modelnet,
    write_openshape,
    write_outside,
    write_scanobjectnn,
    write_shapenet55,
    write_shards,
    write_ulip_dat,
)

SPELLINGS = [
    "absolute",
    "relative",
    "symlink",
    "relative_symlink",
    "dotdot",
    "relative_dotdot",
    "dotdot_through_symlink",
]


def spelled(tmp_path: Path, real: Path, how: str) -> Path:
    """`real` (a folder under tmp_path, the current folder) spelled the way `how` says."""
    relative = real.relative_to(tmp_path)
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True, exist_ok=True)
    link = tmp_path / "links" / "link"
    if not link.is_symlink():
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(real, target_is_directory=True)
    return {
        "absolute": real,
        "relative": relative,
        "symlink": link,
        "relative_symlink": Path("links/link"),
        "dotdot": tmp_path / "elsewhere" / "deeper" / ".." / ".." / relative,
        "relative_dotdot": Path("elsewhere/..") / relative,
        # links/link/.. is the link's target's parent (tmp_path), not `links` (as a lexical
        # normpath would have it): the root must be what the system opens
        "dotdot_through_symlink": Path("links/link/..") / real.name,
    }[how]


@pytest.fixture
def outside(tmp_path) -> Path:
    """Files beside the root that a reader must never open (`write_outside`)."""
    return write_outside(tmp_path / "outside")


def relink(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


# Each case: (dataset, build(root, outside) -> None) where build plants, inside a valid set, an
# index-level file (one the reader needs before any shape) that is a symlink out of the root.
def _modelnet_list(classes: int) -> Callable[[Path, Path], None]:
    def build(root: Path, outside: Path) -> None:
        write_modelnet(root, classes)
        (outside / "list.txt").write_text("airplane_0001\n")
        relink(root / f"modelnet{classes}_test.txt", outside / "list.txt")

    return build


def _modelnet_names(root: Path, outside: Path) -> None:
    write_modelnet(root, 40)
    (outside / "names.txt").write_text((root / "modelnet40_shape_names.txt").read_text())
    relink(root / "modelnet40_shape_names.txt", outside / "names.txt")


def _ulip(root: Path, outside: Path) -> None:
    root.mkdir()
    (root / "modelnet40_test_8192pts_fps.dat").symlink_to(outside / "evil.pickle")


def _scanobjectnn(root: Path, outside: Path) -> None:
    relative = "main_split/test_objectdataset_augmentedrot_scale75.h5"
    write_scanobjectnn(outside, "copy.h5")
    (root / "main_split").mkdir(parents=True)
    (root / relative).symlink_to(outside / "copy.h5")


def _shapenet_list(root: Path, outside: Path) -> None:
    write_shapenet55(root, ["02691156-a1b2.npy"])
    (outside / "test.txt").write_text("02691156-a1b2.npy\n")
    relink(root / "test.txt", outside / "test.txt")


def _openshape_split(root: Path, outside: Path) -> None:
    write_openshape(root, ["mug"])
    (outside / "lvis.json").write_text((root / "lvis.json").read_text())
    relink(root / "lvis.json", outside / "lvis.json")


def _shards_index(root: Path, outside: Path) -> None:
    write_shards(root, per_class=1)
    (outside / "index.json").write_text((root / "index.json").read_text())
    relink(root / "index.json", outside / "index.json")


def _shards_shard(root: Path, outside: Path) -> None:
    write_shards(root, per_class=1)
    shard = next((root / "test").glob("*.tar"))
    (outside / "shard.tar").write_bytes(shard.read_bytes())
    relink(shard, outside / "shard.tar")


INDEX_ESCAPES = {
    "modelnet40 list": ("modelnet40", _modelnet_list(40)),
    "modelnet10 list": ("modelnet10", _modelnet_list(10)),
    "modelnet40 names": ("modelnet40", _modelnet_names),
    "ulip .dat": ("ulip_modelnet40", _ulip),
    "scanobjectnn h5": ("scanobjectnn", _scanobjectnn),
    "shapenet55 list": ("shapenet55", _shapenet_list),
    "openshape split": ("objaverse-lvis", _openshape_split),
    "shards index": ("shards", _shards_index),
    "shards shard": ("shards", _shards_shard),
    "lvis shards index": ("objaverse-lvis", _shards_index),
}


@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize("case", list(INDEX_ESCAPES))
def test_a_needed_file_symlinked_out_is_refused_however_the_root_is_spelled(
    tmp_path, outside, monkeypatch, case, how
):
    dataset, build = INDEX_ESCAPES[case]
    build(tmp_path / "root", outside)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="outside"):
        open_benchmark(dataset, spelled(tmp_path, tmp_path / "root", how), allow_pickle=True)
    assert not (outside / "PICKLE_RAN").exists()


@pytest.mark.parametrize("how", SPELLINGS)
def test_a_ulip_file_named_directly_is_refused_when_it_is_a_symlink_out(
    tmp_path, outside, monkeypatch, how
):
    _ulip(tmp_path / "root", outside)
    monkeypatch.chdir(tmp_path)
    named = spelled(tmp_path, tmp_path / "root", how) / "modelnet40_test_8192pts_fps.dat"
    with pytest.raises(UsageError, match="outside"):
        open_benchmark("ulip_modelnet40", named, allow_pickle=True)
    assert not (outside / "PICKLE_RAN").exists()


# Each case: (dataset, build(root, outside) -> number of shapes planted outside) for a set whose
# index names shapes through symlinks (and paths) that lead out: each is refused and counted.
def _modelnet_shapes(root: Path, outside: Path) -> int:
    ids = write_modelnet(root, 40)
    (root / "airplane" / "airplane_9999.txt").symlink_to(outside / "cloud.txt")
    escapes = ["airplane_/../../../outside/cloud", "airplane_9999"]
    (root / "modelnet40_test.txt").write_text("\n".join(ids + escapes) + "\n")
    return len(escapes)


def _shapenet_shapes(root: Path, outside: Path) -> int:
    write_shapenet55(root, ["02691156-a1b2.npy"])
    (root / "shapenet_pc" / "02691156-link.npy").symlink_to(outside / "cloud.npy")
    escapes = ["../../outside/cloud.npy", "02691156-link.npy", str(outside / "cloud.npy")]
    (root / "test.txt").write_text("\n".join(["02691156-a1b2.npy", *escapes]) + "\n")
    return len(escapes)


def _openshape_shapes(root: Path, outside: Path) -> int:
    write_openshape(root, ["mug"])
    (root / "objaverse-processed" / "link.npy").symlink_to(outside / "evil.pickle")
    entries = json.loads((root / "lvis.json").read_text())
    escapes = ["objaverse-processed/link.npy", "../outside/evil.pickle", "root/../outside/x"]
    entries += [{"category": "mug", "uid": f"x{i}", "data_path": p} for i, p in enumerate(escapes)]
    (root / "lvis.json").write_text(json.dumps(entries))
    return 3  # the third climbs out too (to no file): refused before anything is probed


SHAPE_ESCAPES = {
    "modelnet40": _modelnet_shapes,
    "shapenet55": _shapenet_shapes,
    "objaverse-lvis": _openshape_shapes,
}


@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize("dataset", list(SHAPE_ESCAPES))
def test_shapes_symlinked_out_are_refused_and_counted_however_the_root_is_spelled(
    tmp_path, outside, monkeypatch, dataset, how
):
    planted = SHAPE_ESCAPES[dataset](tmp_path / "root", outside)
    monkeypatch.chdir(tmp_path)
    absolute = open_benchmark(dataset, tmp_path / "root", allow_pickle=True)
    expected = [shape.key for shape in absolute.shapes()]
    benchmark = open_benchmark(
        dataset, spelled(tmp_path, tmp_path / "root", how), allow_pickle=True
    )
    assert [shape.key for shape in benchmark.shapes()] == expected
    assert len(expected) >= 1 and benchmark.refused() == planted
    assert not (outside / "PICKLE_RAN").exists()


def _clean_sets(root: Path) -> dict[str, Path]:
    """Valid sets of every reader under `root`, by dataset, at the path each reader takes."""
    write_modelnet(root / "modelnet")
    (root / "ulip").mkdir(parents=True)
    write_ulip_dat(root / "ulip" / "modelnet40_test_8192pts_fps.dat")
    write_scanobjectnn(root / "sonn", "main_split/test_objectdataset_augmentedrot_scale75.h5")
    write_shapenet55(root / "shapenet", ["02691156-a1b2.npy", "03001627-c3d4.npy"])
    write_openshape(root / "openshape", ["mug", "chair"])
    write_shards(root / "shards", per_class=1)
    return {
        "modelnet40": root / "modelnet",
        "ulip_modelnet40": root / "ulip",
        "scanobjectnn": root / "sonn",
        "shapenet55": root / "shapenet",
        "objaverse-lvis": root / "openshape",
        "shards": root / "shards",
    }


@pytest.mark.parametrize("how", SPELLINGS)
def test_every_reader_reads_the_same_shapes_however_the_root_is_spelled(tmp_path, monkeypatch, how):
    sets = _clean_sets(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    for dataset, real in sets.items():
        expected = open_benchmark(dataset, real, allow_pickle=True)
        keys = [shape.key for shape in expected.shapes()]
        # each set's own folder spelled `how` (the links are made per set)
        for stale in (tmp_path / "links").glob("*"):
            stale.unlink()
        root = spelled(tmp_path, real, how)
        got = open_benchmark(dataset, root, allow_pickle=True)
        assert [shape.key for shape in got.shapes()] == keys and keys, (dataset, root)
        assert got.skipped() == 0 and got.refused() == 0
