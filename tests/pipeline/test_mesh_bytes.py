"""A mesh file's bytes, checked before any reader sees them: its size (trimesh reads a file
whole, at about twice its size in memory) and its first block (a file allocated and never
written is all zeros). Sparse files (`os.truncate`): no test writes the gigabytes it names."""

import os
from pathlib import Path

import pytest

from cg3d.formats.manifest import read_manifest
from cg3d.geometry.meshio import (
    MAX_MESH_BYTES,
    ZERO_HEAD_BYTES,
    MeshError,
    blender_input,
    load_mesh,
    validate_file,
)
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.sources.helpers import box, write_mesh

SUFFIXES = [".obj", ".off", ".ply", ".stl", ".glb", ".gltf"]


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head)
    os.truncate(path, size)
    return path


def readers(path: Path, root: Path, copies: Path) -> dict:
    """Every way a stage reads a mesh file: the meshes stage's check, the fast path (sample,
    classify), the file handed to Blender (sample, render, classify's glTF)."""
    calls = {
        "validate_file": lambda: validate_file(path, root),
        "blender_input": lambda: blender_input(path, root, "", copies),
    }
    if path.suffix in (".obj", ".off", ".ply", ".stl"):
        calls["load_mesh"] = lambda: load_mesh(path)
    return calls


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_mesh_file_of_zeros_is_empty_by_its_first_block(tmp_path, suffix):
    path = sparse(tmp_path / "root" / f"zeros{suffix}", 1 << 30)  # 1 GiB, no disk used
    for name, call in readers(path, tmp_path / "root", tmp_path / "copy").items():
        with pytest.raises(MeshError) as caught:
            call()
        assert caught.value.kind == "empty", name
        assert f"first {ZERO_HEAD_BYTES} bytes are all zero" in caught.value.reason, name


def test_a_small_file_of_zeros_is_empty_too(tmp_path):
    path = sparse(tmp_path / "root" / "zeros.obj", 100)
    with pytest.raises(MeshError, match="first 100 bytes are all zero"):
        validate_file(path, tmp_path / "root")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_mesh_file_past_the_bound_is_absurd_by_its_size_unread(tmp_path, suffix):
    head = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"  # a real start: only the size refuses it
    path = sparse(tmp_path / "root" / f"huge{suffix}", MAX_MESH_BYTES + 1, head)
    for name, call in readers(path, tmp_path / "root", tmp_path / "copy").items():
        with pytest.raises(MeshError) as caught:
            call()
        assert caught.value.kind == "absurd_size", name
        assert f"{MAX_MESH_BYTES + 1} bytes, more than {MAX_MESH_BYTES}" in caught.value.reason


def test_the_meshes_stage_refuses_them_without_hashing_them(tmp_path, monkeypatch):
    import cg3d.pipeline.sources as sources

    root = tmp_path / "root"
    write_mesh(root / "chair" / "fine.obj", box((1, 1, 2)))
    sparse(root / "chair" / "zeros.glb", 1 << 30)
    sparse(root / "chair" / "huge.obj", MAX_MESH_BYTES + 1, b"v 0 0 0\n")
    hashed = []
    original = sources.file_sha256
    monkeypatch.setattr(sources, "file_sha256", lambda p: hashed.append(p) or original(p))
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "out")
    rows = {Path(r.path).name: r.status for r in read_manifest(tmp_path / "out")}
    assert rows == {"fine.obj": "ok", "zeros.glb": "empty", "huge.obj": "absurd_size"}
    assert [Path(p).name for p in hashed] == ["fine.obj"]  # 5 GB never read to be refused


@pytest.mark.parametrize("suffix", [".obj", ".off"])
def test_a_text_mesh_cut_short_and_zero_filled_is_unreadable_naming_the_byte(tmp_path, suffix):
    """An interrupted download into a preallocated file: the text, then zeros to full size.
    trimesh read such an OBJ as a whole mesh of its first faces (status ok)."""
    import trimesh

    root = tmp_path / "root"
    whole = write_mesh(root / "chair" / f"whole{suffix}", trimesh.creation.icosphere(3))
    data = whole.read_bytes()
    keep = int(len(data) * 0.6)
    cut = root / "chair" / f"cut{suffix}"
    cut.write_bytes(data[:keep] + bytes(len(data) - keep))
    validate_file(whole, root)  # the same text, whole, passes
    for name, call in readers(cut, root, tmp_path / "copy").items():
        with pytest.raises(MeshError) as caught:
            call()
        assert caught.value.kind == "unreadable", name
        assert f"a NUL byte at byte {keep} of {len(data)}" in caught.value.reason, name


# An icosphere of subdivision 3: 642 vertices, 1280 triangles (counted by hand: 12 + 30·(4³-1)
# vertices, 20·4³ faces).
SPHERE_VERTICES, SPHERE_FACES = 642, 1280


def sphere_file(root: Path, name: str, **export) -> bytes:
    import trimesh

    path = root / "ok" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = trimesh.creation.icosphere(3).export(file_type=Path(name).suffix[1:], **export)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    validate_file(path, root)  # the whole file passes
    return path.read_bytes()


def cut_at_half(data: bytes, suffix: str) -> bytes:
    if suffix == ".off":  # at a line break: every row it keeps is whole
        return data[: data.index(b"\n", len(data) // 2) + 1]
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "name, export, reason",
    [
        (
            "m.stl",
            {},
            "truncated: the binary STL header declares 1280 triangles (64084 bytes), the file "
            "holds 32042 bytes (639 triangles)",
        ),
        ("m.glb", {}, "truncated: the GLB header says {size} bytes, the file holds {half}"),
        (
            "ascii.ply",
            {"encoding": "ascii"},
            "truncated: the PLY header declares 642 vertex records, the file ends in vertex",
        ),
        (
            "binary.ply",
            {},
            "runs past the file's end: its list count (3) overruns it, or the file is "
            "truncated (its header declares 1280 face records)",
        ),
        (
            "m.off",
            {},
            "truncated: the OFF header declares 642 vertices and 1280 faces (1922 rows), the "
            "file holds {rows}",
        ),
    ],
)
def test_a_mesh_file_cut_at_half_says_it_is_truncated(tmp_path, name, export, reason):
    """Before: a GLB cut at half was `ok` in the meshes stage (its BIN chunk's declared length
    taken for its bytes) and "ValueError: chunk was not expected length!" to trimesh; an OFF
    cut at a line break was `ok` (trimesh read the rows there were: a partial mesh), cut
    mid-line "setting an array element with a sequence"; the binary STL, PLY named no cause."""
    root = tmp_path / "root"
    data = sphere_file(root, name, **export)
    suffix = Path(name).suffix
    cut = root / "cut" / name
    cut.parent.mkdir()
    cut.write_bytes(cut_at_half(data, suffix))
    rows = sum(1 for line in cut.read_bytes().splitlines()[2:] if line.strip())
    expected = reason.format(size=len(data), half=len(data) // 2, rows=rows)
    assert SPHERE_VERTICES + SPHERE_FACES == 1922
    for caller, call in readers(cut, root, tmp_path / "copy").items():
        with pytest.raises(MeshError) as caught:
            call()
        assert caught.value.kind == "unreadable", caller
        assert expected in caught.value.reason, caller


@pytest.mark.parametrize(
    "name, export", [("m.stl", {}), ("binary.ply", {}), ("a.ply", {"encoding": "ascii"})]
)
def test_a_binary_mesh_cut_short_and_zero_filled_is_truncated_not_a_mesh(tmp_path, name, export):
    """The download into a preallocated file again, for a format with counts: its size and
    header hold, so only the zeros tell. Before: the STL was `ok` (its last 600-odd triangles
    points at the origin, sampled as part of the object); the PLYs "face 336 has 0 corners",
    "the PLY ends before its vertex rows do"."""
    root = tmp_path / "root"
    data = sphere_file(root, name, **export)
    keep = len(data) // 2
    cut = root / "cut" / name
    cut.parent.mkdir()
    cut.write_bytes(data[:keep] + bytes(len(data) - keep))
    for caller, call in readers(cut, root, tmp_path / "copy").items():
        with pytest.raises(MeshError) as caught:
            call()
        assert (caught.value.kind, caught.value.reason) == (
            "unreadable",
            f"truncated and zero-filled: its last {ZERO_HEAD_BYTES} bytes (of {len(data)}) are "
            "all zero, as a download cut short into a preallocated file leaves",
        ), caller


def test_a_binary_stl_ending_in_a_few_zero_triangles_still_reads(tmp_path):
    """A short run of zero records (a degenerate facet or two) is no proof of damage."""
    import struct

    facet = struct.pack("<12fH", 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0)
    count = 100
    body = facet * (count - 20) + bytes(50 * 20)  # 1000 zero bytes at the end
    path = tmp_path / "m.stl"
    path.write_bytes(b"x" * 80 + struct.pack("<I", count) + body)
    validate_file(path, tmp_path)


@pytest.mark.blender
def test_a_glb_cut_short_and_zero_filled_says_so_where_its_reading_has_no_area(tmp_path):
    """Zeros are real data in a GLB: the meshes stage refuses them only where they contradict
    the file (tests/pipeline/test_glb_zero_tail.py). A POSITION without the bounds the spec
    requires, zeroed whole, contradicts nothing there; Blender reads it as a point. Before:
    "degenerate: the surface has zero area", nothing more, at sample and render."""
    import json
    import struct

    from cg3d.params import SampleConfig
    from cg3d.pipeline.sample import PointsReader

    root = tmp_path / "root"
    data = sphere_file(root, "m.glb")
    (json_length,) = struct.unpack_from("<I", data, 12)
    document = json.loads(data[20 : 20 + json_length])
    position = document["accessors"][1]  # trimesh writes the indices first, then POSITION
    del position["min"], position["max"]
    # indented: Blender's copy (`_gltf_copy`) is compact, so it has another size than this
    # file, whose size the reason gives (it gave the copy's)
    text = json.dumps(document, indent=2).encode()
    text += b" " * (-len(text) % 4)
    rest = data[20 + json_length :]  # the BIN chunk, as it was
    data = struct.pack("<4sII", b"glTF", 2, 20 + len(text) + len(rest)) + text
    data = data[:12] + struct.pack("<I4s", len(text), b"JSON") + data[12:] + rest
    keep = 20 + len(text) + 8 + document["bufferViews"][1]["byteOffset"]  # every position zeroed
    cut = root / "cut" / "m.glb"
    cut.parent.mkdir()
    cut.write_bytes(data[:keep] + bytes(len(data) - keep))
    validate_file(cut, root)
    with (
        PointsReader(SampleConfig(points=256, colors=True)) as blender,
        pytest.raises(ValueError) as caught,
    ):
        blender(cut, "y", "cut", root)
    assert str(caught.value) == (
        "degenerate: the surface has zero area; its last 4096 bytes (of "
        f"{len(data)}) are all zero, as a download cut short into a preallocated file leaves"
    )


def test_an_obj_cut_mid_line_says_so_where_it_does_not_parse(tmp_path):
    """An OBJ has no counts to compare: cut at a line break it reads as fewer faces; cut
    mid-line it fails, and the reason says where. Before: "ValueError: could not convert
    string to float: '-'", nothing more."""
    root = tmp_path / "root"
    data = sphere_file(root, "m.obj")
    cut = root / "cut" / "m.obj"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])  # inside a vertex row
    assert not cut.read_bytes().endswith(b"\n")
    with pytest.raises(MeshError) as caught:
        load_mesh(cut)
    assert caught.value.kind == "unreadable"
    assert caught.value.reason.endswith(" (the file ends mid-line: cut short?)")
    cut.write_bytes(data[: len(data) // 2] + b"\n")  # a malformed row, ending in a newline
    with pytest.raises(MeshError) as caught:
        load_mesh(cut)
    assert "cut short" not in caught.value.reason
