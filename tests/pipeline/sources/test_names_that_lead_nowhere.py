"""Names that lead to no file: a symlink loop, a NUL byte (a `%00` in a glTF URI), a name
longer than the system takes. Each is a failure row of the meshes stage naming what it is;
before, each ended the whole stage (an ELOOP OSError from the walk, a ValueError or a
RuntimeError from resolving the reference) or left a reason of 5000 characters."""

import json
import os
import struct
from pathlib import Path
from urllib.parse import unquote

import pytest

from cg3d.formats.manifest import read_manifest
from cg3d.geometry.meshio import MeshError, blender_input
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.sources.helpers import (
    box,
    make_shapenet,
    nested_past_path_max,
    write_mesh,
    write_off,
)

TRIANGLE = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0)


def write_gltf(path: Path, buffer_uri: str, image_uri: str | None = None) -> Path:
    """A one-triangle glTF whose buffer (and image, when given) are the URIs written."""
    document = {
        "asset": {"version": "2.0"},
        "buffers": [{"uri": buffer_uri, "byteLength": len(TRIANGLE)}],
        "bufferViews": [{"buffer": 0, "byteLength": len(TRIANGLE)}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            }
        ],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
    }
    if image_uri is not None:
        document["images"] = [{"uri": image_uri}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    (path.parent / "triangle.bin").write_bytes(TRIANGLE)
    return path


def _rows(out: Path) -> dict[str, tuple[str, str]]:
    return {Path(r.path).name: (r.status, r.error) for r in read_manifest(out)}


def test_a_symlink_loop_in_a_source_is_a_row_not_the_end_of_the_stage(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    write_mesh(root / "chair" / "fine.obj", box((1, 1, 2)))
    (root / "chair" / "self.obj").symlink_to("self.obj")  # a link to itself
    (root / "chair" / "ping.obj").symlink_to("pong.obj")  # two links round
    (root / "chair" / "pong.obj").symlink_to("ping.obj")
    (root / "sofa").symlink_to("sofa")  # a class folder that is a loop
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = _rows(out)
    assert rows["fine.obj"][0] == "ok"
    for name in ("self.obj", "ping.obj", "pong.obj", "sofa"):
        assert rows[name][0] == "missing_file", rows
        assert "symlink loop" in rows[name][1], rows[name]


def test_a_symlink_loop_in_the_modelnet_source_is_left_out_as_other_non_files(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    write_off(root / "chair" / "train" / "chair_0001.off", box((1, 1, 2)))
    write_off(root / "chair" / "test" / "chair_0002.off", box((1, 2, 1)))
    (root / "chair" / "train" / "chair_0003.off").symlink_to("chair_0003.off")
    build_manifest(MeshesConfig(source="modelnet", root=str(root), workers=1), out)
    assert sorted(_rows(out)) == ["chair_0001.off", "chair_0002.off"]


def test_a_shapenet_model_file_that_is_a_symlink_loop_is_a_row(tmp_path):
    """Before: a RuntimeError traceback ("Symlink loop") from storing its path."""
    root, out = tmp_path / "root", tmp_path / "out"
    make_shapenet(root)
    model = root / "03001627" / "c1" / "models" / "model_normalized.obj"
    model.unlink()
    model.symlink_to("model_normalized.obj")
    build_manifest(MeshesConfig(source="shapenet", root=str(root), workers=1), out)
    rows = {Path(r.path).parent.parent.name: (r.status, r.error) for r in read_manifest(out)}
    assert rows["c1"] == ("unreadable", "cannot open the file: Too many levels of symbolic links")
    assert sum(status == "ok" for status, _ in rows.values()) == 5


def _references(root: Path) -> dict[str, Path]:
    """An OBJ (through its MTL) and glTFs naming files that no name can reach."""
    long_name = "a" * 5000 + ".png"
    files = {}
    (root / "chair").mkdir(parents=True)
    (root / "chair" / "loop.bin").symlink_to("loop.bin")
    for stem, uri in [
        ("nul", "triangle%00.bin"),
        ("loop", "loop.bin"),
        ("long", long_name),
    ]:
        files[f"buffer_{stem}"] = write_gltf(root / "chair" / f"buffer_{stem}.gltf", uri)
    for stem, uri in [("nul", "x%00.png"), ("loop", "loop.bin"), ("long", long_name)]:
        path = root / "chair" / f"image_{stem}.gltf"
        files[f"image_{stem}"] = write_gltf(path, "triangle.bin", uri)
    for stem, name in [("nul", "x\0.png"), ("loop", "loop.bin"), ("long", long_name)]:
        (root / "chair" / f"{stem}.mtl").write_text(f"newmtl m\nmap_Kd {name}\n")
        obj = write_mesh(root / "chair" / f"texture_{stem}.obj", box((1, 1, 2)))
        obj.write_text(f"mtllib {stem}.mtl\n" + obj.read_text())
        files[f"texture_{stem}"] = obj
    obj = write_mesh(root / "chair" / "library_nul.obj", box((1, 2, 2)))
    obj.write_text("mtllib a\0b.mtl\n" + obj.read_text())
    files["library_nul"] = obj
    return files


EXPECTED = {
    # a buffer is required: the row says why the name reaches no file
    "buffer_nul": ("missing_file", "holds a NUL byte"),
    "buffer_loop": ("missing_file", "loop.bin (referenced by the file) is a symlink loop"),
    "buffer_long": ("missing_file", "(5004 characters) (referenced by the file) names no file"),
    # a missing image, texture or material library is read without, as any missing one
    "image_nul": ("ok", ""),
    "image_loop": ("ok", ""),
    "image_long": ("ok", ""),
    "texture_nul": ("ok", ""),
    "texture_loop": ("ok", ""),
    "texture_long": ("ok", ""),
    # a NUL byte in the OBJ's own text: damage, whatever statement holds it
    "library_nul": ("unreadable", "a NUL byte at byte 8 of"),
}


def test_a_reference_that_reaches_no_file_is_a_row_of_one_line(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    _references(root)
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = {Path(name).stem: row for name, row in _rows(out).items() if name != "loop.bin"}
    assert set(rows) == set(EXPECTED)
    for stem, (status, words) in EXPECTED.items():
        assert rows[stem][0] == status, (stem, rows[stem])
        assert words in rows[stem][1], (stem, rows[stem])
        assert len(rows[stem][1]) < 300, stem  # the 5000-character name is cut


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_blender_input_gives_the_same_answer_as_the_meshes_stage(tmp_path, stem):
    root = tmp_path / "root"
    path = _references(root)[stem]
    status, words = EXPECTED[stem]
    if status == "ok":
        copy = blender_input(path, root, "", tmp_path / "copy")
        if copy.suffix == ".gltf":  # the missing image's URI names no file, and no NUL
            uri = json.loads(copy.read_text())["images"][0]["uri"]
            assert "%00" not in uri and not os.path.exists(unquote(uri))
        return
    with pytest.raises(MeshError) as raised:
        blender_input(path, root, "", tmp_path / "copy")
    assert raised.value.kind == status and words in raised.value.reason


def test_a_listed_file_turned_into_a_symlink_loop_is_a_row_of_sample_input(tmp_path):
    root = tmp_path / "root"
    mesh = write_mesh(root / "chair" / "fine.obj", box((1, 1, 2)))
    mesh.unlink()
    mesh.symlink_to("fine.obj")  # after the meshes stage listed it
    with pytest.raises(MeshError, match="symbolic links") as caught:  # the stages' row
        blender_input(mesh, root, "", tmp_path / "copy")
    assert caught.value.kind == "unreadable"


def test_a_folder_nested_past_path_max_is_a_row_not_the_end_of_the_stage(tmp_path):
    """Before: the walk's os.scandir of the folder raised ENAMETOOLONG, and the meshes stage
    ended with a one-line error (of 4,300 characters) and no manifest at all."""
    root, out = tmp_path / "root", tmp_path / "out"
    write_mesh(root / "chair" / "fine.obj", box((1, 1, 2)))
    (root / "table").mkdir()
    nested_past_path_max(root / "table", "deep.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = {r.class_name: (r.status, r.error, r.path) for r in read_manifest(out)}
    assert rows["chair"][0] == "ok"
    status, error, path = rows["table"]
    assert status == "unreadable"
    assert "a folder whose path is" in error and "more than the 4095" in error
    assert path.startswith(str(root / "table" / "eee"))  # the row names where it is
