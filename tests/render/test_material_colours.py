"""Where the colour of points and workbench views comes from: the base colour's chain of the
material only, never another map of it (roughness, normal, emission), in files written by
Blender's glTF exporter."""

import numpy as np
import pytest

from cg3d.params import RenderConfig, SampleConfig
from cg3d.pipeline.sample import PointsReader
from tests.render.gltf_files import MR_RGB, RED, blender_file
from tests.render.helpers import render_views

pytestmark = pytest.mark.blender

# `_textured_cube`'s checker: every base-colour texel is one of these.
CHECKER = np.array([(0.9, 0.1, 0.1), (0.1, 0.8, 0.1), (0.1, 0.2, 0.9), (0.95, 0.85, 0.1)])


def nearest_checker_distance(rgb: np.ndarray) -> np.ndarray:
    return np.abs(rgb[:, None, :] - CHECKER[None]).max(axis=2).min(axis=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("materials")
    return {
        kind: blender_file(kind, folder / f"{kind}.glb")
        for kind in ("vertex_colours_mr", "four_maps")
    }


def points_rgb(path) -> np.ndarray:
    with PointsReader(SampleConfig(points=512, colors=True)) as read:
        points, has_color = read(path, "y", "object")
    assert has_color
    return points[:, 3:6]


def view_rgb(path) -> np.ndarray:
    """The opaque pixels of a flat-lit workbench view, 0–1."""
    config = RenderConfig(views=1, resolution=64, background="transparent")
    views, _ = render_views(path, "y", config, flat=True)
    (image,) = views.values()
    return image[image[:, :, 3] == 255][:, :3] / 255.0


def test_vertex_colours_not_the_metallic_roughness_map_colour_the_points(files):
    rgb = points_rgb(files["vertex_colours_mr"])
    assert np.abs(rgb - RED).max() < 0.02, rgb.mean(axis=0)  # MR_RGB would be lavender
    assert np.abs(rgb.mean(axis=0) - MR_RGB).max() > 0.3


def test_vertex_colours_not_the_metallic_roughness_map_colour_the_view(files):
    rgb = view_rgb(files["vertex_colours_mr"])
    assert len(rgb) > 100
    assert np.median(np.abs(rgb - RED).max(axis=1)) < 0.05, rgb.mean(axis=0)


def test_only_the_base_colour_map_of_four_colours_the_points(files):
    rgb = points_rgb(files["four_maps"])
    assert (nearest_checker_distance(rgb) < 0.03).mean() > 0.95


def test_only_the_base_colour_map_of_four_colours_the_view(files):
    rgb = view_rgb(files["four_maps"])
    assert len(rgb) > 100
    assert np.median(nearest_checker_distance(rgb)) < 0.05
