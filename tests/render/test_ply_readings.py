"""Blender's side of the PLY one-reading rule (issue 25 §4): a PLY whose face counts disagree
with its rows is refused by the Blender worker too (its input goes through
`meshio.blender_input`), with the same reason as the fast path; one whose counts hold reads
the same surface in both."""

import numpy as np
import pytest

from cg3d.geometry.meshio import MeshError
from cg3d.params import SampleConfig
from cg3d.pipeline.sample import PointsReader
from tests.pipeline.plyfiles import TWO_READINGS, write_ply

pytestmark = pytest.mark.blender


def test_the_blender_worker_refuses_what_the_fast_path_refuses(tmp_path):
    fast = PointsReader(SampleConfig(points=256))
    with PointsReader(SampleConfig(points=256, colors=True)) as blender:
        for number, (case, faces) in enumerate(TWO_READINGS.items()):
            path = write_ply(tmp_path / f"m{number}.ply", faces, "ascii")
            with pytest.raises(MeshError) as fast_error:
                fast(path, "y", case)
            with pytest.raises(ValueError) as blender_error:
                blender(path, "y", case)
            assert fast_error.value.reason in str(blender_error.value), case
        assert blender.worker is not None
        good = write_ply(tmp_path / "good.ply", [[3, 0, 1, 2], [3, 0, 1, 3], [3, 1, 2, 3]], "ascii")
        a, _ = fast(good, "y", "good")
        b, _ = blender(good, "y", "good")
        np.testing.assert_allclose(a.min(0), b.min(0)[:3], atol=0.03)
        np.testing.assert_allclose(a.max(0), b.max(0)[:3], atol=0.03)
