"""Meshes and point files far from the origin (UTM metres: x 500 km, y 4,000 km). A file that
stores float32 coordinates there holds a 2 m object on a 0.25 m grid: a `quantized` failure
row (a one-line error for a point file) naming the steps, never a blocky cloud. A float64 file
there reads as the same object at the origin."""

import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cg3d.errors import UsageError
from cg3d.formats.pointfiles import read_point_file
from cg3d.geometry.meshio import MeshError, load_mesh
from cg3d.geometry.sampling import object_rng, sample_object
from cg3d.params import SampleConfig

UTM = np.array([500_000.0, 4_000_000.0, 300.0])
SPHERE = trimesh.creation.icosphere(subdivisions=2, radius=1.0)  # a 2 m object


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, kind: str) -> Path:
    dtype = {"float": "<f4", "double": "<f8"}[kind]
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\n"
        + "".join(f"property {kind} {axis}\n" for axis in "xyz")
        + f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    rows = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", 3)])
    rows["n"], rows["i"] = 3, faces
    path.write_bytes(header.encode() + np.asarray(vertices, dtype).tobytes() + rows.tobytes())
    return path


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
