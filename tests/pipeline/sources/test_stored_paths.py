"""The manifest's paths are decided without resolving each listed file.

`stored_path` follows every symlink and writes a path relative to the output folder when the
file lies under it, absolute otherwise (docs/formats.md). Resolving a path costs an lstat per
component: at Objaverse scale that is millions of system calls, so the listings resolve their
root (and folders) once and each file only when its `DirEntry` says it is a link. These tests
hold the listings to the same paths as resolving every file would give, root and output
folder spelled and placed every way, and to a cost that does not grow with the file count.
"""

import os
from pathlib import Path

import pytest

from cg3d.params import MeshesConfig
from cg3d.pipeline.sources import folder, modelnet, objaverse, source_listing
from tests.pipeline.sources.helpers import count_path_resolution, mesh_files, plant_links

SOURCES = {"folder": folder, "objaverse": objaverse, "modelnet": modelnet}


def resolving_stored_path(path: Path, out_dir: Path, resolved: bool = False) -> str:
    """The rule written out independently, resolving every path whatever the caller knows."""
    real, out = os.path.realpath(path), os.path.realpath(out_dir)
    return os.path.relpath(real, out) if real.startswith(out + os.sep) else real


def _listed(source: str, root: Path, out: Path) -> list:
    config = MeshesConfig(source=source, root=str(root), workers=1)
    return list(source_listing(source)(config, out).records)


ROOTS = ["absolute", "relative", "symlink"]
OUTS = ["outside", "inside", "outside_through_symlink"]


@pytest.mark.parametrize("out_place", OUTS)
@pytest.mark.parametrize("root_spelling", ROOTS)
@pytest.mark.parametrize("source", list(SOURCES))
def test_stored_paths_are_what_resolving_every_file_gives(
    tmp_path, monkeypatch, source, root_spelling, out_place
):
    real_root = tmp_path / "data" / "root"
    out = {
        "outside": tmp_path / "out",
        "inside": real_root / "chair" / ("train" if source == "modelnet" else "out"),
        "outside_through_symlink": tmp_path / "linked-out",
    }[out_place]
    if out_place == "outside_through_symlink":
        (tmp_path / "real-out").mkdir()
        out.symlink_to(tmp_path / "real-out", target_is_directory=True)
    plant_links(tmp_path, real_root, source, out)
    (tmp_path / "root-link").symlink_to(real_root, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    root = {
        "absolute": real_root,
        "relative": Path("data/root"),
        "symlink": Path("root-link"),
    }[root_spelling]
    out.mkdir(parents=True, exist_ok=True)
    listed = _listed(source, root, out)
    monkeypatch.setattr(SOURCES[source], "stored_path", resolving_stored_path)
    expected = _listed(source, root, out)
    assert [r.path for r in listed] == [r.path for r in expected]
    assert listed == expected  # every field, failure rows included
    # the cases that tell a resolving rule from a lexical one are in the listing
    assert not any("0002" in Path(r.path).name for r in listed)  # a link: its target's path
    assert any(r.path.startswith(os.path.realpath("outside")) for r in listed)  # a link out
    if out_place == "inside":
        assert any(r.path == Path(r.path).name for r in listed)  # relative to the out
    if source == "modelnet":  # the symlinked class folder: its files stored as chair's
        assert [r.path for r in listed if r.class_name == "sofa"] == [
            r.path for r in listed if r.class_name == "chair"
        ]


@pytest.mark.parametrize("source", list(SOURCES))
def test_listing_n_files_costs_no_path_resolution_per_file(tmp_path, monkeypatch, source):
    """The same calls of `Path.resolve`, `os.lstat` and `os.stat` for 10 files as for 200:
    the root and each folder are resolved once, no file is (none is a link)."""
    costs = []
    for n in (10, 200):
        root, out = tmp_path / f"root-{n}", tmp_path / f"out-{n}"
        out.mkdir()
        mesh_files(root, source, [f"{k:04d}" for k in range(n)])
        counts = count_path_resolution(monkeypatch)
        records = _listed(source, root, out)
        monkeypatch.undo()
        assert len(records) == n and all(r.status == "ok" for r in records)
        assert all(r.path.startswith(str(root.resolve())) for r in records)
        costs.append(counts)
    assert costs[1] == costs[0]
    assert costs[0]["resolve"] < 10  # fewer than the files: the root, the output folder…
