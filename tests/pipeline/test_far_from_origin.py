"""Meshes and point files far from the origin (UTM metres: x 500 km, y 4,000 km). A file that
stores float32 coordinates there holds a 2 m object on a 0.25 m grid: a `quantized` failure
row (a one-line error for a point file) naming the steps, never a blocky cloud. A float64 file
there reads as the same object at the origin."""

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cg3d.errors import UsageError
from cg3d.formats.pointfiles import read_point_file
from cg3d.geometry import meshio
from cg3d.geometry.meshio import MeshError, blender_input, load_mesh
from cg3d.geometry.sampling import object_rng, sample_object
from cg3d.params import SampleConfig
from tests.pipeline.farfiles import (
    SPHERE,
    UTM,
    far_obj_after_continued_comments,
    write_ascii_stl,
    write_coloured_ply,
    write_obj,
    write_ply,
)


def write_stl(path: Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    triangles = np.asarray(vertices, "<f4")[faces]
    records = b"".join(struct.pack("<12fH", *[0.0] * 3, *t.ravel(), 0) for t in triangles)
    path.write_bytes(b"\0" * 80 + struct.pack("<I", len(faces)) + records)
    return path


def sampled(path: Path) -> np.ndarray:
    mesh = load_mesh(path)
    return sample_object(mesh.vertices, mesh.faces, SampleConfig(points=512), object_rng(0, "a"))


@pytest.mark.parametrize("suffix", [".ply", ".stl"])
def test_a_float32_file_far_from_the_origin_is_a_quantized_row(tmp_path, suffix):
    far = SPHERE.vertices + UTM
    if suffix == ".ply":
        path = write_ply(tmp_path / "scan.ply", far, SPHERE.faces, "float")
    else:
        path = write_stl(tmp_path / "scan.stl", far, SPHERE.faces)
    with pytest.raises(MeshError) as error:
        load_mesh(path)
    assert error.value.kind == "quantized"
    assert "steps of 0.25" in error.value.reason and "8 steps across" in error.value.reason


def test_float32_files_near_the_origin_and_float64_ones_far_from_it_read_alike(tmp_path):
    origin = sampled(write_ply(tmp_path / "origin.ply", SPHERE.vertices, SPHERE.faces, "float"))
    far = sampled(write_ply(tmp_path / "far.ply", SPHERE.vertices + UTM, SPHERE.faces, "double"))
    assert np.abs(far - origin).max() < 1e-5
    # a millimetre file (2000 units across, float32): steps of 1/8192 there, its shape kept
    mm = write_ply(tmp_path / "mm.ply", SPHERE.vertices * 1000, SPHERE.faces, "float")
    assert np.abs(sampled(mm) - origin).max() < 1e-5


def test_a_float32_point_file_far_from_the_origin_is_one_line(tmp_path):
    points = np.random.default_rng(0).normal(size=(500, 3)) + UTM
    np.save(tmp_path / "far32.npy", points.astype(np.float32))
    with pytest.raises(UsageError, match=r"far32\.npy: the file stores coordinates 4e\+06"):
        read_point_file(tmp_path / "far32.npy")
    np.save(tmp_path / "far64.npy", points)
    assert np.array_equal(read_point_file(tmp_path / "far64.npy")[0], points)
    cloud = write_ply(tmp_path / "cloud.ply", points, np.empty((0, 3), int), "float")
    with pytest.raises(UsageError, match="steps of 0.25"):
        read_point_file(cloud)


def test_blenders_copy_of_an_obj_far_from_the_origin_is_moved_near_it(tmp_path):
    # Blender holds float32: given the user's numbers, it read a 2 m sphere on a 0.25 m grid
    far = SPHERE.vertices + UTM
    path = write_obj(tmp_path / "far.obj", far, SPHERE.faces)
    copy = blender_input(path, tmp_path, "", tmp_path / "blender")
    moved = trimesh.load(copy, process=False)
    offset = moved.vertices[0] - far[0]
    assert np.abs(moved.vertices[0]).max() < 1.0  # by the first vertex, rounded
    assert np.abs(moved.vertices - offset - far).max() < 1e-9
    assert np.array_equal(moved.faces, SPHERE.faces)
    assert "vn 0 0 1\n" in copy.read_text()  # only `v` statements move
    near = write_obj(tmp_path / "near.obj", SPHERE.vertices * 1000, SPHERE.faces)  # millimetres
    assert blender_input(near, tmp_path, "", tmp_path / "b2").read_bytes() == near.read_bytes()


def test_blenders_copy_of_an_obj_is_moved_by_a_vertex_its_faces_use_not_a_stray_first_one(
    tmp_path,
):
    # a stray vertex no face names, written first: the copy was moved by it, taking an object
    # at the origin 1e7 out (Blender: `quantized`), or leaving one at UTM where it was
    def with_stray_first(path: Path, stray: list[float], vertices: np.ndarray) -> Path:
        return write_obj(path, np.vstack([stray, vertices]), SPHERE.faces + 1)

    near = with_stray_first(tmp_path / "near.obj", [0.0, -1e7, 0.0], SPHERE.vertices)
    assert blender_input(near, tmp_path, "", tmp_path / "b1").read_bytes() == near.read_bytes()
    far = with_stray_first(tmp_path / "far.obj", [0.0, 0.0, 0.0], SPHERE.vertices + UTM)
    moved = obj_vertices(blender_input(far, tmp_path, "", tmp_path / "b2"))
    offset = obj_vertices(far) - moved  # whole units, one for all vertices
    assert np.abs(moved[1:]).max() <= 2.0  # the sphere, moved by one of its vertices
    assert np.array_equal(offset[1], np.round(SPHERE.vertices[0] + UTM))
    assert np.abs(offset - offset[1]).max() < 1e-9


def obj_vertices(path: Path) -> np.ndarray:
    # as Blender reads a line continuation: the backslash, blanks and the line's end as blanks
    text = re.sub(r"\\[ \t\r]*\n", "  ", path.read_text())
    rows = [line.split()[1:4] for line in text.splitlines() if line.startswith("v ")]
    return np.array(rows, dtype=np.float64)


def test_blenders_copy_of_an_obj_whose_vertices_go_on_on_the_next_line_is_moved_too(tmp_path):
    # `v x \` then `y z`: one vertex to Blender. The copy left those far out (its vertex
    # pattern stopped at the line's end) and its move anchor read no vertex: `quantized`
    vertices = np.vstack([[0.0, 0.0, 0.0], SPHERE.vertices + UTM])  # a stray first one
    ends = ["\\\n", "\\ \r\n", " \\\n"]
    rows = [f"v {x!r} {ends[n % 3]}{y!r} {z!r}\n" for n, (x, y, z) in enumerate(vertices)]
    rows += [f"f {a} {b} {c}\n" for a, b, c in SPHERE.faces + 2]  # from 1, after the stray
    path = tmp_path / "far.obj"
    path.write_bytes("".join(rows).encode())
    assert np.array_equal(obj_vertices(path), vertices)  # read as Blender does
    copy = blender_input(path, tmp_path, "", tmp_path / "blender")
    moved = obj_vertices(copy)
    offset = vertices - moved  # whole units, one for all vertices, by a face's vertex
    assert np.array_equal(offset[1], np.round(SPHERE.vertices[0] + UTM))
    assert np.abs(offset - offset[1]).max() < 1e-9 and np.abs(moved[1:]).max() <= 2.0
    assert copy.read_text().count("\\") == len(vertices)  # the lines as written, but numbers


def test_blenders_copy_of_an_obj_is_moved_by_its_vertices_not_a_line_a_comment_goes_on_to(
    tmp_path,
):
    # a comment ending in `\` goes on to the next line in Blender: counted as a vertex, that
    # line took the move anchor (the copy left at UTM, `quantized`), or was moved itself
    path = far_obj_after_continued_comments(tmp_path / "far.obj")
    vertices = obj_vertices(path)  # read as Blender does: [1, 2, 3], then the sphere
    assert np.array_equal(vertices[1:], SPHERE.vertices + UTM)
    copy = blender_input(path, tmp_path, "", tmp_path / "blender")
    offset = vertices - obj_vertices(copy)
    assert np.array_equal(offset[1], np.round(SPHERE.vertices[0] + UTM))
    assert np.abs(offset - offset[1]).max() < 1e-9
    text = copy.read_text()
    assert text.startswith("# exported \\\nv 0 0 0\n")  # as written
    # the vertex's comment is cut, and the line it went on to with it; every line kept
    assert "-1e7" not in text and text.count("\n") == path.read_text().count("\n")


def test_an_objs_continued_vertices_are_moved_where_its_blocks_part(tmp_path, monkeypatch):
    # The copy is made in blocks of whole lines (16 MiB). A block that ended after `v x \ `
    # (blanks after the backslash) parted the vertex: its first half was copied unmoved, far out
    whole_lines = meshio.line_blocks
    monkeypatch.setattr(meshio, "line_blocks", lambda handle, size=0: whole_lines(handle, 61))
    vertices = SPHERE.vertices + UTM
    rows = [f"v {x!r} \\ \n{y!r} \\\t\r\n{z!r}\n" for x, y, z in vertices]
    rows += [f"f {a} {b} {c}\n" for a, b, c in SPHERE.faces + 1]
    path = tmp_path / "far.obj"
    path.write_bytes("".join(rows).encode())
    moved = obj_vertices(blender_input(path, tmp_path, "", tmp_path / "blender"))
    assert np.abs(moved).max() <= 2.0
    assert np.abs(vertices - moved - np.round(vertices[SPHERE.faces[0, 0]])).max() < 1e-9


def test_blenders_copy_of_a_ply_of_doubles_far_from_the_origin_is_moved_near_it(tmp_path):
    # a georeferenced scan (double x, y, z, colours beside): Blender's importer held it in
    # float32 on a 0.25 m grid, a `quantized` failure of every render and coloured sample
    stray = np.vstack([[0.0, 0.0, 0.0], SPHERE.vertices + UTM])  # no face names the first
    far = write_coloured_ply(tmp_path / "scan.ply", stray, SPHERE.faces + 1, ascii=False)
    copy = blender_input(far, tmp_path, "", tmp_path / "blender")
    header = far.read_bytes().index(b"end_header\n") + len(b"end_header\n")
    record = np.dtype([("p", "<f8", 3), ("c", "u1", 3)])
    user = np.frombuffer(far.read_bytes()[header:], record, len(stray))
    moved = np.frombuffer(copy.read_bytes()[header:], record, len(stray))
    offset = user["p"] - moved["p"]
    assert np.array_equal(offset[1], np.round(SPHERE.vertices[0] + UTM))  # by a face's vertex
    assert np.abs(offset - offset[1]).max() < 1e-9 and np.abs(moved["p"][1:]).max() <= 2.0
    assert np.array_equal(moved["c"], user["c"])
    rest = header + len(stray) * record.itemsize
    assert copy.read_bytes()[:header] == far.read_bytes()[:header]
    assert copy.read_bytes()[rest:] == far.read_bytes()[rest:]
    assert np.abs(user["p"][1:] - SPHERE.vertices - UTM).max() == 0  # the user's, unchanged
    near = write_coloured_ply(tmp_path / "near.ply", SPHERE.vertices, SPHERE.faces, ascii=False)
    assert blender_input(near, tmp_path, "", tmp_path / "b2") == near  # given as it is


def test_blenders_copy_of_an_ascii_ply_of_doubles_far_from_the_origin_is_moved_near_it(tmp_path):
    # Blender's importer read the decimal doubles into float32 on a 0.25 m grid: `quantized`
    stray = np.vstack([[0.0, 0.0, 0.0], SPHERE.vertices + UTM])  # no face names the first
    far = write_coloured_ply(tmp_path / "scan.ply", stray, SPHERE.faces + 1, ascii=True)
    copy = blender_input(far, tmp_path, "", tmp_path / "blender")
    user, moved = far.read_text().splitlines(), copy.read_text().splitlines()
    header = user.index("end_header") + 1
    rows = slice(header, header + len(stray))
    offset = np.array([row.split()[:3] for row in user[rows]], float) - np.array(
        [row.split()[:3] for row in moved[rows]], float
    )
    assert np.array_equal(offset[1], np.round(SPHERE.vertices[0] + UTM))  # by a face's vertex
    assert np.abs(offset - offset[1]).max() < 1e-9
    assert [row.split()[3:] for row in moved[rows]] == [row.split()[3:] for row in user[rows]]
    assert moved[:header] == user[:header] and moved[rows.stop :] == user[rows.stop :]
    near = write_coloured_ply(tmp_path / "near.ply", SPHERE.vertices, SPHERE.faces, ascii=True)
    assert blender_input(near, tmp_path, "", tmp_path / "b2") == near  # given as it is


def test_an_ascii_stls_vertices_on_one_line_are_moved_too(tmp_path):
    # `outer loop vertex a vertex b vertex c`: Blender and trimesh read the words; the copy
    # moved a `vertex` only at a line's start, the others left 4,000 km out
    far = write_ascii_stl(tmp_path / "scan.stl", SPHERE.vertices + UTM, SPHERE.faces)
    text = far.read_bytes()
    half = len(text) // 2  # (a name of words: a `vertex` in it is not the first vertex)
    text = text.replace(b"solid scan", b"solid vertex 1 2 3", 1)
    far.write_bytes(text[:half] + text[half:].replace(b"\n      v", b" v"))
    copy = blender_input(far, tmp_path, "", tmp_path / "blender").read_bytes()
    words = re.findall(rb"vertex\s+(\S+)\s+(\S+)\s+(\S+)", copy.split(b"\n", 1)[1])
    assert len(words) == 3 * len(SPHERE.faces)
    assert np.abs(np.array(words, float)).max() <= 2.0


def test_an_ascii_ply_vertex_row_with_words_past_its_properties_is_moved_too(tmp_path):
    # Blender and trimesh read a row's declared words and skip the rest: such a row was
    # copied unmoved, one vertex left 4,000 km out of an object moved to the origin
    path = write_coloured_ply(tmp_path / "scan.ply", SPHERE.vertices + UTM, SPHERE.faces, True)
    lines = path.read_bytes().split(b"\n")
    row = lines.index(b"end_header") + 1 + 5
    lines[row] += b" 7"
    path.write_bytes(b"\n".join(lines))
    copy = blender_input(path, tmp_path, "", tmp_path / "blender").read_bytes().split(b"\n")
    x, y, z, *rest = copy[row].split()
    assert np.abs(np.array([x, y, z], float)).max() <= 2.0 and rest[-1] == b"7"


def test_blenders_copy_of_an_ascii_stl_far_from_the_origin_is_moved_near_it(tmp_path):
    far = write_ascii_stl(tmp_path / "scan.stl", SPHERE.vertices + UTM, SPHERE.faces)
    copy = blender_input(far, tmp_path, "", tmp_path / "blender")
    moved = trimesh.load(copy, process=False)  # float64, as trimesh reads ASCII
    offset = np.round(SPHERE.vertices[SPHERE.faces[0, 0]] + UTM)  # by its first vertex
    assert (
        np.abs(moved.vertices - (SPHERE.vertices[SPHERE.faces].reshape(-1, 3) + UTM - offset)).max()
        < 1e-9
    )
    assert "facet normal 0 0 1" in copy.read_text()  # only vertices move
    near = write_ascii_stl(tmp_path / "near.stl", SPHERE.vertices, SPHERE.faces)
    assert blender_input(near, tmp_path, "", tmp_path / "b2") == near
