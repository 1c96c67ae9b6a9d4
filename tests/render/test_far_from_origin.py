"""Blender's reading far from the origin (UTM metres: x 500 km, y 4,000 km), where its float32
coordinates move in 0.25 m steps: an OBJ is read as the same object at the origin (its copy
is moved near it), a file it cannot move is a `quantized` failure, never a blocky object."""

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cg3d.params import SampleConfig
from cg3d.pipeline.sample import PointsReader
from tests.pipeline.farfiles import (
    SPHERE,
    UTM,
    far_obj_after_continued_comments,
    write_ascii_stl,
    write_coloured_ply,
    write_obj,
)

pytestmark = pytest.mark.blender


def test_blender_reads_an_obj_far_from_the_origin_as_at_the_origin(tmp_path: Path):
    origin = write_obj(tmp_path / "origin.obj", SPHERE.vertices, SPHERE.faces)
    far = write_obj(tmp_path / "far.obj", SPHERE.vertices + UTM, SPHERE.faces)
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        expected = read(origin, "y", "a")[0]
        assert np.abs(read(far, "y", "a")[0] - expected).max() < 1e-5
    assert trimesh.load(far).vertices.max() > 4e6  # the user's file is left as it was


def test_blender_reads_an_obj_whose_vertices_go_on_on_the_next_line_far_out_as_at_the_origin(
    tmp_path: Path,
):
    # `v x \` then `y z`, one vertex to Blender: its copy left them far out, `quantized`
    origin = write_obj(tmp_path / "origin.obj", SPHERE.vertices, SPHERE.faces)
    ends = ["\\\n", "\\ \r\n", " \\\n"]
    rows = [
        f"v {x!r} {ends[n % 3]}{y!r} {z!r}\n" for n, (x, y, z) in enumerate(SPHERE.vertices + UTM)
    ]
    far = tmp_path / "far.obj"
    far.write_bytes("".join(rows + [f"f {a} {b} {c}\n" for a, b, c in SPHERE.faces + 1]).encode())
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        assert np.abs(read(far, "y", "a")[0] - read(origin, "y", "a")[0]).max() < 1e-5


def test_blender_reads_an_obj_far_out_with_comments_ending_in_a_backslash_as_at_the_origin(
    tmp_path: Path,
):
    # Blender joins the line after `# note \` into the comment: the copy's move anchor was read
    # from that line (no vertex of Blender's), the sphere left far out, `quantized`
    origin = write_obj(tmp_path / "origin.obj", SPHERE.vertices, SPHERE.faces)
    far = far_obj_after_continued_comments(tmp_path / "far.obj")
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        assert np.abs(read(far, "y", "a")[0] - read(origin, "y", "a")[0]).max() < 1e-5


def test_blender_reads_an_ascii_ply_of_doubles_or_an_ascii_stl_far_out_as_at_the_origin(tmp_path):
    # Blender's importers read their decimal doubles into float32: a `quantized` failure
    ply = write_coloured_ply(tmp_path / "far.ply", SPHERE.vertices + UTM, SPHERE.faces, True)
    near = write_coloured_ply(tmp_path / "near.ply", SPHERE.vertices, SPHERE.faces, True)
    stl = write_ascii_stl(tmp_path / "far.stl", SPHERE.vertices + UTM, SPHERE.faces)
    near_stl = write_ascii_stl(tmp_path / "near.stl", SPHERE.vertices, SPHERE.faces)
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        expected, coloured = read(near, "y", "a")
        points, far_coloured = read(ply, "y", "a")
        assert coloured and far_coloured
        assert np.abs(points - expected).max() < 1e-5  # xyz and the colours
        assert np.abs(read(stl, "y", "a")[0] - read(near_stl, "y", "a")[0]).max() < 1e-5


def test_blender_reads_a_gltf_node_or_an_off_far_from_the_origin_as_at_the_origin(tmp_path: Path):
    # a glTF node placed in UTM metres: Blender composes its matrices in float32; an OFF is
    # built from the fast path's float64 arrays (its float32 held them on the 0.25 m grid)
    origin = write_obj(tmp_path / "origin.obj", SPHERE.vertices, SPHERE.faces)
    placed = np.eye(4)
    placed[:3, 3] = UTM + 0.3  # not whole metres: the node's own float32 rounds it
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.Trimesh(SPHERE.vertices, SPHERE.faces), transform=placed)
    scene.export(tmp_path / "node.glb")
    off = write_off(tmp_path / "far.off", SPHERE.vertices + UTM, SPHERE.faces)
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        expected = read(origin, "y", "a")[0]
        for path in (tmp_path / "node.glb", off):
            assert np.abs(read(path, "y", "a")[0] - expected).max() < 1e-5, path.name


def write_off(path: Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    rows = [f"{x!r} {y!r} {z!r}" for x, y, z in vertices] + [f"3 {a} {b} {c}" for a, b, c in faces]
    path.write_text(f"OFF\n{len(vertices)} {len(faces)} 0\n" + "\n".join(rows) + "\n")
    return path


def test_blender_reads_an_obj_or_off_at_the_origin_with_a_stray_first_vertex_far_out(tmp_path):
    # a vertex no face names, 1e7 out and written first: the copy (the OFF's arrays) was moved
    # by it, the sphere 1e7 out in Blender's float32, and the object a `quantized` failure
    origin = write_obj(tmp_path / "origin.obj", SPHERE.vertices, SPHERE.faces)
    stray = np.vstack([[0.0, -1e7, 0.0], SPHERE.vertices])
    obj = write_obj(tmp_path / "stray.obj", stray, SPHERE.faces + 1)
    off = write_off(tmp_path / "stray.off", stray, SPHERE.faces + 1)
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        expected = read(origin, "y", "a")[0]
        for path in (obj, off):
            assert np.abs(read(path, "y", "a")[0] - expected).max() < 1e-5, path.name


def test_blender_reads_a_binary_ply_of_doubles_far_from_the_origin_as_at_the_origin(tmp_path):
    # a georeferenced scan with colours: its copy is moved near the origin (was `quantized`)
    origin = write_coloured_ply(tmp_path / "origin.ply", SPHERE.vertices, SPHERE.faces, False)
    far = write_coloured_ply(tmp_path / "far.ply", SPHERE.vertices + UTM, SPHERE.faces, False)
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        expected, coloured = read(origin, "y", "a")
        points, far_coloured = read(far, "y", "a")
    assert coloured and far_coloured
    assert np.abs(points - expected).max() < 1e-5  # xyz and the colours


@pytest.mark.parametrize("place", [(0.0, 0.0, 0.0), tuple(UTM)])
def test_a_mesh_under_a_gltf_camera_or_light_node_keeps_its_place(tmp_path, place):
    # the views use our camera and lights alone: the file's are removed, and a mesh under one
    # lost its transform with it, the importer's Y-up turn included (a 1x2x4 box came out
    # with its y and z extents swapped)
    trimesh.creation.box([1, 2, 4]).export(tmp_path / "box.gltf")
    document = json.loads((tmp_path / "box.gltf").read_text())
    document["cameras"] = [{"type": "perspective", "perspective": {"yfov": 0.8, "znear": 0.01}}]
    document["extensionsUsed"] = ["KHR_lights_punctual"]
    document["extensions"] = {"KHR_lights_punctual": {"lights": [{"type": "point"}]}}
    light = {"extensions": {"KHR_lights_punctual": {"light": 0}}}
    paths = {}
    for name, parent in (("plain", {}), ("camera", {"camera": 0}), ("light", light)):
        nodes = [{"mesh": 0}] if name == "plain" else [{**parent, "children": [1]}, {"mesh": 0}]
        nodes[0]["translation"] = list(place)
        document["nodes"], document["scenes"] = nodes, [{"nodes": [0]}]
        paths[name] = tmp_path / f"{name}.gltf"
        paths[name].write_text(json.dumps(document))
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        expected = read(paths["plain"], "y", "a")[0]
        for name in ("camera", "light"):
            assert np.abs(read(paths[name], "y", "a")[0] - expected).max() < 1e-5, name
