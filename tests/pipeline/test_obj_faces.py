"""One reading of an OBJ face that names a vertex twice, or vertex 0, on every path: the fast
path (`load_mesh`), the meshes stage (`validate_file`) and the file handed to Blender
(`blender_input`). A vertex repeated side by side is read (Blender drops the repeat, trimesh's
fan adds only zero-area triangles), and so is a face whose every edge meets its first corner (a
star: no surface to either); any other repeat apart, or vertex 0, is refused, naming the line.
Before: one such file sampled by trimesh and read otherwise, or dropped, by Blender."""

from pathlib import Path

import numpy as np
import pytest

from cg3d.geometry.meshio import MeshError, blender_input, load_mesh, validate_file

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


@pytest.mark.parametrize(
    "face", ["f 1 2 3 4 2", "f 1 2 3 1 4", "f 2 1 3 1", "f 1 2 3 1 4 2", "f 1 2 1 3 2"]
)
def test_a_vertex_repeated_apart_is_refused_naming_the_line(tmp_path, face):
    path = tmp_path / "m.obj"
    path.write_text(HEAD + "# the next face\n" + face + "\n")
    for caller, call in readers(path, tmp_path).items():
        with pytest.raises(MeshError) as caught:
            call()
        assert (caught.value.kind, caught.value.reason) == (
            "unreadable",
            "the OBJ face at line 8 names a vertex twice, not side by side (Blender and "
            "trimesh read two different surfaces from it)",
        ), caller


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
    """Line numbers count across the blocks the file is read in."""
    import cg3d.geometry.meshio as meshio

    blocks = meshio.line_blocks
    monkeypatch.setattr(meshio, "line_blocks", lambda handle: blocks(handle, size=64))
    path = tmp_path / "m.obj"
    path.write_text(HEAD + "f 1 2 5\n" * 40 + "f 1 2 3 4 2\n")
    with pytest.raises(MeshError, match="line 47 names a vertex twice"):
        load_mesh(path)


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
