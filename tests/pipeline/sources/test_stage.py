import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import trimesh

from cg3d.errors import UsageError
from cg3d.formats.failures import read_failures
from cg3d.formats.manifest import CLASSES_NAME, read_manifest
from cg3d.pipeline import sources
from cg3d.pipeline.sources import MeshesConfig, build_manifest, seeded_split
from tests.pipeline.sources.helpers import box, manifest_rows, write_mesh, write_off

KEY_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def folder_with_every_bad_kind(root: Path) -> None:
    good = root / "thing"
    write_mesh(good / "good.obj", box())
    write_mesh(good / "copy of good.obj", box())  # same bytes: a duplicate
    write_mesh(good / "other.stl", box((1, 2, 3)))
    (good / "garbage.off").write_text("not a mesh at all\n")
    (good / "zero.ply").write_bytes(b"")
    write_off(
        good / "line.off",
        trimesh.Trimesh([[0, 0, 0], [1, 1, 1], [2, 2, 2]], [[0, 1, 2]], process=False),
    )
    (good / "nan.off").write_text("OFF\n3 1 0\n0 0 nan\n1 0 0\n0 1 0\n3 0 1 2\n")
    (good / "huge.off").write_text("OFF\n3 1 0\n0 0 0\n1e9 0 0\n0 1 0\n3 0 1 2\n")
    (good / "scene.blend").write_bytes(b"BLENDER-v300")


def test_bad_inputs_become_rows_and_the_run_goes_on(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    folder_with_every_bad_kind(root)
    summary = build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = {Path(r["path"]).name: r for r in manifest_rows(out)}
    assert {name: r["status"] for name, r in rows.items()} == {
        "copy of good.obj": "ok",  # sorted by id, "copy of good" comes first: the original
        "good.obj": "duplicate",
        "other.stl": "ok",
        "garbage.off": "unreadable",
        "zero.ply": "empty",
        "line.off": "degenerate",
        "nan.off": "non_finite",
        "huge.off": "absurd_size",
        "scene.blend": "unsupported_format",
    }
    assert rows["good.obj"]["error"] == f"same content as {rows['copy of good.obj']['id']}"
    assert all(r["error"] for r in rows.values() if r["status"] != "ok")
    assert all(r["sha256"] for r in rows.values() if r["status"] == "ok")
    assert summary.counts == {
        "ok": 2, "duplicate": 1, "unreadable": 1, "empty": 1, "degenerate": 1,
        "non_finite": 1, "absurd_size": 1, "unsupported_format": 1,
    }  # fmt: skip
    failures = read_failures(out / "failures.parquet")
    assert sorted(f["id"] for f in failures) == sorted(
        r["id"] for r in rows.values() if r["status"] != "ok"
    )
    assert all(f["stage"] == "meshes" for f in failures)
    assert not (out / sources.WORK_DIR).exists()
    assert len(read_manifest(out, ok_only=True)) == 2


def test_parallel_chunks_give_the_same_manifest(tmp_path: Path) -> None:
    root = tmp_path / "in"
    folder_with_every_bad_kind(root)
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "one")
    config = MeshesConfig(source="folder", root=str(root), workers=2, chunk_size=3)
    summary = build_manifest(config, tmp_path / "many")
    assert summary.chunks_total == 3
    assert manifest_rows(tmp_path / "one") == manifest_rows(tmp_path / "many")


def test_a_killed_run_resumes_without_revalidating(tmp_path: Path, monkeypatch) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    folder_with_every_bad_kind(root)
    config = MeshesConfig(source="folder", root=str(root), workers=1, chunk_size=4)

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "merge_parts", killed)
    with pytest.raises(KeyboardInterrupt):
        build_manifest(config, out)
    monkeypatch.undo()
    summary = build_manifest(replace(config, workers=2), out)  # more processes: same plan
    assert (summary.chunks_run, summary.chunks_total) == (0, 3)
    assert len(manifest_rows(out)) == 9


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"source": "nope"}, "meshes.source"),
        ({"source": "folder", "root": ""}, "meshes.root"),
        ({"source": "modelnet", "root": "/no/such/folder"}, "meshes.root"),
        ({"per_class": -1}, "meshes.per_class"),
        ({"test_fraction": 1.0}, "meshes.test_fraction"),
        ({"chunk_size": 0}, "meshes.chunk_size"),
        ({"executor": "dask"}, "meshes.executor"),
    ],
)
def test_wrong_parameters_name_the_param(tmp_path: Path, values: dict, key: str) -> None:
    with pytest.raises(UsageError, match=f"^{key}"):
        build_manifest(MeshesConfig(**values), tmp_path / "out")


@pytest.mark.parametrize("source", ["modelnet", "shapenet", "objaverse", "folder"])
def test_empty_root_is_a_usage_error(tmp_path: Path, source: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="^meshes.root: .* is empty"):
        build_manifest(MeshesConfig(source=source, root=str(tmp_path / "empty")), tmp_path / "out")


def test_cli_missing_root_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cg3d",
            "meshes",
            "--source",
            "modelnet",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "meshes.root" in lines[0], done.stderr


def test_cli_writes_manifest_and_classes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cg3d",
            "meshes",
            "--out",
            str(out),
            "--per-class",
            "2",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "20 objects from synthetic in 10 classes" in " ".join(done.stdout.split())
    assert len(json.loads((out / CLASSES_NAME).read_text())) == 10
    assert len(manifest_rows(out)) == 20


def test_seeded_split_is_disjoint_stable_and_covers_small_classes() -> None:
    keys = [f"k{i}" for i in range(10)]
    split = seeded_split(keys, seed=3, test_fraction=0.2)
    assert sorted(split) == keys
    assert list(split.values()).count("test") == 2
    assert seeded_split(list(reversed(keys)), 3, 0.2) == split
    assert seeded_split(keys, 4, 0.2) != split
    assert list(seeded_split(["a", "b"], 0, 0.2).values()).count("test") == 1


def test_ids_are_unique_and_key_safe(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    folder_with_every_bad_kind(root)
    write_mesh(root / "thing" / "a.b" / "model.obj", box((1, 1, 2)))
    write_mesh(root / "thing" / "a_b" / "model.obj", box((1, 1, 3)))
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    ids = [r["id"] for r in manifest_rows(out)]
    assert len(ids) == len(set(ids)) == 11
    assert all(set(i) <= KEY_SAFE for i in ids)


def test_copies_of_checked_bytes_are_not_read_again(tmp_path: Path, monkeypatch) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    for name in ("a.obj", "b.obj", "c.obj", "a.ply", "b.ply"):
        write_mesh(root / "thing" / name, box())
    (root / "thing" / "bad1.off").write_text("not a mesh\n")
    (root / "thing" / "bad2.off").write_text("not a mesh\n")
    read = []
    real = sources.check_geometry
    monkeypatch.setattr(sources, "check_geometry", lambda path: read.append(path) or real(path))
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    # One OBJ read for three copies; PLY (may read a texture) and failures every time.
    assert sorted(Path(p).name for p in read) == ["a.obj", "a.ply", "b.ply", "bad1.off", "bad2.off"]
    rows = {Path(r["path"]).name: r for r in manifest_rows(out)}
    assert [rows[n]["status"] for n in ("a.obj", "b.obj", "c.obj", "a.ply", "b.ply")] == [
        "ok", "duplicate", "duplicate", "ok", "duplicate",
    ]  # fmt: skip
    assert rows["bad2.off"]["status"] == "unreadable" and rows["bad2.off"]["sha256"] == ""


def test_the_lazy_walk_keeps_the_order_of_sorted_paths(tmp_path: Path) -> None:
    names = ["a b/x.obj", "a/x.obj", "a/y/z.obj", "a/.h/q.obj", ".h.obj", "b.obj", "A.obj",
             "a/y.obj", "a/y0/z.obj"]  # fmt: skip
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    # a symlinked folder is not entered, but named (its source gives it a failure row)
    (tmp_path / "linked").symlink_to(tmp_path / "a")
    walked = [
        Path(entry).relative_to(tmp_path).as_posix()
        for entry in sources.iter_sorted_entries(tmp_path)
    ]
    assert walked == ["A.obj", "a/x.obj", "a/y/z.obj", "a/y.obj", "a/y0/z.obj", "a b/x.obj",
                      "b.obj", "linked"]  # fmt: skip


def test_one_file_in_two_classes_is_said_to_be_in_both(tmp_path: Path) -> None:
    """A researcher who copied a mesh into a second class folder hears which two classes."""
    root, out = tmp_path / "in", tmp_path / "out"
    write_mesh(root / "Lamp" / "shade.stl", box())
    write_mesh(root / "Table" / "top.stl", box())  # the same bytes
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = {Path(r["path"]).name: r for r in manifest_rows(out)}
    assert rows["shade.stl"]["status"] == "ok"  # "folder-Lamp…" sorts first: the original
    assert rows["top.stl"]["status"] == "duplicate"
    assert rows["top.stl"]["error"] == (
        f"same content as {rows['shade.stl']['id']}, which is in class 'Lamp', this one in"
        " 'Table': the file is kept once, as 'Lamp'"
    )
