"""Real-world files through Blender: coloured points match the views, a Z-up OBJ stands up,
and files without a surface fail with a reason naming the cause."""

import numpy as np
import pytest

from cg3d.params import RenderConfig, SampleConfig
from cg3d.pipeline.sample import PointsReader
from cg3d.render.cameras import project
from tests.render.gltf_files import blender_file, mixed_glb
from tests.render.helpers import render_views

pytestmark = pytest.mark.blender

RESOLUTION = 128


def test_point_colours_agree_with_the_pixels_they_project_to(tmp_path):
    path = blender_file("textured", tmp_path / "textured.glb")
    config = SampleConfig(points=2048, colors=True, normals=True)
    with PointsReader(config) as read:
        points, has_color = read(path, "y", "object")
    assert points.shape == (2048, 9) and has_color
    render = RenderConfig(views=4, resolution=RESOLUTION, background="transparent")
    views, cameras = render_views(path, "y", render, flat=True)
    errors = []
    for view in cameras["views"]:
        image = views[view["name"]]
        centre = np.linalg.inv(np.asarray(view["world_to_camera"]))[:3, 3]  # camera position
        # a cube is convex: a point is visible when its face looks at the camera
        facing = np.einsum("nj,nj->n", points[:, 6:9], centre - points[:, :3]) > 0.05
        pixels, _ = project(points[facing], view)
        cols, rows = np.round(pixels).astype(int).T
        seen = image[rows, cols]
        assert (seen[:, 3] > 0).mean() > 0.95
        inner = seen[:, 3] == 255  # off the anti-aliased silhouette
        error = np.abs(seen[inner, :3] / 255.0 - points[facing][inner, 3:6]).max(axis=1)
        errors.append(error)
    errors = np.concatenate(errors)
    # The checker's four colours differ by > 0.5 in some channel: a wrong lookup (UV flipped,
    # colour space not handled, wrong texel) is far off; only checker edges may miss.
    assert np.median(errors) < 0.03
    assert (errors < 0.1).mean() > 0.9


def test_an_object_without_colour_gets_the_constant(tmp_path):
    path = mixed_glb(tmp_path / "plain.glb", (4,))
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        points, has_color = read(path, "y", "plain")
    assert not has_color
    np.testing.assert_array_equal(points[:, 3:6], 0.5)


def test_a_z_up_obj_with_up_axis_z_renders_upright(tmp_path):
    # A 0.2 × 0.4 × 2 bar along the file's +Z: upright, it is tall and narrow in side views.
    path = blender_file("zup_obj", tmp_path / "bar.obj")
    config = RenderConfig(views=4, resolution=64, background="transparent", elevation_max=10.0)
    for up_axis, upright in (("z", True), ("y", False)):
        views, _ = render_views(path, up_axis, config)
        for image in views.values():
            rows, cols = np.nonzero(image[:, :, 3])
            tall = (rows.max() - rows.min()) > 2 * (cols.max() - cols.min())
            assert tall == upright, up_axis
    with PointsReader(SampleConfig(points=256)) as read:
        points, _ = read(path, "z", "bar")
    extent = points.max(axis=0) - points.min(axis=0)
    assert np.argmax(extent) == 1  # the bar's length is along the canonical +Y


@pytest.mark.parametrize(
    "modes, reason",
    [
        ((0,), "no_faces: a point cloud (glTF POINTS primitives, no faces)"),
        ((1,), "no_faces: the file holds only lines or points, no faces"),
    ],
)
def test_files_without_faces_name_the_cause(tmp_path, modes, reason):
    from cg3d.geometry.meshio import MeshError, validate_file

    path = mixed_glb(tmp_path / "x.glb", modes)
    with pytest.raises(MeshError) as caught:
        validate_file(path, tmp_path)
    assert str(caught.value) == reason
    # Blender's reading, where the meshes stage's check is skipped, names it too.
    with PointsReader(SampleConfig(points=64)) as read, pytest.raises(ValueError, match="^no_f"):
        read(path, "y", "x")


def test_an_undecodable_draco_payload_is_named(tmp_path):
    path = blender_file("draco", tmp_path / "draco.glb")
    data = bytearray(path.read_bytes())
    header = 20 + int.from_bytes(data[12:16], "little")
    data[header + 8 : header + 408] = b"\x00" * 400  # the binary chunk: Draco bitstreams
    path.write_bytes(bytes(data))
    undecodable = "^undecodable: the KHR_draco_mesh_compression"
    with (
        PointsReader(SampleConfig(points=64)) as read,
        pytest.raises(ValueError, match=undecodable),
    ):
        read(path, "y", "draco")
