"""The manifest's paths are decided without resolving each listed file.

`stored_path` follows every symlink and writes a path relative to the output folder when the
file lies under it or one repository holds both, absolute otherwise (docs/formats.md). Resolving a path costs an lstat per
component: at Objaverse scale that is millions of system calls, so the listings resolve their
root (and folders) once and each file only when its `DirEntry` says it is a link. These tests
hold the listings to the same paths as resolving every file would give, root and output
folder spelled and placed every way, and to a cost that does not grow with the file count.
"""

import os
import shutil
from pathlib import Path

import pytest

from cg3d.params import MeshesConfig
from cg3d.pipeline.sources import folder, modelnet, objaverse, source_listing
from tests.pipeline.sources.helpers import count_path_resolution, mesh_files, plant_links

SOURCES = {"folder": folder, "objaverse": objaverse, "modelnet": modelnet}


def resolving_stored_path(path: Path, out_dir: Path, resolved: bool = False) -> str:
    """The rule written out independently, resolving every path whatever the caller knows."""
    real, out = os.path.realpath(path), os.path.realpath(out_dir)
    if real.startswith(out + os.sep):
        return os.path.relpath(real, out)
    folder = out
    while folder != "/" and not {".git", ".dvc"} & set(os.listdir(folder)):
        folder = os.path.dirname(folder)
    if folder != "/" and real.startswith(folder + os.sep):
        return os.path.relpath(real, out)  # `../`: one repository holds both
    return real


def _listed(source: str, root: Path, out: Path) -> list:
    config = MeshesConfig(source=source, root=str(root), workers=1)
    return list(source_listing(source)(config, out).records)


ROOTS = ["absolute", "relative", "symlink"]
OUTS = ["outside", "inside", "outside_through_symlink"]


@pytest.mark.parametrize("repository", ["", ".git", ".dvc"])
@pytest.mark.parametrize("out_place", OUTS)
@pytest.mark.parametrize("root_spelling", ROOTS)
@pytest.mark.parametrize("source", list(SOURCES))
def test_stored_paths_are_what_resolving_every_file_gives(
    tmp_path, monkeypatch, source, root_spelling, out_place, repository
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
    if repository:  # tmp_path a project: root, output and the link targets all in it
        (tmp_path / repository).mkdir()
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
    outside = os.path.realpath("outside")
    assert any(os.path.realpath(out / r.path).startswith(outside) for r in listed)  # a link out
    if out_place == "inside":
        assert any(r.path == Path(r.path).name for r in listed)  # relative to the out
    elif repository:  # the files beside the output folder, in the repository: `../`
        assert all(r.path.startswith("../") for r in listed if r.status == "ok")
    else:
        assert all(Path(r.path).is_absolute() for r in listed if r.status == "ok")
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


def test_a_project_cloned_elsewhere_writes_the_same_manifest(tmp_path, monkeypatch):
    """A repository holding its data (`meshes.root: data/raw`, out `data/meshes`) and a clone
    of it at another place, one folder deeper: the same manifest bytes, so the teammate's `dvc repro` reruns nothing
    after the meshes stage. The clone reads its own files, inside its own root. Absolute
    paths in it (before) named the first project's files: another manifest, and a clone
    whose first copy was removed read no mesh."""
    from cg3d.formats.manifest import MANIFEST_NAME, manifest_root, mesh_file, read_manifest
    from cg3d.pipeline.sources import build_manifest
    from tests.pipeline.sources.helpers import box, write_mesh

    first, clone = tmp_path / "alice" / "cg3d", tmp_path / "bob" / "work" / "cg3d"
    (first / ".dvc").mkdir(parents=True)
    for height, name in enumerate(("chair/a.obj", "chair/b.obj", "table/t.obj"), 1):
        write_mesh(first / "data" / "raw" / name, box((1, 1, height)))
    shutil.copytree(first, clone)
    config = MeshesConfig(source="folder", root="data/raw", workers=1)
    for project in (first, clone):
        monkeypatch.chdir(project)
        build_manifest(config, Path("data/meshes"))
    manifest = Path("data") / "meshes" / MANIFEST_NAME
    assert (clone / manifest).read_bytes() == (first / manifest).read_bytes()
    shutil.rmtree(first)
    records = read_manifest(clone / "data" / "meshes")
    assert [r.status for r in records] == ["ok"] * 3
    for record in records:
        assert mesh_file(clone / "data" / "meshes", record).resolve().is_relative_to(clone)
        assert mesh_file(clone / "data" / "meshes", record).is_file()
    assert manifest_root(clone / "data" / "meshes").resolve() == clone / "data" / "raw"


def test_files_outside_the_repository_are_stored_absolute(tmp_path, monkeypatch):
    """A root outside the output folder's repository (or no repository): absolute paths (a
    `../` from the output folder would break when it alone moves), whatever the working
    folder."""
    from cg3d.formats.manifest import manifest_root, read_manifest
    from cg3d.pipeline.sources import build_manifest
    from tests.pipeline.sources.helpers import box, write_mesh

    write_mesh(tmp_path / "raw" / "chair" / "a.obj", box())
    (tmp_path / "project" / ".git").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a working folder that holds both changes nothing
    config = MeshesConfig(source="folder", root="raw", workers=1)
    for out in (tmp_path / "meshes", tmp_path / "project" / "data" / "meshes"):
        build_manifest(config, out)
        assert [r.path for r in read_manifest(out)] == [
            str((tmp_path / "raw" / "chair" / "a.obj").resolve())
        ]
        assert manifest_root(out) == (tmp_path / "raw").resolve()
