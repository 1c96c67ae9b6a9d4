"""Blender's reading far from the origin (UTM metres: x 500 km, y 4,000 km), where its float32
coordinates move in 0.25 m steps: an OBJ is read as the same object at the origin (its copy
is moved near it), a file it cannot move is a `quantized` failure, never a blocky object."""

from pathlib import Path

import numpy as np
import pytest
import trimesh

from cg3d.params import SampleConfig
from cg3d.pipeline.sample import PointsReader
from tests.pipeline.farfiles import SPHERE, UTM, write_obj, write_ply

pytestmark = pytest.mark.blender


def test_blender_reads_an_obj_far_from_the_origin_as_at_the_origin(tmp_path: Path):
    origin = write_obj(tmp_path / "origin.obj", SPHERE.vertices, SPHERE.faces)
    far = write_obj(tmp_path / "far.obj", SPHERE.vertices + UTM, SPHERE.faces)
    ply = write_ply(tmp_path / "far.ply", SPHERE.vertices + UTM, SPHERE.faces, "double")
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        expected = read(origin, "y", "a")[0]
        assert np.abs(read(far, "y", "a")[0] - expected).max() < 1e-5
        # Blender's PLY importer holds the doubles in float32: said, not a blocky sphere
        with pytest.raises(ValueError, match="quantized: Blender holds coordinates 4e"):
            read(ply, "y", "a")
    assert trimesh.load(far).vertices.max() > 4e6  # the user's file is left as it was
