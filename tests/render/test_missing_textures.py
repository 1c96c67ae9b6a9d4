"""A material whose colour is not there (an OBJ's or a glTF's texture file missing, an OBJ
material no MTL defines): the points get no colour (what is left is the importer's default,
not the author's) and the view is not Blender's magenta "missing image" colour. Where the
file states a colour under the missing texture (an MTL's Kd, a glTF's baseColorFactor: each
spec multiplies the texture by it), the points and the view take that colour."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cg3d.params import RenderConfig, SampleConfig
from cg3d.pipeline.sample import PointsReader
from tests.pipeline.texturefiles import srgb, textured_cube
from tests.render.gltf_files import blender_file
from tests.render.helpers import render_views

pytestmark = pytest.mark.blender

RED = (200, 30, 30)  # the texture's one texel colour, 0–255 sRGB
NO_COLOR = 0.5  # README: an object with no colour gets mid grey


def sampled(path: Path) -> tuple[np.ndarray, bool]:
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        points, has_color = read(path, "y", "cube", path.parent)
    return points[:, 3:6], has_color


def test_the_texture_colours_the_points_when_it_is_there(tmp_path):
    path = textured_cube(tmp_path)
    Image.new("RGB", (4, 4), RED).save(tmp_path / "skin.png")
    rgb, has_color = sampled(path)
    assert has_color
    assert np.abs(rgb - np.array(RED) / 255).max() < 0.01


def test_a_missing_texture_gives_the_points_no_colour_not_the_importers_grey(tmp_path):
    rgb, has_color = sampled(textured_cube(tmp_path))
    assert not has_color  # it was True, every point 0.906: Blender's default base colour
    assert np.abs(rgb - NO_COLOR).max() < 1e-6


def test_a_missing_texture_does_not_draw_the_view_magenta(tmp_path):
    config = RenderConfig(views=1, resolution=64, background="transparent")
    views, _ = render_views(textured_cube(tmp_path), "y", config, flat=True)
    (image,) = views.values()
    rgb = image[image[:, :, 3] == 255][:, :3].astype(float)
    assert len(rgb) > 100
    # grey: the three channels alike (magenta is 255, 0, 255)
    assert np.median(rgb.max(axis=1) - rgb.min(axis=1)) < 10, rgb.mean(axis=0)


GREEN = (0.2, 0.6, 0.2)  # an MTL's Kd (linear, as MTL values are)


def test_a_defined_material_colours_the_points(tmp_path):
    path = textured_cube(tmp_path)
    (tmp_path / "cube.mtl").write_text("newmtl skin\nKd 0.2 0.6 0.2\n")
    rgb, has_color = sampled(path)
    assert has_color
    assert np.abs(rgb - [srgb(c) for c in GREEN]).max() < 0.01


@pytest.mark.parametrize("mtl", [None, "newmtl other\nKd 0.2 0.6 0.2\n"])
def test_a_material_no_mtl_defines_gives_the_points_no_colour(tmp_path, mtl):
    """The MTL missing, or defining other names: Blender invents `skin` (0.8 grey)."""
    path = textured_cube(tmp_path)
    (tmp_path / "cube.mtl").unlink()
    if mtl is not None:
        (tmp_path / "cube.mtl").write_text(mtl)
    rgb, has_color = sampled(path)
    assert not has_color  # it was True, every point 0.906
    assert np.abs(rgb - NO_COLOR).max() < 1e-6


def test_an_mtl_material_with_neither_kd_nor_a_map_gives_the_points_no_colour(tmp_path):
    """Only `Ns`: Blender's importer puts its 0.8 under it (trimesh its 0.4; the MTL spec
    gives no default), which the points took as the author's colour (0.906, has_color)."""
    path = textured_cube(tmp_path)
    (tmp_path / "cube.mtl").write_text("newmtl skin\nNs 10\nillum 2\n")
    rgb, has_color = sampled(path)
    assert not has_color  # it was True, every point 0.906
    assert np.abs(rgb - NO_COLOR).max() < 1e-6


def test_of_two_mtl_materials_only_the_one_stating_kd_colours_its_points(tmp_path):
    """The cube's first three quads under `kd` (Kd GREEN), the rest under `bare` (no Kd): the
    object has colour, and the points of the bare faces are the no-colour grey."""
    path = textured_cube(tmp_path)
    lines = path.read_text().splitlines()
    first_face = next(i for i, line in enumerate(lines) if line.startswith("f "))
    lines[first_face - 1] = "usemtl kd"  # the `usemtl skin` line
    lines.insert(first_face + 3, "usemtl bare")
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "cube.mtl").write_text("newmtl kd\nKd 0.2 0.6 0.2\nnewmtl bare\nNs 10\n")
    rgb, has_color = sampled(path)
    assert has_color
    green = np.abs(rgb - [srgb(c) for c in GREEN]).max(axis=1) < 0.01
    grey = np.abs(rgb - NO_COLOR).max(axis=1) < 1e-6
    assert (green | grey).all() and green.sum() > 50 and grey.sum() > 50


def test_the_mtl_beside_the_obj_colours_it_as_in_blender_alone(tmp_path):
    """`mtllib Cube.MTL` names no file, `cube.mtl` is beside `cube.obj`: Blender's importer
    reads the latter on its own (checked: GREEN there), so the points take its Kd too."""
    path = textured_cube(tmp_path)
    path.write_text(path.read_text().replace("mtllib cube.mtl", "mtllib Cube.MTL"))
    (tmp_path / "cube.mtl").write_text("newmtl skin\nKd 0.2 0.6 0.2\n")
    rgb, has_color = sampled(path)
    assert has_color  # it was False: no library read, the material Blender's invention
    assert np.abs(rgb - [srgb(c) for c in GREEN]).max() < 0.01


@pytest.mark.parametrize("name", ["maps\\skin.png", "C:\\Users\\me\\skin.png"])
def test_a_texture_named_as_windows_writes_it_colours_the_points(tmp_path, name):
    """Blender alone loads `maps\\skin.png` as maps/skin.png and a Windows absolute path's
    skin.png beside the MTL (checked, Blender 5.0 on Linux): the points took no colour."""
    path = textured_cube(tmp_path)
    (tmp_path / "cube.mtl").write_text(f"newmtl skin\nmap_Kd {name}\n")
    texture = tmp_path / ("maps/skin.png" if name.startswith("maps") else "skin.png")
    texture.parent.mkdir(exist_ok=True)
    Image.new("RGB", (4, 4), RED).save(texture)
    rgb, has_color = sampled(path)
    assert has_color
    assert np.abs(rgb - np.array(RED) / 255).max() < 0.01


def gltf_with_a_missing_image(folder: Path) -> Path:
    """Blender's textured cube GLB split into a .gltf + .bin whose image URI names no file."""
    glb = blender_file("textured", folder / "textured.glb").read_bytes()
    (json_length,) = struct.unpack_from("<I", glb, 12)
    document = json.loads(glb[20 : 20 + json_length])
    binary = glb[20 + json_length + 8 :]
    (folder / "cube.bin").write_bytes(binary)
    document["buffers"] = [{"uri": "cube.bin", "byteLength": len(binary)}]
    document["images"] = [{"uri": "checker.png"}]  # the texture's file, not there
    (folder / "cube.gltf").write_text(json.dumps(document))
    return folder / "cube.gltf"


def gltf_with_a_factor(folder: Path) -> Path:
    """`gltf_with_a_missing_image` with the baseColorFactor GREEN (Blender wrote none)."""
    path = gltf_with_a_missing_image(folder)
    document = json.loads(path.read_text())
    (material,) = document["materials"]
    assert "baseColorFactor" not in material["pbrMetallicRoughness"]
    material["pbrMetallicRoughness"]["baseColorFactor"] = [*GREEN, 1.0]  # linear, as glTF's
    path.write_text(json.dumps(document))
    return path


def test_a_gltf_whose_image_is_missing_has_uncoloured_points_and_a_grey_view(tmp_path):
    path = gltf_with_a_missing_image(tmp_path)
    rgb, has_color = sampled(path)
    assert not has_color  # it was True, every point 0.906
    assert np.abs(rgb - NO_COLOR).max() < 1e-6
    config = RenderConfig(views=1, resolution=64, background="transparent")
    views, _ = render_views(path, "y", config, flat=True)
    (image,) = views.values()
    drawn = image[image[:, :, 3] == 255][:, :3].astype(float)
    assert len(drawn) > 100
    assert np.median(drawn.max(axis=1) - drawn.min(axis=1)) < 10, drawn.mean(axis=0)  # was magenta


# An author's colour under a missing texture: MTL multiplies map_Kd by Kd, glTF its
# baseColorTexture by baseColorFactor; with the texture gone the stated value is the colour.


def view_colour(path: Path) -> np.ndarray:
    """The median 0–255 colour of the object's drawn pixels in one flat view."""
    config = RenderConfig(views=1, resolution=64, background="transparent")
    views, _ = render_views(path, "y", config, flat=True)
    (image,) = views.values()
    drawn = image[image[:, :, 3] == 255][:, :3].astype(float)
    assert len(drawn) > 100
    return np.median(drawn, axis=0)


@pytest.mark.parametrize("kd", [GREEN, (0.8, 0.8, 0.8)])  # the second: Blender's default
def test_a_missing_texture_leaves_the_points_and_view_the_mtls_kd(tmp_path, kd):
    """Kd stated, even at the value Blender's importer puts there without one: the MTL text
    tells the author's 0.8 from the importer's."""
    path = textured_cube(tmp_path)
    mtl = "newmtl skin\nKd {} {} {}\nmap_Kd skin.png\n".format(*kd)
    (tmp_path / "cube.mtl").write_text(mtl)
    rgb, has_color = sampled(path)
    expected = np.array([srgb(c) for c in kd])
    assert has_color  # it was False: Kd counted for nothing once the texture was gone
    assert np.abs(rgb - expected).max() < 0.01
    assert np.abs(view_colour(path) - expected * 255).max() < 3


def test_a_missing_gltf_image_leaves_the_points_and_view_the_base_color_factor(tmp_path):
    path = gltf_with_a_factor(tmp_path)
    rgb, has_color = sampled(path)
    expected = np.array([srgb(c) for c in GREEN])
    assert has_color  # it was False
    assert np.abs(rgb - expected).max() < 0.01
    assert np.abs(view_colour(path) - expected * 255).max() < 3  # it was the importer's grey


def obj_with_kd(folder: Path) -> Path:
    path = textured_cube(folder)
    (folder / "cube.mtl").write_text("newmtl skin\nKd 0.2 0.6 0.2\nmap_Kd skin.png\n")
    return path


@pytest.mark.parametrize(
    "make, green",
    [(obj_with_kd, True), (gltf_with_a_factor, True), (gltf_with_a_missing_image, False)],
)
def test_a_cycles_view_of_a_missing_texture_shows_the_stated_colour_not_magenta(
    tmp_path, make, green
):
    """Cycles shades, so the hue is checked: green where the file states GREEN, else grey."""
    config = RenderConfig(
        views=1, resolution=32, background="transparent", engine="cycles", samples=2
    )
    views, _ = render_views(make(tmp_path), "y", config)
    (image,) = views.values()
    drawn = image[image[:, :, 3] == 255][:, :3].astype(float)
    assert len(drawn) > 50
    red, green_channel, blue = np.median(drawn, axis=0)  # it was magenta: (240, 0, 240)
    assert abs(red - blue) < 10
    if green:
        assert green_channel - red > 40, (red, green_channel, blue)
    else:
        assert abs(green_channel - red) < 10, (red, green_channel, blue)
