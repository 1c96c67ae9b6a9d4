"""A folder that cannot be listed (no permission: a shared dataset's folder of another group)
is a failure row naming it, in every walk of a user's tree; before, the walks passed over it
(as `rglob` does) and its meshes were lost without a word. Tests run as root in CI, where
chmod 000 does not bite: `os.scandir` is made to refuse the folder instead."""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from cg3d.app.api import check_shape_file
from cg3d.app.batch import list_shapes
from cg3d.errors import UsageError
from cg3d.files import UNLISTED_FOLDER
from cg3d.formats.manifest import read_manifest
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.sources.helpers import box, make_glbs, make_shapenet, write_mesh, write_off


def refuse_listing(monkeypatch, *folders: Path, code: int = errno.EACCES, remove=False) -> None:
    """`os.scandir` raises PermissionError for `folders`, as for a folder mode 000 to a user
    (or the OSError of `code`; `remove`: the folder is removed first, as by another process)."""
    blocked = {os.path.realpath(folder) for folder in folders}
    real = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and os.path.realpath(path) in blocked:  # (fds: rmtree's)
            if remove:
                shutil.rmtree(path)
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def rows_of(out: Path) -> dict[str, tuple[str, str]]:
    return {Path(r.path).name: (r.status, r.error) for r in read_manifest(out)}


def test_folder_source_gives_an_unreadable_folder_and_class_a_row(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write_mesh(root / "chair" / "fine.obj", box((1, 1, 2)))
    write_mesh(root / "chair" / "locked" / "lost.obj", box((1, 2, 2)))
    write_mesh(root / "table" / "lost.obj", box((2, 2, 2)))
    refuse_listing(monkeypatch, root / "chair" / "locked", root / "table")
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "out")
    rows = rows_of(tmp_path / "out")
    assert rows == {
        "fine.obj": ("ok", ""),
        "locked": ("unreadable", UNLISTED_FOLDER),
        "table": ("unreadable", UNLISTED_FOLDER),
    }


def test_objaverse_gives_an_unreadable_folder_a_row(tmp_path, monkeypatch):
    root = tmp_path / "root"
    make_glbs(root)
    uids = ["aa11", "bb22", "cc33", "dd44"]
    (root / "annotations.json").write_text(json.dumps({"mug": uids}))
    refuse_listing(monkeypatch, root / "glbs" / "000-001")
    config = MeshesConfig(
        source="objaverse", root=str(root), annotations=str(root / "annotations.json"), workers=1
    )
    build_manifest(config, tmp_path / "out")
    rows = rows_of(tmp_path / "out")
    assert rows["000-001"] == ("unreadable", UNLISTED_FOLDER)
    assert rows["aa11.glb"][0] == rows["cc33.glb"][0] == "ok"


def test_modelnet_gives_an_unreadable_split_and_class_folder_a_row(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write_off(root / "chair" / "train" / "chair_0001.off", box((1, 1, 2)))
    write_off(root / "chair" / "test" / "chair_0002.off", box((1, 2, 2)))
    write_off(root / "sofa" / "train" / "sofa_0001.off", box((2, 2, 1)))
    refuse_listing(monkeypatch, root / "chair" / "test", root / "sofa")
    build_manifest(MeshesConfig(source="modelnet", root=str(root), workers=1), tmp_path / "out")
    rows = rows_of(tmp_path / "out")
    assert rows == {
        "chair_0001.off": ("ok", ""),
        "test": ("unreadable", UNLISTED_FOLDER),
        "sofa": ("unreadable", UNLISTED_FOLDER),
    }


def test_shapenet_gives_an_unreadable_synset_a_row(tmp_path, monkeypatch):
    root = tmp_path / "root"
    make_shapenet(root)
    refuse_listing(monkeypatch, root / "02747177")
    build_manifest(MeshesConfig(source="shapenet", root=str(root), workers=1), tmp_path / "out")
    rows = [(Path(r.path).name, r.status, r.error) for r in read_manifest(tmp_path / "out")]
    assert ("02747177", "unreadable", UNLISTED_FOLDER) in rows
    assert sum(status == "ok" for _, status, _ in rows) == 4  # the other synsets' models


def test_a_folder_walk_of_classify_and_embed_gives_an_unreadable_folder_a_row(
    tmp_path, monkeypatch
):
    write_mesh(tmp_path / "shapes" / "fine.obj", box((1, 1, 2)))
    write_mesh(tmp_path / "shapes" / "locked" / "lost.obj", box((1, 2, 2)))
    refuse_listing(monkeypatch, tmp_path / "shapes" / "locked")
    paths = list_shapes(tmp_path / "shapes")
    assert [p.name for p in paths] == ["fine.obj", "locked"]
    with pytest.raises(UsageError) as caught:  # the failed row's reason
        check_shape_file(paths[1])
    assert str(caught.value) == f"{paths[1]}: {UNLISTED_FOLDER}"


@pytest.mark.parametrize(
    "code, reason",
    [
        (errno.ENOENT, "a folder removed while the tree was walked: its files are not listed"),
        (
            errno.ENOTDIR,
            "a folder that cannot be listed (Not a directory): its files are not listed",
        ),
        (
            errno.EIO,
            "a folder that cannot be listed (Input/output error): its files are not listed",
        ),
    ],
)
def test_a_folder_that_goes_or_fails_mid_walk_is_a_row_of_its_cause(
    tmp_path, monkeypatch, code, reason
):
    """Removed (or made a file) after its parent was listed, or an I/O error: a row saying so,
    not an OSError that ended the stage; not the permission words either."""
    root = tmp_path / "root"
    write_mesh(root / "chair" / "fine.obj", box((1, 1, 2)))
    write_mesh(root / "chair" / "going" / "lost.obj", box((1, 2, 2)))
    refuse_listing(monkeypatch, root / "chair" / "going", code=code)
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "out")
    assert rows_of(tmp_path / "out") == {"fine.obj": ("ok", ""), "going": ("unreadable", reason)}


def test_a_class_folder_removed_mid_walk_ends_nothing(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write_mesh(root / "chair" / "fine.obj", box((1, 1, 2)))
    write_mesh(root / "table" / "lost.obj", box((1, 2, 2)))
    refuse_listing(monkeypatch, root / "table", code=errno.ENOENT, remove=True)
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "out")
    assert rows_of(tmp_path / "out")["fine.obj"] == ("ok", "")


@pytest.mark.parametrize("code", [errno.ESTALE, errno.ETIMEDOUT, errno.EMFILE])
def test_a_machine_condition_mid_walk_stops_the_stage_and_a_resumed_run_lists_the_folder(
    tmp_path, monkeypatch, code
):
    """A stale NFS handle, a timeout or no file descriptor left is the machine's, not the
    folder's: the stage stops naming the folder (one line in `cli.main`), where before the
    whole class became unreadable rows that the resumed run kept."""
    root = tmp_path / "root"
    write_mesh(root / "chair" / "fine.obj", box((1, 1, 2)))
    write_mesh(root / "table" / "kept.obj", box((1, 2, 2)))
    config = MeshesConfig(source="folder", root=str(root), workers=1)
    with monkeypatch.context() as patched:
        refuse_listing(patched, root / "table", code=code)
        with pytest.raises(OSError) as caught:
            build_manifest(config, tmp_path / "out")
    assert caught.value.errno == code and caught.value.filename == str(root / "table")
    build_manifest(config, tmp_path / "out")  # the hiccup is over: the resumed run
    assert rows_of(tmp_path / "out") == {"fine.obj": ("ok", ""), "kept.obj": ("ok", "")}
