"""glTF as gltfpack and other tools encode it (KHR_mesh_quantization's integer positions under a
node scale, a node's rotation and scale, several scenes): Blender's reading, the one both the
points and the views come from, gives the object the file stands for (extents worked out by
hand in ENCODED_BOXES), and the points land on the rendered object in every view."""

import numpy as np
import pytest

from cg3d.params import RenderConfig, SampleConfig
from cg3d.pipeline.sample import PointsReader
from tests.render.gltf_files import ENCODED_BOXES, encoded_box_glb
from tests.render.helpers import on_object_share, render_views

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def read_boxes(tmp_path_factory):
    """{encoding: the points of its file} by the sample stage's reader (Blender's, for glTF)."""
    folder = tmp_path_factory.mktemp("encoded")
    with PointsReader(SampleConfig(points=1024)) as read:
        return {
            encoding: read(encoded_box_glb(folder / f"{encoding}.glb", encoding), "y", encoding)[0]
            for encoding in ENCODED_BOXES
        }, folder


@pytest.mark.parametrize("encoding", ENCODED_BOXES)
def test_the_points_have_the_shape_the_file_encodes(read_boxes, encoding):
    points = read_boxes[0][encoding]
    extent = points.max(axis=0) - points.min(axis=0)
    expected = np.array(ENCODED_BOXES[encoding])
    np.testing.assert_allclose(extent / extent.max(), expected / expected.max(), atol=0.03)


@pytest.mark.parametrize("encoding", ["int16_normalised", "node_transform", "two_scenes"])
def test_the_points_land_on_the_rendered_object(read_boxes, encoding):
    clouds, folder = read_boxes
    config = RenderConfig(views=4, resolution=96, workers=1, background="transparent")
    views, cameras = render_views(folder / f"{encoding}.glb", "y", config)
    for view in cameras["views"]:
        alpha = views[view["name"]][:, :, 3]
        assert on_object_share(clouds[encoding], alpha, view) >= 0.95, view["name"]
