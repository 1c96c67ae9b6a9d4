"""One reading of an OBJ face that names a vertex twice, or vertex 0, on every path: the fast
path (`load_mesh`), the meshes stage (`validate_file`) and the file handed to Blender
(`blender_input`). A vertex repeated side by side is read (Blender drops the repeat, trimesh's
fan adds only zero-area triangles), and so is a face whose every edge meets its first corner (a
star: no surface to either); any other repeat apart is split into its loops before either
reader sees it (the rule above `meshio.OBJ_LONG_FACE`); vertex 0 is refused, naming the line.
Before: one such file sampled by trimesh and read otherwise, or dropped, by Blender; then
(until the split) the whole model refused."""

from pathlib import Path

import numpy as np
import pytest

from cg3d.geometry.meshio import (
    MeshError,
    blender_input,
    face_loops,
    load_mesh,
    validate_file,
)

# A unit square in z=0 (vertices 1-4) and an apex (5); the first face, a triangle of area 0.5,
# keeps the file a surface whatever the second face is.
HEAD = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 1\nf 1 2 5\n"


def readers(path: Path, root: Path) -> dict:
    return {
        "fast path": lambda: load_mesh(path),
        "meshes stage": lambda: validate_file(path, root),
        "blender input": lambda: blender_input(path, root, "", root / "copies"),
    }


def area(mesh) -> float:
    v = mesh.vertices[mesh.faces]
    return float(np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1).sum() / 2)


@pytest.mark.parametrize(
    "face",
    ["f 1 2 3 4", "f 1 2 2 3 4", "f 1 2 3 4 1", "f 1 1 2 3 4 4", "f 1/1 2/2 2/2 3/3 4/4"],
)
def test_a_vertex_repeated_side_by_side_is_read_as_the_polygon_without_it(tmp_path, face):
    path = tmp_path / "m.obj"
    path.write_text(HEAD + face + "\n")
    for call in readers(path, tmp_path).values():
        call()
    assert area(load_mesh(path)) == pytest.approx(0.5 + 1.0)  # the triangle and the square


# (face, the loops it is read as, their area on the unit square 1-4): worked by hand from the
# rule, the areas from the square's geometry (a triangle of three of its corners is 0.5).
SPLITS = [
    ("f 1 2 3 4 2", ["f 2 3 4"], 0.5),  # and 2 1: two corners, dropped
    ("f 1 2 3 1 4", ["f 1 2 3"], 0.5),  # and 1 4
    ("f 2 1 3 1", [], 0.0),  # 1 3 and 1 2: nothing
    ("f 1 2 3 1 4 2", ["f 1 2 3", "f 1 4 2"], 1.0),  # 1 4 2 then splits no more
    ("f 1 2 1 3 2", ["f 1 3 2"], 0.5),  # 1 2 dropped; 1 3 2 has no repeat
    ("f 1/1/1 2/2/2 3/3/3 4/4/4 2/5/5", ["f 2/2/2 3/3/3 4/4/4"], 0.5),  # corners keep words
    ("f 1 2 2 3 4 2 # side by side, then apart", ["f 2 3 4"], 0.5),
    ("f 1 2 3 4 3", ["f 3 1 2"], 0.5),  # Blender read it as nothing: now both read this
]


@pytest.mark.parametrize("face, loops, loop_area", SPLITS)
def test_a_vertex_repeated_apart_is_read_as_its_loops_on_every_path(
    tmp_path, face, loops, loop_area
):
    path = tmp_path / "m.obj"
    text = HEAD + "usemtl m\n" + face + "\nf 1 2 5\n"
    path.write_text(text)
    found = readers(path, tmp_path)
    found["meshes stage"]()
    assert area(load_mesh(path)) == pytest.approx(0.5 + loop_area + 0.5)
    copy = found["blender input"]()
    faces = [line for line in copy.read_text().splitlines() if line.startswith("f ")]
    assert faces == ["f 1 2 5", *loops, "f 1 2 5"]  # in place, between the faces around it
    assert path.read_text() == text  # the user's file untouched, nothing written beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copies", "m.obj"]


def test_the_loops_of_a_face_by_the_rule():
    """`face_loops` alone, on faces no square test reaches: a repeat inside a loop is split
    again, loops come in the order of their corners, a thrice-named vertex."""

    def loops(face: str) -> list[str]:
        return [" ".join(w.decode() for w in loop) for loop in face_loops(face.encode().split())]

    assert loops("1 2 3 4 5 3 6 7") == ["3 4 5", "3 6 7 1 2"]
    assert loops("1 2 3 1 4 5 1 6 7") == ["1 2 3", "1 4 5", "1 6 7"]
    assert loops("1 2 3 4 2 5 6 3") == ["2 3 4", "2 5 6 3 1"]  # 3 only once in each
    assert loops("5 6 7 8") == ["5 6 7 8"]  # no repeat: itself
    assert loops("1 2 1") == []


def the_rule_as_written(words: list[bytes]) -> list[list[bytes]]:
    """The rule above `meshio.OBJ_LONG_FACE` walked as its comment says (quadratic in the
    corners: the reading before `face_loops` became n log n), the reference the fast one must
    match."""
    loops, pending = [], [words]
    while pending:
        corners = pending.pop()
        keys = [word.split(b"/")[0] for word in corners]
        kept = [i for i in range(len(keys)) if keys[i] != keys[i - 1]] or [0]
        corners, keys = [corners[i] for i in kept], [keys[i] for i in kept]
        first: dict[bytes, int] = {}
        for second, key in enumerate(keys):
            if key in first:
                pending += [corners[second:] + corners[: first[key]], corners[first[key] : second]]
                break
            first[key] = second
        else:
            if len(corners) >= 3:
                loops.append(corners)
    return loops


def test_the_loops_are_those_of_the_rule_as_written():
    """Random faces (few vertices, so many repeats, nested and wrapping round), texture
    indices kept: the same loops, in the same order, each from the same corner."""
    rng = np.random.default_rng(7)
    for _ in range(3000):
        count = int(rng.integers(1, 40))
        vertices = rng.integers(1, int(rng.integers(2, 12)), size=count)
        words = [f"{v}/{i}".encode() for i, v in enumerate(vertices)]
        assert face_loops(words) == the_rule_as_written(words), words


class CountedWord(bytes):
    """A corner word that counts how often its vertex is read from it."""

    reads = 0

    def split(self, *args, **kwargs):
        CountedWord.reads += 1
        return [bytes(part) for part in super().split(*args, **kwargs)]


def test_a_face_is_split_reading_each_corner_a_bounded_number_of_times(monkeypatch):
    """A mirrored face ("f 1 2 .. n n .. 2 1", each vertex twice): the rule as written walks
    the whole face again after each of its n splits (4.7 s for 10,000 corners, minutes for a
    100,000-corner line); each corner's vertex is now read once (before: ~n/2 times each)."""
    half = 2000
    words = [CountedWord(b"%d/1" % v) for v in [*range(1, half + 1), *range(half, 0, -1)]]
    monkeypatch.setattr(CountedWord, "reads", 0)
    assert face_loops(words) == []  # every loop two corners: no surface
    assert CountedWord.reads <= 2 * len(words)
    words[half] = CountedWord(b"%d/1" % (half + 1))  # a triangle at the far end
    monkeypatch.setattr(CountedWord, "reads", 0)
    assert face_loops(words) == [[b"%d/1" % v for v in (half - 1, half, half + 1)]]
    assert CountedWord.reads <= 2 * len(words)


def test_a_hostile_face_of_100000_corners_is_read(tmp_path):
    """A 100,000-corner mirrored line (600 KB) beside one triangle: both readers go through
    it (before: about 8 minutes each) and read the triangle alone."""
    half = 50_000
    corners = [*range(4, half + 4), *range(half + 3, 3, -1)]
    vertices = "".join(f"v {i % 7} {i % 11} {i % 13}\n" for i in range(half))
    path = tmp_path / "m.obj"
    path.write_text(
        "v 0 0 0\nv 1 0 0\nv 0 1 0\n"
        + vertices
        + "f 1 2 3\nf "
        + " ".join(map(str, corners))
        + "\n"
    )
    assert area(load_mesh(path)) == pytest.approx(0.5)
    copy = blender_input(path, tmp_path, "", tmp_path / "copies")
    assert copy.read_text().splitlines()[-2:] == ["f 1 2 3", ""]


@pytest.mark.parametrize("face", ["f 1 2 1 3", "f 1 2 1 2", "f 1 1 2 1 3", "f 3 2 3 4 3 1"])
def test_a_face_whose_repeats_all_meet_its_first_corner_is_read_as_no_surface(tmp_path, face):
    """Every edge of such a face meets its first corner: a star that encloses nothing, so
    Blender reads no surface from it and trimesh's fan from the first corner only triangles
    that name a vertex twice. Before: the whole model was refused for it."""
    path = tmp_path / "m.obj"
    path.write_text(HEAD + face + "\n")
    for call in readers(path, tmp_path).values():
        call()
    assert area(load_mesh(path)) == pytest.approx(0.5)  # the first face's triangle alone


@pytest.mark.parametrize("face", ["f 0 1 2", "f 1 2 0", "f 1/1/1 0/2/2 3/3/3"])
def test_a_face_naming_vertex_0_is_refused(tmp_path, face):
    path = tmp_path / "m.obj"
    path.write_text(HEAD + face + "\n")
    for caller, call in readers(path, tmp_path).items():
        with pytest.raises(MeshError, match="line 7 names vertex 0 ") as caught:
            call()
        assert caught.value.kind == "unreadable", caller


@pytest.mark.parametrize("face", ["f 10 2 3", "f 1/0 2/0 3/0", "f 1//10 2//20 3//30"])
def test_a_zero_or_a_ten_elsewhere_is_no_vertex_0(tmp_path, face):
    path = tmp_path / "m.obj"
    path.write_text(HEAD.replace("f 1 2 5", "v 1 0 1\n" * 5 + "f 1 2 5") + face + "\n")
    load_mesh(path)


def test_the_face_is_found_past_the_first_block(tmp_path, monkeypatch):
    """Faces are split in every block the file is read in, and line numbers count across them."""
    import cg3d.geometry.meshio as meshio

    blocks = meshio.line_blocks
    monkeypatch.setattr(meshio, "line_blocks", lambda handle: blocks(handle, size=64))
    path = tmp_path / "m.obj"
    path.write_text(HEAD + "f 1 2 5\n" * 40 + "f 1 2 3 4 2\n" + "f 1 2 3 1 4\n")
    assert area(load_mesh(path)) == pytest.approx(0.5 * 41 + 0.5 + 0.5)
    copy = blender_input(path, tmp_path, "", tmp_path / "copies")
    assert copy.read_text().splitlines()[-2:] == ["f 2 3 4", "f 1 2 3"]
    path.write_text(HEAD + "f 1 2 5\n" * 40 + "f 1 2 3 4 2 \\\n 1\n")
    for call in readers(path, tmp_path).values():  # a face split over lines: still refused
        with pytest.raises(MeshError, match="line 47 names a vertex twice, not side by side, and"):
            call()


@pytest.mark.blender
def test_blender_reads_the_side_by_side_repeat_as_trimesh_does(tmp_path):
    """The premise of the rule: the two readings agree on a face whose repeat is side by side
    (a cube written with each square's first corner listed twice)."""
    import trimesh

    from cg3d.params import SampleConfig
    from cg3d.pipeline.sample import PointsReader

    cube = trimesh.creation.box(extents=(1, 2, 4))
    lines = [f"v {x} {y} {z}" for x, y, z in cube.vertices]
    # Each of the 12 triangles as "a a b c": a repeat side by side on a 4-corner face.
    lines += [f"f {a + 1} {a + 1} {b + 1} {c + 1}" for a, b, c in cube.faces]
    path = tmp_path / "box.obj"
    path.write_text("\n".join(lines) + "\n")
    fast = PointsReader(SampleConfig(points=2048))
    with PointsReader(SampleConfig(points=2048, colors=True)) as blender:
        a, _ = fast(path, "z", "box")
        b, _ = blender(path, "z", "box")
    np.testing.assert_allclose(a.min(0), b.min(0)[:3], atol=0.02)
    np.testing.assert_allclose(a.max(0), b.max(0)[:3], atol=0.02)


# Blender's importer in a subprocess (the test process never imports bpy): the area of what it
# reads from each OBJ named on the command line, one number a line.
BLENDER_AREAS = """
import sys
import bpy
for path in sys.argv[1:]:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.obj_import(filepath=path)
    area = sum(p.area for o in bpy.data.objects if o.type == "MESH" for p in o.data.polygons)
    print(f"AREA {area:.6f}")
"""


@pytest.mark.blender
def test_blender_reads_a_star_as_nothing_and_a_repeat_apart_by_where_its_corners_lie(tmp_path):
    """Why a star face is read and the other repeats apart stay refused. On a unit square (1-4)
    with a point above its middle (5): Blender reads "f 1 2 3 4 2" as the triangle 2-3-4 (0.5),
    not as the square without the repeat (1) nor as trimesh's fan (1.5); "f 1 2 3 4 3" and
    "f 3 2 1 4 1", a triangle and a spike back along a side, as nothing and as the triangle;
    a spike to the point above the square adds that point to the face (more than the square)."""
    import subprocess
    import sys

    square = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0.5 0.5 1\n"
    faces = [
        "f 1 2 1 3", "f 1 2 1 5 1 4", "f 3 2 3 4 3 1",  # stars: nothing
        "f 1 2 3 4 2", "f 1 2 3 4 3", "f 3 2 1 4 1", "f 1 2 5 2 3 4",
    ]  # fmt: skip
    paths = []
    for number, face in enumerate(faces):
        paths.append(tmp_path / f"{number}.obj")
        paths[-1].write_text(square + face + "\n")
    run = subprocess.run(
        [sys.executable, "-c", BLENDER_AREAS, *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    areas = [float(line.split()[1]) for line in run.stdout.splitlines() if line.startswith("AREA")]
    assert areas[:6] == pytest.approx([0, 0, 0, 0.5, 0, 0.5], abs=1e-6)
    assert areas[6] > 1.2  # the square lifted to the point above it: 2.3 in Blender 5.0
    import trimesh

    for path in paths[:3]:  # trimesh's fan: only triangles that name a vertex twice
        assert area(trimesh.load(path, force="mesh", process=False)) == 0


def blender_areas(paths: list[Path]) -> list[float]:
    """The area Blender's OBJ importer reads from each file (in a subprocess: BLENDER_AREAS)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", BLENDER_AREAS, *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(line.split()[1]) for line in run.stdout.splitlines() if line.startswith("AREA")]


@pytest.mark.blender
def test_blender_reads_the_split_copy_with_trimeshs_area(tmp_path):
    """What Blender is given (`blender_input`'s copy) reads, in Blender's importer, as the
    area trimesh reads from the user's file: the two readings are one again. On the original
    files they differed (the test above: 0.5 against 1.5 for "f 1 2 3 4 2")."""
    square = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0.5 0.5 1\nf 1 2 5\n"
    faces = [face for face, _, _ in SPLITS] + ["f 1 2 5 2 3 4", "f 3 2 1 4 1", "f 1 2 1 3"]
    paths, copies = [], []
    for number, face in enumerate(faces):
        paths.append(tmp_path / f"{number}.obj")
        paths[-1].write_text(square + face + "\n")
        copies.append(blender_input(paths[-1], tmp_path, "", tmp_path / f"copy-{number}"))
    read = blender_areas(copies)
    assert len(read) == len(faces)
    for face, path, blender in zip(faces, paths, read, strict=True):
        assert blender == pytest.approx(area(load_mesh(path)), abs=1e-5), face


@pytest.mark.blender
def test_the_points_and_the_views_of_a_split_face_are_its_loops(tmp_path):
    """ "f 1 2 3 4 2" on the unit square (beside the triangle 1 2 5 that makes the object 3D):
    the fast path's points, Blender's points and Blender's views are each those of the file
    that holds the triangle 2 3 4 instead, and not those of the square."""
    from cg3d.params import RenderConfig, SampleConfig
    from cg3d.pipeline.sample import PointsReader
    from tests.render.helpers import render_views

    files = {}
    for name, face in (("split", "f 1 2 3 4 2"), ("loop", "f 2 3 4"), ("square", "f 1 2 3 4")):
        files[name] = tmp_path / name / "m.obj"
        files[name].parent.mkdir()
        files[name].write_text(HEAD + face + "\n")
    fast = PointsReader(SampleConfig(points=1024))
    with PointsReader(SampleConfig(points=1024, colors=True)) as blender:
        clouds = {
            (name, way): read(path, "y", "m")[0][:, :3]
            for name, path in files.items()
            for way, read in (("fast", fast), ("blender", blender))
        }

    def farthest(a: np.ndarray, b: np.ndarray) -> float:
        """How far the point of `a` farthest from `b` is from it."""
        return float(np.linalg.norm(a[:, None] - b[None], axis=2).min(axis=1).max())

    for way in ("fast", "blender"):  # the same object id: the same draws on the same surface
        np.testing.assert_allclose(clouds["split", way], clouds["loop", way], atol=1e-6)
        assert farthest(clouds["square", way], clouds["split", way]) > 0.15  # the half it lacks
    assert farthest(clouds["split", "fast"], clouds["split", "blender"]) < 0.1
    assert farthest(clouds["split", "blender"], clouds["split", "fast"]) < 0.1

    config = RenderConfig(views=4, resolution=64, background="transparent")
    masks = {
        name: np.stack(
            [v[:, :, 3] > 0 for v in render_views(path, "y", config, flat=True)[0].values()]
        )
        for name, path in files.items()
    }
    assert masks["split"].sum() > 500
    assert (masks["split"] != masks["loop"]).sum() == 0
    assert (masks["split"] != masks["square"]).sum() > 100


# Comments after statements, as exporters write them, on every kind of line: the file has the
# unit square (1-4, two triangles, area 1) and the triangle 1 2 5 (0.5), 1.5 in all.
COMMENTED = (
    "# a whole-line comment\n"
    "mtllib m.mtl # the materials\n"
    "o thing # its name\n"
    "v 0 0 0 # corner\nv 1 0 0\nv 1 1 0 #\nv 0 1 0\t# tab\nv 0 0 1\n"
    "vt 0 0 # uv\n"
    "usemtl red # its material\n"
    "f 1 2 5 # no mtllib here\n"
    "f 1 2 3 #hello\r\n"
    "f 1 3 4    # the square's other half\n"
)


def test_comments_after_statements_are_read_past_on_every_path(tmp_path):
    """trimesh refused the whole file ("invalid literal for int() with base 10: '#'") where
    Blender reads it; and the copy Blender is given blanked the face whose comment says
    "mtllib". Both readers now get the file without such comments."""
    from cg3d.geometry.meshio import obj_material_libraries

    path = tmp_path / "m.obj"
    path.write_bytes(COMMENTED.encode())
    (tmp_path / "m.mtl").write_text("newmtl red\nKd 1 0 0\n")
    for call in readers(path, tmp_path).values():
        call()
    assert area(load_mesh(path)) == pytest.approx(1.5)
    # in `mtllib`, no comment: the name Blender reads (see the test below), missing here
    assert obj_material_libraries(path) == ["m.mtl # the materials"]
    copy = blender_input(path, tmp_path, "", tmp_path / "copies").read_text()
    faces = [line.split() for line in copy.splitlines() if line.startswith("f ")]
    assert faces == [["f", "1", "2", "5"], ["f", "1", "2", "3"], ["f", "1", "3", "4"]]
    assert "#hello" not in copy and "# corner" not in copy
    assert copy.count("\n") == COMMENTED.count("\n") + 1  # every line kept, our mtllib first


def test_a_hash_inside_a_word_is_no_comment(tmp_path):
    """Only a `#` after a blank starts a comment: "usemtl red#2" names that material (the
    file is not rewritten for it)."""
    from cg3d.geometry.meshio import check_obj_faces, without_inline_comments

    path = tmp_path / "m.obj"
    path.write_text(HEAD + "usemtl red#2\n")
    assert check_obj_faces(path) is False
    assert without_inline_comments(b"o red#2 # c\nf 1 2 3\n") == b"o red#2\nf 1 2 3\n"


@pytest.mark.blender
def test_blender_reads_a_commented_obj_with_trimeshs_area(tmp_path):
    """The user's file and the copy Blender is given read, in Blender's importer, as the area
    trimesh reads (1.5): no face lost to a comment on either path."""
    path = tmp_path / "m.obj"
    path.write_bytes(COMMENTED.encode())
    (tmp_path / "m.mtl").write_text("newmtl red\nKd 1 0 0\n")
    copy = blender_input(path, tmp_path, "", tmp_path / "copies")
    assert blender_areas([path, copy]) == pytest.approx([1.5, 1.5], abs=1e-5)
    assert area(load_mesh(path)) == pytest.approx(1.5)


# An OBJ whose one library's name has a blank then `#`, and files of each name it could mean:
# only "a b #2.mtl" makes "red" red.
HASHED_MTLLIB = "mtllib a b #2.mtl\n" + HEAD.replace("f 1 2 5", "usemtl red\nf 1 2 5")
HASHED_LIBRARIES = {"a b #2.mtl": "1 0 0", "a b": "0 1 0", "a b #2": "0 0 1"}


def hashed_mtllib(folder: Path) -> Path:
    for name, colour in HASHED_LIBRARIES.items():
        (folder / name).write_text(f"newmtl red\nKd {colour}\n")
    path = folder / "m.obj"
    path.write_text(HASHED_MTLLIB)
    return path


def test_a_hash_after_a_blank_in_mtllib_is_part_of_the_name(tmp_path):
    """`mtllib a b #2.mtl` names "a b #2.mtl", as Blender 5.0.1 reads it (the test below):
    it read as "a b", with " #2.mtl" taken for a comment, and the library was listed missing
    (or another file, "a b", was read in its place)."""
    from cg3d.geometry.meshio import defined_materials, obj_material_libraries

    path = hashed_mtllib(tmp_path)
    assert obj_material_libraries(path) == ["a b #2.mtl"]
    copy = blender_input(path, tmp_path, "", tmp_path / "copies")
    library = copy.parent / "material-0.mtl"
    assert "Kd 1 0 0" in library.read_text()  # the copy names the red one, resolved
    assert defined_materials(copy) == {"red": True}


BLENDER_KD = """
import sys
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.wm.obj_import(filepath=sys.argv[1])
for material in bpy.data.materials:
    colour = material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value
    print("KD", material.name, *(round(value, 3) for value in colour[:3]))
"""


@pytest.mark.blender
def test_blender_reads_a_hash_after_a_blank_in_mtllib_as_part_of_the_name(tmp_path):
    """What the reading above follows: Blender's importer takes the rest of an `mtllib` line,
    `#` and all, as the file's name, for the user's file and for the copy it is given."""
    import subprocess
    import sys

    path = hashed_mtllib(tmp_path)
    copy = blender_input(path, tmp_path, "", tmp_path / "copies")
    for obj in (path, copy):
        run = subprocess.run(
            [sys.executable, "-c", BLENDER_KD, str(obj)], capture_output=True, text=True, check=True
        )
        assert [line for line in run.stdout.splitlines() if line.startswith("KD")] == [
            "KD red 1.0 0.0 0.0"
        ]


# A material named with a blank and `#` in both the MTL and the OBJ, as Blender 5.0.1 reads both
# (the rest of the line); a comment after a face, so the copy is the rewritten text.
HASHED_USEMTL = "mtllib m.mtl\n" + HEAD.replace("f 1 2 5", "usemtl red # c\nf 1 2 5 # a face")


def hashed_usemtl(folder: Path) -> Path:
    (folder / "m.mtl").write_text("newmtl red # c\nKd 1 0 0\n")
    path = folder / "m.obj"
    path.write_text(HASHED_USEMTL)
    return path


def test_a_hash_after_a_blank_in_usemtl_is_part_of_the_name(tmp_path):
    """`usemtl red # c` names the material "red # c", which `newmtl red # c` defines, as
    Blender reads both (the test below). The copy Blender is given said "usemtl red": no
    material of that name, so the views had the importer's grey and the points no colour."""
    from cg3d.geometry.meshio import defined_materials

    path = hashed_usemtl(tmp_path)
    copy = blender_input(path, tmp_path, "", tmp_path / "copies")
    used = [line[len("usemtl ") :] for line in copy.read_text().splitlines() if "usemtl" in line]
    assert used == ["red # c"]
    assert defined_materials(copy) == {"red # c": True}
    assert "# a face" not in copy.read_text()  # a face's comment is still none of its corners
    assert area(load_mesh(path)) == pytest.approx(0.5)


@pytest.mark.blender
def test_blender_reads_a_hash_after_a_blank_in_usemtl_as_part_of_the_name(tmp_path):
    """What the reading above follows: Blender's importer colours the user's file and the copy
    red, and the coloured points of it are red."""
    import subprocess
    import sys

    from cg3d.params import SampleConfig
    from cg3d.pipeline.sample import PointsReader

    path = hashed_usemtl(tmp_path)
    copy = blender_input(path, tmp_path, "", tmp_path / "copies")
    for obj in (path, copy):
        run = subprocess.run(
            [sys.executable, "-c", BLENDER_KD, str(obj)], capture_output=True, text=True, check=True
        )
        assert [line for line in run.stdout.splitlines() if line.startswith("KD")] == [
            "KD red # c 1.0 0.0 0.0"
        ]
    with PointsReader(SampleConfig(points=256, colors=True)) as blender:
        cloud, has_color = blender(path, "z", "m")
    assert has_color
    np.testing.assert_allclose(cloud[:, 3:6], np.tile([1.0, 0.0, 0.0], (len(cloud), 1)), atol=0.01)


# Face corners carrying different indices: every face of a group holding as many numbers as the
# first, trimesh took them all to be laid out as the first face's corners are.
MIXED_CORNERS = {
    # a UV on some corners, a normal on others, neither on the last (every face so)
    "corners of three kinds": ("f 1/1 2//1 3\nf 1/1 3//1 4\n", 1.0),
    # the square with UVs (8 numbers), then the triangle 1 2 5 with 8 numbers laid out otherwise
    "faces laid out differently": ("f 1/1 2/1 3/1 4/1\nf 1/1/1 2/1/1 5/1\n", 1.5),
}


@pytest.mark.parametrize("faces, expected", MIXED_CORNERS.values(), ids=list(MIXED_CORNERS))
def test_face_corners_carrying_different_indices_are_read_by_their_vertices(
    tmp_path, faces, expected
):
    """Before: "f 1/1 2//1 3" was read by trimesh as the triangle 1 1 2 (no area: the box's
    views and points showed different surfaces)."""
    path = tmp_path / "m.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 1\nvt 0 0\nvn 0 0 1\n" + faces)
    mesh = load_mesh(path)
    assert area(mesh) == pytest.approx(expected)
