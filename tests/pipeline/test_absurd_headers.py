"""Real-format files (Blender's exporter, trimesh's) with one header field edited to lie: the
GLB container's lengths, a bufferView no accessor names (Draco's data), an OFF's counts, an
OBJ face index. Each is a failure row naming the field, on every path, before any reader
allocates what the field claims."""

import json
import struct
from pathlib import Path

import pytest
import trimesh

from cg3d.geometry.meshio import MeshError, blender_input, load_mesh, validate_file
from tests.render.gltf_files import blender_file


def readers(path: Path, root: Path) -> dict:
    calls = {
        "meshes stage": lambda: validate_file(path, root),
        "blender input": lambda: blender_input(path, root, "", root / "copies"),
    }
    if path.suffix in (".obj", ".off"):
        calls["fast path"] = lambda: load_mesh(path)
    return calls


def refused(path: Path, root: Path) -> str:
    """The one reason every path gives."""
    reasons = set()
    for caller, call in readers(path, root).items():
        with pytest.raises(MeshError) as caught:
            call()
        assert caught.value.kind == "unreadable", caller
        reasons.add(caught.value.reason)
    assert len(reasons) == 1, reasons
    return reasons.pop()


def sphere_glb(path: Path) -> bytes:
    data = trimesh.creation.icosphere(2).export(file_type="glb")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def with_word(data: bytes, offset: int, value: int) -> bytes:
    edited = bytearray(data)
    struct.pack_into("<I", edited, offset, value)
    return bytes(edited)


def test_a_glb_whose_header_claims_4_gib_is_refused(tmp_path):
    """Before: `ok` in the meshes stage and sampled by Blender; trimesh said only "chunk was
    not expected length!"."""
    data = sphere_glb(tmp_path / "whole.glb")
    path = tmp_path / "m.glb"
    path.write_bytes(with_word(data, 8, 2**32 - 1))
    assert refused(path, tmp_path) == (
        f"truncated: the GLB header says {2**32 - 1} bytes, the file holds {len(data)}"
    )


def test_a_glb_json_chunk_claiming_4_gib_is_refused_before_it_is_read(tmp_path):
    """Before: "not a glTF document: 'utf-8' codec can't decode byte 0x80" (the BIN chunk
    read as JSON)."""
    data = sphere_glb(tmp_path / "whole.glb")
    path = tmp_path / "m.glb"
    path.write_bytes(with_word(data, 12, 2**32 - 1))
    assert refused(path, tmp_path) == (
        f"the GLB's JSON chunk declares {2**32 - 1} bytes, past the file's end ({len(data)})"
    )


def test_a_glb_bin_chunk_claiming_4_gib_is_refused(tmp_path):
    """Before: `ok` in the meshes stage, then Blender's "Bad GLB: length of BIN chunk doesn't
    match" at sample and render."""
    data = sphere_glb(tmp_path / "whole.glb")
    json_length = struct.unpack_from("<I", data, 12)[0]
    path = tmp_path / "m.glb"
    path.write_bytes(with_word(data, 20 + json_length, 2**32 - 4))
    held = len(data) - 28 - json_length  # the file's bytes after the JSON and BIN chunk heads
    assert refused(path, tmp_path) == (
        f"the GLB's BIN chunk declares {2**32 - 4} bytes, the file holds {held} after its JSON"
    )


def edited_glb(source: Path, path: Path, edit) -> None:
    data = source.read_bytes()
    length = struct.unpack_from("<I", data, 12)[0]
    document = json.loads(data[20 : 20 + length])
    edit(document)
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    rest = data[20 + length :]
    head = struct.pack("<4sII", b"glTF", 2, 20 + len(text) + len(rest))
    path.write_bytes(head + struct.pack("<II", len(text), 0x4E4F534A) + text + rest)


@pytest.mark.blender
def test_a_draco_buffer_view_past_its_buffer_is_refused(tmp_path):
    """Draco's compressed data is a bufferView that no accessor names, so only accessors'
    views were checked. Before: `ok`, and Blender sampled it (ignoring the length)."""
    source = blender_file("draco", tmp_path / "draco.glb")
    validate_file(source, tmp_path)  # as exported, it passes
    primitive = {}

    def edit(document):
        primitive.update(document["meshes"][0]["primitives"][0])
        view = primitive["extensions"]["KHR_draco_mesh_compression"]["bufferView"]
        document["bufferViews"][view]["byteLength"] = 10**9
        primitive["view"] = view
        primitive["buffer"] = document["buffers"][0]["byteLength"]

    path = tmp_path / "m.glb"
    edited_glb(source, path, edit)
    reason = refused(path, tmp_path)
    assert reason.startswith(f"glTF bufferView {primitive['view']} ends at byte ")
    assert reason.endswith(f"of buffer 0, which holds {primitive['buffer']}")


def test_an_off_claiming_10_to_the_12_vertices_says_so(tmp_path):
    """Before: "ValueError: cannot reshape array of size 1926 into shape (1000000000000,3)"."""
    text = trimesh.creation.icosphere(2).export(file_type="off")
    path = tmp_path / "m.off"
    path.write_text(text.replace("OFF\n162 320", "OFF\n1000000000000 320", 1))
    assert refused(path, tmp_path) == (
        "truncated: the OFF header declares 1000000000000 vertices and 320 faces "
        "(1000000000320 rows), the file holds 482"  # 162 + 320 rows, as written
    )


@pytest.mark.parametrize("header", ["OFF 8 12 0\n", "OFF8 12 0\n", "# made by hand\nOFF\n8 12\n"])
def test_an_off_whose_rows_are_all_there_reads_in_every_header_form(tmp_path, header):
    box = trimesh.creation.box()
    rows = [" ".join(map(str, v)) for v in box.vertices]
    rows += ["3 " + " ".join(map(str, f)) for f in box.faces]
    path = tmp_path / "m.off"
    path.write_text(header + "\n".join(rows) + "\n")
    assert len(load_mesh(path).faces) == 12
    path.write_text(header + "\n".join(rows[:-1]) + "\n")
    with pytest.raises(
        MeshError, match="declares 8 vertices and 12 faces .20 rows., the file holds 19"
    ):
        load_mesh(path)
