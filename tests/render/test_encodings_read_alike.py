"""Numeric encodings of real PLY, STL and OBJ files (big-endian doubles, short and uchar
coordinates, uint32 list counts, `vertex_index`, elements before the vertices, a binary STL
whose header begins "solid", relative OBJ indices, `v x y z w`, vertex colours, continued
lines): trimesh (the fast path's points) and Blender (the views, and the points when colours
are asked for) read each as the one box it holds."""

import numpy as np
import pytest

from cg3d.geometry.meshio import load_mesh
from cg3d.params import SampleConfig
from cg3d.pipeline.sample import PointsReader
from tests.render.encoded_meshes import ENCODED_MESHES


@pytest.fixture
def files(tmp_path):
    for name, data in ENCODED_MESHES.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize("name", ENCODED_MESHES)
def test_trimesh_reads_the_box(files, name):
    mesh = load_mesh(files / name)
    assert len(mesh.faces) == 12
    np.testing.assert_array_equal(mesh.vertices.min(axis=0), [0, 0, 0])
    np.testing.assert_array_equal(mesh.vertices.max(axis=0), [1, 2, 3])


@pytest.mark.blender
def test_blender_reads_each_as_trimesh_does(files):
    fast = PointsReader(SampleConfig(points=1024))
    with PointsReader(SampleConfig(points=1024, colors=True)) as blender:
        for name in ENCODED_MESHES:
            a, _ = fast(files / name, "y", name)
            b, _ = blender(files / name, "y", name)
            assert blender.worker is not None
            np.testing.assert_allclose(a.min(0), b.min(0)[:3], atol=0.02, err_msg=name)
            np.testing.assert_allclose(a.max(0), b.max(0)[:3], atol=0.02, err_msg=name)
            np.testing.assert_allclose(a.mean(0), b.mean(0)[:3], atol=0.03, err_msg=name)
