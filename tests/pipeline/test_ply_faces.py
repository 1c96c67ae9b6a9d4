"""The one-reading promise for PLY faces (issue 25 §4): a face whose list count and contents
disagree ("255 0 1 2"), or with fewer than 3 corners (Blender reads 2 as an edge, trimesh drops
it), has two readings, so every path refuses it before any reader sees it: the fast path
(`load_mesh`), the meshes stage's check (`validate_file`) and the file handed to Blender
(`blender_input`). Files whose counts hold (triangles, quads, mixed, an extra face property),
ASCII or binary of either byte order, still read. The same for counts a header gives: a PLY
element count, a binary STL's triangle count, must fit the file.
"""

import struct
from pathlib import Path

import numpy as np
import pytest

from cg3d.geometry.meshio import MeshError, blender_input, load_mesh, validate_file
from tests.pipeline.plyfiles import FORMS, TWO_READINGS, VERTICES, write_ply

ONE_READING = {
    "triangles": [[3, 0, 1, 2], [3, 0, 1, 3]],
    "quads": [[4, 0, 1, 4, 2], [4, 0, 3, 4, 1]],
    "mixed": [[3, 0, 1, 2], [4, 0, 3, 4, 1]],
}
# Binary files are read by their counts (both readers): a lying count runs over the next faces;
# the binary cases are those whose counts overrun the file or are below 3.
BINARY_TWO_READINGS = ["count 255, three indices", "count 255 last", "an edge (count 2)",
                       "a point (count 1)", "count 0", "count 4, three indices"]  # fmt: skip


def readers(path: Path, root: Path) -> dict:
    return {
        "fast path": lambda: load_mesh(path),
        "meshes stage": lambda: validate_file(path, root),
        "blender input": lambda: blender_input(path, root, "", root / "copies"),
    }


def cases():
    for form in FORMS:
        for name in TWO_READINGS:
            if form == "ascii" or name in BINARY_TWO_READINGS:
                for flags in (False, True):
                    yield pytest.param(form, name, flags, id=f"{form}-{name}-flags{flags}")


@pytest.mark.parametrize("form, case, flags", list(cases()))
@pytest.mark.parametrize("reader", ["fast path", "meshes stage", "blender input"])
def test_a_ply_face_with_two_readings_is_refused_by_every_path(tmp_path, form, case, flags, reader):
    path = write_ply(tmp_path / "m.ply", TWO_READINGS[case], form, flags)
    with pytest.raises(MeshError) as raised:
        readers(path, tmp_path)[reader]()
    assert raised.value.kind == "unreadable" and "PLY face" in raised.value.reason


def good_cases():
    for form in FORMS:
        for name in ONE_READING:
            # trimesh reads no binary PLY of mixed counts ("unexpected length"): unreadable
            # before and after this check, so not a case here
            if form == "ascii" or name != "mixed":
                for flags in (False, True):
                    yield pytest.param(form, name, flags, id=f"{form}-{name}-flags{flags}")


@pytest.mark.parametrize("form, case, flags", list(good_cases()))
def test_a_ply_whose_counts_hold_still_reads(tmp_path, form, case, flags):
    path = write_ply(tmp_path / "m.ply", ONE_READING[case], form, flags)
    mesh = load_mesh(path)
    corners = sum(face[0] - 2 for face in ONE_READING[case])  # triangles after fan splitting
    assert len(mesh.faces) == corners
    np.testing.assert_allclose(mesh.vertices, np.array(VERTICES, dtype=float))
    validate_file(path, tmp_path)
    assert blender_input(path, tmp_path, "", tmp_path / "copies") == path.resolve()


def lying_counts():
    """(form, the vertex and face counts a header declares) over 3 real vertices and 1 face:
    more records than the file has bytes, or a negative count."""
    for form in FORMS:
        for name, vertices, faces in [
            ("10^12 vertices", 10**12, 1),
            ("10^11 faces", 3, 10**11),
            ("negative vertices", -5, 1),
            ("negative faces", 3, -1),
        ]:
            yield pytest.param(form, vertices, faces, id=f"{form}-{name}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("form, vertices, faces", list(lying_counts()))
@pytest.mark.parametrize("reader", ["fast path", "meshes stage", "blender input"])
def test_a_ply_header_whose_counts_the_file_cannot_hold_is_refused_before_any_read(
    tmp_path, form, vertices, faces, reader
):
    """Before: an ASCII header of 10^12 vertices looped on readline at the end of the file
    (the meshes stage hung), a binary one of 10^11 faces asked read() for 1.3 TB (MemoryError
    traceback). Each count must fit the bytes after the header."""
    path = write_ply(tmp_path / "m.ply", [[3, 0, 1, 2]], form)
    data = path.read_bytes()
    data = data.replace(b"element vertex 5\n", f"element vertex {vertices}\n".encode(), 1)
    path.write_bytes(data.replace(b"element face 1\n", f"element face {faces}\n".encode(), 1))
    with pytest.raises(MeshError) as raised:
        readers(path, tmp_path)[reader]()
    assert raised.value.kind == "unreadable"
    assert "PLY header" in raised.value.reason


def binary_stl(count: int, triangles: int, header: bytes = b"\0" * 80) -> bytes:
    """A binary STL of `triangles` facets whose header declares `count` (written by hand: 80
    header bytes, the count, then 50 bytes a facet)."""
    import struct

    facet = struct.pack("<12fH", 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0)
    return header + struct.pack("<I", count) + facet * triangles


# Many CAD exporters begin a binary STL's 80-byte header with "solid", padded with spaces or NULs.
SOLID_HEADERS = [b"solid exported by CAD".ljust(80), b"solid part".ljust(80, b"\0")]


@pytest.mark.parametrize("count, triangles", [(10**9, 1), (2**32 - 1, 2), (3, 2), (1, 2)])
@pytest.mark.parametrize("reader", ["fast path", "meshes stage", "blender input"])
def test_a_binary_stl_whose_count_disagrees_with_its_size_names_both(
    tmp_path, count, triangles, reader
):
    """Before: "empty: the file holds no geometry" (readers took it for ASCII text)."""
    path = tmp_path / "m.stl"
    path.write_bytes(binary_stl(count, triangles))
    with pytest.raises(MeshError) as raised:
        readers(path, tmp_path)[reader]()
    size = 84 + 50 * triangles
    if count > triangles:  # a file cut short says so
        reason = (
            f"truncated: the binary STL header declares {count} triangles "
            f"({84 + 50 * count} bytes), the file holds {size} bytes ({triangles} triangles)"
        )
    else:
        reason = (
            f"a binary STL whose header declares {count} triangles ({84 + 50 * count} bytes) "
            f"in {size} bytes"
        )
    assert (raised.value.kind, raised.value.reason) == ("unreadable", reason)


@pytest.mark.parametrize("header", SOLID_HEADERS)
@pytest.mark.parametrize("count, triangles", [(10**9, 1), (2**32 - 1, 2), (3, 2), (1, 2)])
@pytest.mark.parametrize("reader", ["fast path", "meshes stage", "blender input"])
def test_a_binary_stl_whose_header_begins_solid_is_checked_as_binary(
    tmp_path, header, count, triangles, reader
):
    """Its count disagreeing with its size (a download cut short), the readers took it for
    ASCII text and the row said "empty: the file holds no geometry"."""
    path = tmp_path / "m.stl"
    path.write_bytes(binary_stl(count, triangles, header))
    with pytest.raises(MeshError) as raised:
        readers(path, tmp_path)[reader]()
    assert raised.value.kind == "unreadable"
    assert "binary STL" in raised.value.reason
    assert f"header declares {count} triangles ({84 + 50 * count} bytes)" in raised.value.reason


@pytest.mark.parametrize("header", SOLID_HEADERS)
def test_a_binary_stl_whose_header_begins_solid_reads_when_whole(tmp_path, header):
    path = tmp_path / "m.stl"
    path.write_bytes(binary_stl(2, 2, header))
    np.testing.assert_array_equal(load_mesh(path).vertices.max(axis=0), [1, 1, 0])
    validate_file(path, tmp_path)


def test_an_ascii_stl_of_several_solids_reads_them_all(tmp_path):
    facet = "facet normal 0 0 1\nouter loop\n{}endloop\nendfacet\n"
    corners = [[(0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 0, 2.5e0), (1, 0, 2.5e0), (0, 1, 2.5e0)]]
    solids = [
        f"solid {name}\n"
        + facet.format("".join(f"vertex {x:e} {y:e} {z:e}\n" for x, y, z in c))
        + f"endsolid {name}\n"
        for name, c in zip(("a", "b"), corners, strict=True)
    ]
    path = tmp_path / "m.stl"
    path.write_text("".join(solids))
    mesh = load_mesh(path)
    assert len(mesh.faces) == 2
    np.testing.assert_array_equal(mesh.vertices.max(axis=0), [1, 1, 2.5])


def test_a_binary_stl_whose_count_holds_still_reads(tmp_path):
    import struct

    path = tmp_path / "m.stl"
    facets = [(0, 0, 0, 1, 0, 0, 0, 1, 0), (0, 0, 0, 0, 1, 0, 0, 0, 1)]
    body = b"".join(struct.pack("<12fH", 0, 0, 0, *f, 0) for f in facets)
    path.write_bytes(b"\0" * 80 + struct.pack("<I", 2) + body)
    assert len(load_mesh(path).faces) == 2
    validate_file(path, tmp_path)


def ply_with_vertex_list(form: str) -> bytes:
    """A triangle whose vertices carry a list property after xyz (per-vertex features)."""
    import struct

    header = (
        f"ply\nformat {form} 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nproperty list uchar float features\nelement face 1\n"
        "property list uchar int vertex_indices\nend_header\n"
    ).encode()
    corners = [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
    if form == "ascii":
        rows = [f"{x} {y} {z} 2 0.5 0.5" for x, y, z in corners] + ["3 0 1 2"]
        return header + ("\n".join(rows) + "\n").encode()
    order = "<" if form == "binary_little_endian" else ">"
    body = b"".join(struct.pack(order + "3fB2f", *c, 2, 0.5, 0.5) for c in corners)
    return header + body + struct.pack(order + "B3i", 3, 0, 1, 2)


@pytest.mark.parametrize("form", ["binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("reader", ["fast path", "meshes stage", "blender input"])
def test_a_binary_ply_whose_vertices_carry_a_list_is_named(tmp_path, form, reader):
    """Before: trimesh sampled its points, and Blender's importer failed on it ("PLY Importer:
    failed importing, unknown error"): points without views."""
    path = tmp_path / "m.ply"
    path.write_bytes(ply_with_vertex_list(form))
    with pytest.raises(MeshError) as raised:
        readers(path, tmp_path)[reader]()
    assert raised.value.kind == "unsupported_format"
    assert "vertex element has a list property (features)" in raised.value.reason


def test_an_ascii_ply_whose_vertices_carry_a_list_still_reads(tmp_path):
    path = tmp_path / "m.ply"
    path.write_bytes(ply_with_vertex_list("ascii"))
    np.testing.assert_array_equal(load_mesh(path).vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    validate_file(path, tmp_path)


@pytest.mark.parametrize("where", ["vertex", "face"])
@pytest.mark.parametrize("reader", ["fast path", "meshes stage", "blender input"])
def test_a_blank_line_among_ascii_ply_rows_is_named(tmp_path, where, reader):
    """Before: "PLY face 0 has 1 corners" (the blank line was taken for a vertex row, and the
    faces read one row late); trimesh fails on it too."""
    rows = ["0 0 0", "1 0 0", "0 1 0", "3 0 1 2", "3 0 2 1"]
    rows.insert(1 if where == "vertex" else 4, "")
    header = (
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n"
    )
    path = tmp_path / "m.ply"
    path.write_text(header + "\n".join(rows) + "\n")
    with pytest.raises(MeshError) as raised:
        readers(path, tmp_path)[reader]()
    assert (raised.value.kind, raised.value.reason) == (  # row 1 of either element is blank
        "unreadable",
        f"a blank line where the ASCII PLY's {where} row 1 should be (its rows are one a line)",
    )


def test_a_binary_point_cloud_whose_vertices_carry_a_list_is_named_a_point_cloud(tmp_path):
    """With no faces it is no mesh to draw: the meshes stage says a point cloud (`no_faces`),
    as for any PLY of vertices only, not `unsupported_format` (classify and embed read it)."""
    import struct

    header = (
        b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n"
        b"property float y\nproperty float z\nproperty list uchar float features\nend_header\n"
    )
    corners = [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
    path = tmp_path / "m.ply"
    path.write_bytes(header + b"".join(struct.pack("<3fB2f", *c, 2, 0.5, 0.5) for c in corners))
    with pytest.raises(MeshError) as raised:
        validate_file(path, tmp_path)
    assert raised.value.kind == "no_faces" and "a point cloud (3 vertices" in raised.value.reason


@pytest.mark.parametrize("count", [2**31, 2**32 - 1])
def test_a_binary_ply_face_list_count_past_what_numpy_can_shape_is_named(tmp_path, count):
    """One face whose uint list count is 2^31 or more: the all-faces-alike fast check built a
    numpy dtype of that shape first, and numpy's ValueError ("dimension does not fit into a C
    int") came out of `load_mesh` and `validate_file` as a traceback. Now the count is weighed
    against the file's bytes before any dtype, and the face named."""
    header = (
        b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n"
        b"property float y\nproperty float z\nelement face 1\n"
        b"property list uint int vertex_indices\nend_header\n"
    )
    body = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0) + struct.pack("<I3i", count, 0, 1, 2)
    path = tmp_path / "m.ply"
    path.write_bytes(header + body)
    for read in (lambda: load_mesh(path), lambda: validate_file(path, tmp_path)):
        with pytest.raises(MeshError, match=f"PLY face 0 runs past .* list count \\({count}\\)"):
            read()
