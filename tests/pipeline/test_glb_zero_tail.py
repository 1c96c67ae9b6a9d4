"""A GLB cut short into a preallocated file: its header, chunk lengths and accessors all fit,
so only its zeros tell, and zeros are real data in a GLB (UVs, joints, morph deltas). It is
refused only where what the zeros read as contradicts the file: a POSITION (or any accessor
with bounds) outside its declared `min`/`max`, or a triangle list turned into a run of
triangles (0, 0, 0). Before: every one of these was `ok` at the meshes stage (t60b's note)."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from cg3d.geometry.meshio import MeshError, blender_input, validate_file

FLOAT, USHORT, UINT = 5126, 5123, 5125


def glb_bytes(document: dict, binary: bytes) -> bytes:
    """A GLB as the spec lays it out: header, JSON chunk padded with spaces, BIN chunk padded
    with zeros (written here, not by the code under test)."""
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    binary += bytes(-len(binary) % 4)
    chunks = struct.pack("<I4s", len(text), b"JSON") + text
    chunks += struct.pack("<I4s", len(binary), b"BIN\0") + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def split_glb(data: bytes) -> tuple[dict, int]:
    """(the JSON document, the file offset where the BIN chunk's data starts)."""
    (json_length,) = struct.unpack_from("<I", data, 12)
    return json.loads(data[20 : 20 + json_length]), 28 + json_length


def grid_glb(offset: float = 0.0, uv: bool = False, zero_index_tail: int = 0) -> bytes:
    """A 10×10 grid of quads (200 triangles) laid out as Blender writes it: POSITION (with
    its bounds), optionally TEXCOORD_0 all zero, then the uint16 indices last."""
    ii, jj = np.meshgrid(np.arange(11), np.arange(11), indexing="ij")
    positions = np.stack([ii.ravel(), jj.ravel(), np.zeros(121)], 1).astype(np.float32) + offset
    corners = np.arange(121).reshape(11, 11)[:-1, :-1].ravel()
    triangles = np.concatenate(
        [
            np.stack([corners, corners + 11, corners + 1], 1),
            np.stack([corners + 1, corners + 11, corners + 12], 1),
        ]
    ).astype(np.uint16)
    if zero_index_tail:
        triangles[-zero_index_tail:] = 0
    parts = [positions.tobytes()] + ([bytes(121 * 8)] if uv else []) + [triangles.tobytes()]
    views, accessors, start = [], [], 0
    kinds = (
        [(FLOAT, "VEC3", 121)] + ([(FLOAT, "VEC2", 121)] if uv else []) + [(USHORT, "SCALAR", 600)]
    )
    for part, (component, kind, count) in zip(parts, kinds, strict=True):
        views.append({"buffer": 0, "byteOffset": start, "byteLength": len(part)})
        accessors.append(
            {"bufferView": len(views) - 1, "componentType": component, "type": kind, "count": count}
        )
        start += len(part)
    accessors[0] |= {"min": positions.min(0).tolist(), "max": positions.max(0).tolist()}
    attributes = {"POSITION": 0} | ({"TEXCOORD_0": 1} if uv else {})
    document = {
        "asset": {"version": "2.0"},
        "buffers": [{"byteLength": start}],
        "bufferViews": views,
        "accessors": accessors,
        "meshes": [{"primitives": [{"attributes": attributes, "indices": len(accessors) - 1}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
    }
    return glb_bytes(document, b"".join(parts))


def zero_filled(data: bytes, keep: int) -> bytes:
    return data[:keep] + bytes(len(data) - keep)


def refusals(path: Path, root: Path, copies: Path) -> set[str]:
    """The reason each reader (the meshes stage's check, Blender's input) gives."""
    reasons = set()
    for call in (lambda: validate_file(path, root), lambda: blender_input(path, root, "", copies)):
        with pytest.raises(MeshError) as caught:
            call()
        assert caught.value.kind == "unreadable"
        reasons.add(caught.value.reason)
    return reasons


def zero_triangles(data: bytes, bin_start: int, view: dict, dtype) -> int:
    """Whole triangles of a uint index list that read (0, 0, 0), counted with numpy."""
    start = bin_start + view.get("byteOffset", 0)
    indices = np.frombuffer(data[start : start + view["byteLength"]], dtype).reshape(-1, 3)
    return int((indices == 0).all(1).sum())


def test_a_trimesh_glb_cut_at_half_and_zero_filled_reads_as_zero_triangles(tmp_path):
    import trimesh

    data = trimesh.creation.icosphere(3).export(file_type="glb")
    keep = len(data) // 2
    path = tmp_path / "m.glb"
    path.write_bytes(zero_filled(data, keep))
    document, bin_start = split_glb(data)
    zeroed = zero_triangles(path.read_bytes(), bin_start, document["bufferViews"][0], np.uint32)
    assert zeroed > 300  # trimesh writes the indices first: half of them are zeroed
    (reason,) = refusals(path, tmp_path, tmp_path / "copies")
    run = len(data) - len(path.read_bytes().rstrip(b"\0"))
    assert reason == (
        f"truncated and zero-filled: its last {run} bytes (of {len(data)}) are zero, and the "
        f"triangle list of glTF accessor 0 reads as {zeroed} triangles naming vertex 0 three "
        "times: a download cut short into a preallocated file leaves this"
    )


def test_a_glb_with_its_indices_last_cut_at_90_percent_says_so(tmp_path):
    data = grid_glb(uv=True)
    keep = len(data) * 9 // 10
    path = tmp_path / "m.glb"
    path.write_bytes(zero_filled(data, keep))
    document, bin_start = split_glb(data)
    zeroed = zero_triangles(path.read_bytes(), bin_start, document["bufferViews"][2], np.uint16)
    (reason,) = refusals(path, tmp_path, tmp_path / "copies")
    assert f"the triangle list of glTF accessor 2 reads as {zeroed} triangles naming" in reason
    run = len(data) - len(path.read_bytes().rstrip(b"\0"))  # the cut, or a zero byte before
    assert run >= len(data) - keep
    assert reason.startswith(f"truncated and zero-filled: its last {run} bytes (of {len(data)})")


def test_positions_zeroed_outside_or_against_their_bounds_say_so(tmp_path):
    """POSITION's bounds are required by the spec: zeros outside them, or all of them zero
    under bounds that are not, contradict the file."""
    whole = grid_glb(offset=5.0)
    document, bin_start = split_glb(whole)
    after_positions = bin_start + 121 * 12
    # indices zeroed too, but the accessor before them (POSITION, number 0) is named first
    path = tmp_path / "m.glb"
    path.write_bytes(zero_filled(whole, after_positions - 12 * 21))
    (reason,) = refusals(path, tmp_path, tmp_path / "copies")
    assert (
        "glTF accessor 0's elements from 100 on read as zero, outside the bounds it declares "
        "([5, 5, 5] to [15, 15, 5])"
    ) in reason
    path.write_bytes(zero_filled(whole, bin_start))
    (reason,) = refusals(path, tmp_path, tmp_path / "copies")
    assert "glTF accessor 0's 121 elements read as all zero, though it declares bounds" in reason


def test_glbs_whose_zeros_are_real_data_pass(tmp_path):
    """No false refusal: zero UVs after the positions (the indices moved before them), a few
    triangles (0, 0, 0) at the end of an index list, a whole trimesh GLB."""
    import trimesh

    cases = {
        "few.glb": grid_glb(zero_index_tail=10),
        "sphere.glb": trimesh.creation.icosphere(3).export(file_type="glb"),
    }
    document, _ = split_glb(grid_glb(uv=True))
    data = grid_glb(uv=True)
    # UVs last: move their view to the end of the buffer, its 968 zero bytes the file's tail
    _, bin_start = split_glb(data)
    binary = data[bin_start:]
    positions, uvs, indices = binary[:1452], binary[1452:2420], binary[2420:3620]
    document["bufferViews"] = [
        {"buffer": 0, "byteOffset": 0, "byteLength": 1452},
        {"buffer": 0, "byteOffset": 1452 + 1200, "byteLength": 968},
        {"buffer": 0, "byteOffset": 1452, "byteLength": 1200},
    ]
    cases["uv_last.glb"] = glb_bytes(document, positions + indices + uvs)
    assert uvs == bytes(968)
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        validate_file(path, tmp_path)
        blender_input(path, tmp_path, "", tmp_path / "copies" / name)


def test_a_glb_cut_in_its_json_chunk_and_zero_filled_says_so(tmp_path):
    """Before: "not a glTF document: Expecting ',' delimiter: line 1 column 925"."""
    data = grid_glb()
    (json_length,) = struct.unpack_from("<I", data, 12)
    keep = 20 + json_length // 2
    path = tmp_path / "m.glb"
    path.write_bytes(zero_filled(data, keep))
    assert refusals(path, tmp_path, tmp_path / "copies") == {
        f"truncated and zero-filled: the GLB's JSON chunk ends in {json_length - json_length // 2} "
        "zero bytes, its text stopping mid-document before them, as a download cut short into "
        "a preallocated file leaves"
    }
    # a whole document padded with NULs where spaces belong: not said to be cut short
    text = data[20 : 20 + json_length].rstrip(b" ")
    text += b"\0" * (-len(text) % 4 or 4)
    path.write_bytes(
        struct.pack("<4sII", b"glTF", 2, len(data) - json_length + len(text))
        + struct.pack("<I4s", len(text), b"JSON")
        + text
        + data[20 + json_length :]
    )
    with pytest.raises(MeshError) as caught:
        validate_file(path, tmp_path)
    assert "zero-filled" not in caught.value.reason


@pytest.mark.parametrize("nuls", [1, 3, 4])
def test_a_glb_whose_json_chunk_is_padded_with_nuls_is_named_so(tmp_path, nuls):
    """Against the spec (spaces), as some exporters write it. Blender 5.0's importer ("Bad
    glTF: json error: Extra data") and trimesh 4.x refuse it, so it is refused, named. Before:
    "not a glTF document: Extra data: line 1 column …"."""
    data = grid_glb()
    (json_length,) = struct.unpack_from("<I", data, 12)
    text = data[20 : 20 + json_length].rstrip(b" ")
    text += b" " * ((-len(text) - nuls) % 4) + b"\0" * nuls  # spaces first: a 4-byte chunk
    path = tmp_path / "m.glb"
    path.write_bytes(
        struct.pack("<4sII", b"glTF", 2, len(data) - json_length + len(text))
        + struct.pack("<I4s", len(text), b"JSON")
        + text
        + data[20 + json_length :]
    )
    assert refusals(path, tmp_path, tmp_path / "copies") == {
        f"its JSON chunk is padded with {nuls} NUL bytes, not spaces as the glTF spec pads it "
        "(Blender's and trimesh's importers refuse it too: re-export it)"
    }
