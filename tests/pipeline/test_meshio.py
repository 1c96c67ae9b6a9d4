import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cg3d.formats.manifest import FAILURE_KINDS
from cg3d.geometry.meshio import Mesh, MeshError, check_mesh, load_mesh

TRIANGLE_OFF = "3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"


def test_modelnet_off_with_the_header_on_the_counts_line(tmp_path: Path) -> None:
    path = tmp_path / "chair_0001.off"
    path.write_text("OFF" + TRIANGLE_OFF)
    mesh = load_mesh(path)
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    np.testing.assert_array_equal(mesh.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2]])


# OFF keywords as Geomview and ModelNet write them, each with the columns its vertex rows carry
# after xyz (normals, colours, texture coordinates).
OFF_KEYWORDS = {
    "OFF": "", "COFF": " 255 0 0 255", "NOFF": " 0 0 1", "STOFF": " 0.5 0.5",
    "CNOFF": " 0 0 1 1.0 0.0 0.0 1.0", "NCOFF": " 0 0 1 1.0 0.0 0.0 1.0",
}  # fmt: skip
BOX_CORNERS = [[x, y, z] for x in (0.0, 1.0) for y in (0.0, 2.0) for z in (0.0, 3.0)]
BOX_QUADS = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]


def box_off(keyword: str, joined: bool = False, newline: str = "\n", faces: int = 6) -> str:
    """A 1 × 2 × 3 box as an OFF of `keyword` (its counts on the keyword's line with no blank
    between when `joined`, ModelNet's bug), coordinates in scientific notation, quads with a
    colour after their indices; only the first `faces` face rows (a file cut short)."""
    counts = f"{len(BOX_CORNERS)} {len(BOX_QUADS)} 0"
    lines = [f"{keyword}{counts}"] if joined else [f"# from a CAD tool\n{keyword}", counts]
    extra = OFF_KEYWORDS[keyword]
    lines += [" ".join(f"{c:.6e}" for c in corner) + extra for corner in BOX_CORNERS]
    lines += ["4 " + " ".join(map(str, quad)) + " 0.5 0.5 0.5" for quad in BOX_QUADS[:faces]]
    return newline.join(lines) + newline


@pytest.mark.parametrize("keyword", OFF_KEYWORDS)
@pytest.mark.parametrize("joined", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_every_off_keyword_reads_the_box(tmp_path: Path, keyword, joined, newline) -> None:
    path = tmp_path / "box.off"
    path.write_bytes(box_off(keyword, joined, newline).encode())
    mesh = load_mesh(path)
    assert mesh.faces.shape == (12, 3)
    np.testing.assert_array_equal(mesh.vertices, BOX_CORNERS)


@pytest.mark.parametrize("keyword", OFF_KEYWORDS)
@pytest.mark.parametrize("joined", [False, True])
def test_an_off_of_any_keyword_cut_short_is_truncated(tmp_path: Path, keyword, joined) -> None:
    """Before: a NOFF, STOFF, CNOFF or NCOFF cut at a line break read as the faces it kept
    (the row count was checked for OFF and COFF only)."""
    path = tmp_path / "box.off"
    path.write_text(box_off(keyword, joined, faces=4))
    with pytest.raises(MeshError) as raised:
        load_mesh(path)
    assert (raised.value.kind, raised.value.reason) == (
        "unreadable",
        "truncated: the OFF header declares 8 vertices and 6 faces (14 rows), the file holds 12",
    )


def test_an_off_of_cr_line_ends_reads(tmp_path: Path) -> None:
    """trimesh splits its lines at a CR; the row count did not: "truncated ... holds 0"."""
    path = tmp_path / "box.off"
    path.write_bytes(box_off("OFF", newline="\r").encode())
    np.testing.assert_array_equal(load_mesh(path).vertices, BOX_CORNERS)


@pytest.mark.parametrize("name", ["m.obj", "m.stl"])
def test_an_obj_or_ascii_stl_of_cr_line_ends_is_named(tmp_path: Path, name) -> None:
    """Blender's importers read no faces from them; trimesh failed on the OBJ ("could not
    convert string to float: 'v'") and read 2 of the STL's 12 triangles."""
    text = {
        "m.obj": "v 0 0 0\rv 1 0 0\rv 0 1 0\rf 1 2 3\r",
        "m.stl": "solid a\rfacet normal 0 0 1\router loop\rvertex 0 0 0\rvertex 1 0 0\r"
        "vertex 0 1 0\rendloop\rendfacet\rendsolid a\r",
    }[name]
    path = tmp_path / name
    path.write_bytes(text.encode())
    with pytest.raises(MeshError) as raised:
        load_mesh(path)
    assert raised.value.kind == "unreadable"
    assert raised.value.reason.startswith("its lines end in CR alone")


@pytest.mark.parametrize("keyword", ["4OFF", "nOFF", "C4OFF"])
def test_an_off_of_other_dimensions_is_named_unsupported(tmp_path: Path, keyword) -> None:
    """trimesh took the first 3 of a 4OFF's 4 coordinates (w dropped: another shape)."""
    path = tmp_path / "box.off"
    rows = [" ".join(map(str, corner)) + " 2.0" for corner in BOX_CORNERS]
    faces = ["4 " + " ".join(map(str, quad)) for quad in BOX_QUADS]
    path.write_text("\n".join([keyword, "8 6 0", *rows, *faces]) + "\n")
    with pytest.raises(MeshError) as raised:
        load_mesh(path)
    assert raised.value.kind == "unsupported_format"
    assert raised.value.reason.startswith(f"{keyword}: an OFF whose vertices have 4 or n")


def test_polygons_are_triangulated(tmp_path: Path) -> None:
    path = tmp_path / "quad.off"
    path.write_text("OFF\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    mesh = load_mesh(path)
    assert mesh.faces.shape == (2, 3)
    assert set(mesh.faces.ravel()) == {0, 1, 2, 3}


# A hexagon (corners 0-5 round the unit circle's first half and back), a triangle and a quad
HEXAGON = [[1, 0, 0], [0.5, 0.8, 0], [-0.5, 0.8, 0], [-1, 0, 0], [-0.5, -0.8, 0], [0.5, -0.8, 0]]


def test_an_off_face_of_five_or_more_corners_among_others_reads(tmp_path: Path) -> None:
    """trimesh fanned the unconverted words of faces of 5+ corners once faces of another size
    were present: "UFuncTypeError: ufunc 'multiply' did not contain a loop...", for any such
    face (a pentagon beside a triangle), the 20,000-corner cap of a cylinder too."""
    rows = [" ".join(map(str, corner)) for corner in HEXAGON]
    path = tmp_path / "mixed.off"
    path.write_text(
        "\n".join(["OFF", "6 3 0", *rows, "6 0 1 2 3 4 5", "3 0 1 2 255 0 0", "4 0 2 3 5", ""])
    )
    # trimesh's order: triangles, each quad's 0-1-2 then 2-3-0, the fan from the first corner
    np.testing.assert_array_equal(
        load_mesh(path).faces,
        [[0, 1, 2], [0, 2, 3], [3, 5, 0], [0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 5]],
    )


def test_an_off_of_polygons_alone_reads_as_trimesh_reads_it(tmp_path: Path) -> None:
    rows = [" ".join(map(str, corner)) for corner in HEXAGON]
    path = tmp_path / "hexagons.off"
    path.write_text("\n".join(["OFF", "6 2 0", *rows, "6 0 1 2 3 4 5", "6 5 4 3 2 1 0", ""]))
    mesh = load_mesh(path)
    direct = trimesh.load(path, process=False)  # the faces of one size trimesh reads itself
    np.testing.assert_array_equal(mesh.faces, direct.faces)
    np.testing.assert_array_equal(mesh.vertices, direct.vertices)


@pytest.mark.parametrize("keyword", ["off", "Off", "coff", "off8 6 0"])
def test_an_off_keyword_in_lower_case_is_named(tmp_path: Path, keyword) -> None:
    # trimesh: "ValueError: not enough values to unpack (expected 3, got 1)"
    path = tmp_path / "box.off"
    path.write_text(box_off("OFF").replace("OFF", keyword, 1))
    with pytest.raises(MeshError) as raised:
        load_mesh(path)
    assert raised.value.kind == "unreadable"
    assert raised.value.reason.startswith(f"its keyword is '{keyword.split()[0]}' in lower case")


def test_glb_scene_is_flattened_with_node_transforms(tmp_path: Path) -> None:
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(extents=[1, 1, 1]), node_name="a")
    moved = trimesh.transformations.translation_matrix([10.0, 0.0, 0.0])
    scene.add_geometry(trimesh.creation.box(extents=[1, 1, 1]), node_name="b", transform=moved)
    path = tmp_path / "two boxes.glb"
    scene.export(path)
    mesh = load_mesh(path)
    assert mesh.faces.shape == (24, 3)
    np.testing.assert_allclose(mesh.vertices.max(axis=0), [10.5, 0.5, 0.5])
    np.testing.assert_allclose(mesh.vertices.min(axis=0), [-0.5, -0.5, -0.5])


def test_obj_with_missing_texture_still_loads(tmp_path: Path) -> None:
    (tmp_path / "model.mtl").write_text("newmtl wood\nmap_Kd textures/missing.png\n")
    (tmp_path / "model.obj").write_text(
        "mtllib model.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nusemtl wood\nf 1 2 3 4\n"
    )
    mesh = load_mesh(tmp_path / "model.obj")
    assert mesh.faces.shape == (2, 3)


BAD_FILES = {
    "unreadable": ("garbage.off", b"this is not a mesh\n"),
    "empty": ("zero.obj", b""),
    "degenerate": ("line.off", b"OFF\n3 1 0\n0 0 0\n1 1 1\n2 2 2\n3 0 1 2\n"),
    "non_finite": ("nan.off", b"OFF\n3 1 0\n0 0 nan\n1 0 0\n0 1 0\n3 0 1 2\n"),
    "absurd_size": ("huge.off", b"OFF\n3 1 0\n0 0 0\n1e9 0 0\n0 1 0\n3 0 1 2\n"),
    "unsupported_format": ("model.fbx", b"Kaydara FBX Binary"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_each_bad_file_raises_its_kind(tmp_path: Path, kind: str) -> None:
    name, content = BAD_FILES[kind]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MeshError) as caught:
        load_mesh(tmp_path / name)
    assert caught.value.kind == kind
    assert kind in FAILURE_KINDS
    assert str(caught.value).startswith(f"{kind}: ") and caught.value.reason


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(MeshError) as caught:
        load_mesh(tmp_path / "gone.obj")
    assert caught.value.kind == "unreadable"


def test_point_cloud_ply_has_no_faces(tmp_path: Path) -> None:
    path = tmp_path / "points.ply"
    path.write_bytes(
        trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(file_type="ply")
    )
    with pytest.raises(MeshError) as caught:
        load_mesh(path)
    assert caught.value.kind == "no_faces"
    assert caught.value.reason == "a point cloud (20 vertices, no faces)"


def test_check_mesh_rejects_faces_past_the_vertices() -> None:
    mesh = Mesh(np.eye(3), np.array([[0, 1, 5]]))
    with pytest.raises(MeshError) as caught:
        check_mesh(mesh)
    assert caught.value.kind == "unreadable"


@pytest.mark.parametrize("faces", ["f 1 2 9", "f 1 2 3\nf 4 1 2"])
def test_an_obj_face_past_its_vertices_says_so(tmp_path: Path, faces: str) -> None:
    # trimesh's OBJ reader fails on it with a bare IndexError, which the row used to be
    path = tmp_path / "past.obj"
    path.write_text(f"v 0 0 0\nv 1 0 0\nv 0 1 0\n{faces}\n")
    with pytest.raises(MeshError) as caught:
        load_mesh(path)
    assert caught.value.kind == "unreadable"
    assert caught.value.reason.startswith("a face refers to a vertex that does not exist (")


def test_check_mesh_judges_area_relative_to_size() -> None:
    tiny = Mesh(np.eye(3) * 1e-6, np.array([[0, 1, 2]]))
    check_mesh(tiny)  # a millimetre-scale object in metres is fine
    unused_nan = Mesh(np.vstack([np.eye(3), [np.nan] * 3]), np.array([[0, 1, 2]]))
    check_mesh(unused_nan)  # a stray unused vertex does not make the surface non-finite


@pytest.mark.parametrize("suffix", [".glb", ".gltf"])
def test_textured_gltf_loads_geometry_only(tmp_path: Path, suffix: str) -> None:
    from PIL import Image

    mesh = trimesh.creation.box(extents=[1, 2, 3])
    uv = np.random.default_rng(0).random((len(mesh.vertices), 2))
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.new("RGB", (8, 8), "red"))
    mesh.export(tmp_path / f"textured{suffix}")  # .gltf: buffers in .bin files beside it
    loaded = load_mesh(tmp_path / f"textured{suffix}")
    assert loaded.faces.shape == (12, 3)
    np.testing.assert_allclose(np.ptp(loaded.vertices, axis=0), [1, 2, 3])


def test_a_gltf_uri_with_backslashes_is_resolved_as_blender_reads_it(tmp_path: Path) -> None:
    """Blender's glTF importer turns backslashes into slashes: `..\\outside\\x.png` names a
    file outside the root, not a file with backslashes in its name inside it."""
    from cg3d.geometry.meshio import validate_file

    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.png").write_bytes(b"\x89PNG")
    box = trimesh.creation.box()
    box.export(root / "box.gltf")
    document = json.loads((root / "box.gltf").read_text())
    document["images"] = [{"uri": "..\\outside.png"}]
    (root / "box.gltf").write_text(json.dumps(document))
    with pytest.raises(MeshError, match="^outside_root: ../outside.png"):
        validate_file(root / "box.gltf", root)


def test_an_mtllib_continued_after_blanks_names_the_library_blender_reads(tmp_path) -> None:
    """Blender's importer takes a backslash, blanks and the line's end as a continuation:
    `mtllib \\ ` then `m.mtl` was read as a library named "\\" (listed missing) and m.mtl,
    which Blender reads, was neither checked nor given to the copy (its materials lost)."""
    import io

    from cg3d.geometry.meshio import line_blocks, mtllib_statements, references

    (tmp_path / "m.mtl").write_text("newmtl red\nKd 1 0 0\n")
    obj = tmp_path / "a.obj"
    obj.write_bytes(b"mtllib \\ \t\r\n  m.mtl\nusemtl red\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert references(obj, tmp_path) == ([tmp_path / "m.mtl"], [])
    data = obj.read_bytes()
    for size in range(1, len(data) + 2):
        blocks = list(line_blocks(io.BytesIO(data), size))
        texts = [text for block in blocks for _, _, text in mtllib_statements(block)]
        assert texts == ["mtllib   m.mtl"]


def test_mtllib_statements_are_found_whatever_the_block_boundaries() -> None:
    """The OBJ scan reads blocks of whole logical lines: a continued `mtllib` split across a
    block boundary, or spelt in another case, is still one statement (the upper-case one names
    no file, as in Blender; a keyword split by a continuation is read, where Blender skips it:
    checked and copied rather than missed)."""
    import io

    from cg3d.geometry.meshio import _argument, line_blocks, mtllib_statements

    data = (
        b"v 0 0 0\n  mtllib a.mtl\nv 1 0 0\nmtllib \\\r\n  b.mtl\r\nMTLLIB c.mtl\n"
        b"usemtl mtllib_named\nmtl\\\nlib d.mtl\nf 1 2 3"
    )
    for size in range(1, len(data) + 2):
        blocks = list(line_blocks(io.BytesIO(data), size))
        assert b"".join(blocks) == data
        texts = [text for block in blocks for _, _, text in mtllib_statements(block)]
        assert [_argument(text, "mtllib") for text in texts] == [
            "a.mtl",
            "b.mtl",
            None,
            None,
            "d.mtl",
        ]


# Each is the triangle (0, 0, 0) (1, 0, 0) (0, 1, 0) to Blender 5.0.1 (the test below): the line
# after a comment that ends in a backslash (blanks after it or not) is the comment's.
COMMENT_GOES_ON = {
    "comment": b"# exported \\\nv 9 9 9\nv 0 0 0\n",
    "comment, blanks after": b"# exported \\ \t\r\nv 9 9 9\nv 0 0 0\n",
    "vertex comment": b"v 0 0 0 # first \\\nv 9 9 9\n",
    "vertex comment, blanks after": b"v 0 0 0 # first \\ \r\nv 9 9 9\n",
}
TRIANGLE = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def comment_going_on(path: Path, head: bytes) -> Path:
    path.write_bytes(head + b"v 1 0 0\nv 0 1 0\nf 1 2 3\n")
    return path


@pytest.mark.parametrize("head", COMMENT_GOES_ON.values(), ids=COMMENT_GOES_ON)
def test_a_line_a_comment_goes_on_to_is_no_vertex_as_in_blender(tmp_path, head) -> None:
    # trimesh joined a line only to a backslash at its very end (blanks after it: `v 9 9 9` a
    # vertex to trimesh alone), and a vertex's comment was cut at its backslash for both
    # readers: the face named (9, 9, 9), where Blender's names (1, 0, 0)
    mesh = load_mesh(comment_going_on(tmp_path / "a.obj", head))
    assert mesh.vertices[mesh.faces].tolist() == [TRIANGLE]


# A face line a comment goes on to is the comment's too (Blender 5.0.1, the test below): the
# face checks read it as a face, so a file Blender reads was an `unreadable` row (vertex 0), and
# a face split there left the comment its first loop and gave the copy the others, faces
# Blender never had in the user's file
FACE_A_COMMENT_GOES_ON_TO = {
    "names vertex 0": b"# exported \\\nf 1 0 2\n",
    "split into two loops": b"# exported \\\nf 1 2 3 4 2 5\n",
}


def face_a_comment_goes_on_to(path: Path, hidden: bytes) -> Path:
    path.write_bytes(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nv 2 2 0\n" + hidden + b"f 1 2 3\n")
    return path


@pytest.mark.parametrize(
    "hidden", FACE_A_COMMENT_GOES_ON_TO.values(), ids=FACE_A_COMMENT_GOES_ON_TO
)
def test_a_face_line_a_comment_goes_on_to_is_no_face_as_in_blender(tmp_path, hidden) -> None:
    from cg3d.geometry.meshio import blender_input

    path = face_a_comment_goes_on_to(tmp_path / "a.obj", hidden)
    mesh = load_mesh(path)
    assert mesh.vertices[mesh.faces].tolist() == [TRIANGLE]
    # Blender's copy keeps the face line where the comment takes it (no loop freed from it)
    copy = blender_input(path, tmp_path, "", tmp_path / "copies")
    assert copy.read_bytes().splitlines()[5:] == path.read_bytes().splitlines()[5:]


BLENDER_TRIANGLES = """
import sys
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.wm.obj_import(filepath=sys.argv[1], forward_axis="Y", up_axis="Z")
for o in bpy.data.objects:
    for p in o.data.polygons:
        print("FACE", [[round(c, 3) for c in o.data.vertices[i].co] for i in p.vertices])
"""


@pytest.mark.blender
@pytest.mark.parametrize("head", COMMENT_GOES_ON.values(), ids=COMMENT_GOES_ON)
def test_blender_reads_the_line_a_comment_goes_on_to_as_the_comment(tmp_path, head) -> None:
    """What the reading above follows, for the user's file and for the copy Blender is given."""
    from cg3d.geometry.meshio import blender_input

    path = comment_going_on(tmp_path / "a.obj", head)
    assert_blender_reads_the_triangle(path, blender_input(path, tmp_path, "", tmp_path / "copies"))


@pytest.mark.blender
@pytest.mark.parametrize(
    "hidden", FACE_A_COMMENT_GOES_ON_TO.values(), ids=FACE_A_COMMENT_GOES_ON_TO
)
def test_blender_reads_a_face_line_a_comment_goes_on_to_as_the_comment(tmp_path, hidden) -> None:
    """What the reading of `test_a_face_line_a_comment_goes_on_to_is_no_face_as_in_blender`
    follows, for the user's file and for the copy Blender is given."""
    from cg3d.geometry.meshio import blender_input

    path = face_a_comment_goes_on_to(tmp_path / "a.obj", hidden)
    assert_blender_reads_the_triangle(path, blender_input(path, tmp_path, "", tmp_path / "copies"))


def assert_blender_reads_the_triangle(*objs: Path) -> None:
    import subprocess
    import sys

    for obj in objs:
        run = subprocess.run(
            [sys.executable, "-c", BLENDER_TRIANGLES, str(obj)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert [line for line in run.stdout.splitlines() if line.startswith("FACE")] == [
            f"FACE {TRIANGLE}"
        ]
