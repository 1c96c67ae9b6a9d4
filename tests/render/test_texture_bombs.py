"""A texture that inflates past what a texture may be (a real PNG of 20,000 × 20,000 grey
pixels, 390 KB on disk) is not decoded by Blender: the object is sampled as without it, in the
colour its MTL states, instead of the worker growing to its memory limit (1.4 GB in 9 s, then
a "memory" failure naming no texture; with the default limit, 3/4 of the machine)."""

import numpy as np
import pytest

import cg3d.render.supervisor
from cg3d.params import SampleConfig
from cg3d.pipeline.sample import PointsReader
from tests.pipeline.texturefiles import glb_with_image, png_bomb, srgb, textured_cube

pytestmark = pytest.mark.blender


def test_a_texture_bomb_is_not_decoded_and_the_stated_colour_is_kept(tmp_path, monkeypatch):
    path = textured_cube(tmp_path)
    (tmp_path / "cube.mtl").write_text("newmtl skin\nKd 0.2 0.6 0.2\nmap_Kd skin.png\n")
    png_bomb(tmp_path / "skin.png", 20_000)
    # a limit this shared test machine survives: the old code met it decoding the texture
    monkeypatch.setattr(cg3d.render.supervisor, "worker_memory_bytes", lambda *_: 2 << 30)
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        points, has_color = read(path, "y", "cube", path.parent)
    assert has_color
    expected = [srgb(c) for c in (0.2, 0.6, 0.2)]
    assert np.abs(points[:, 3:6] - expected).max() < 0.01


def test_a_texture_bomb_inside_a_glb_is_not_decoded(tmp_path, monkeypatch):
    """As Objaverse's files hold their textures: in the GLB's BIN chunk."""
    bomb = png_bomb(tmp_path / "skin.png", 20_000).read_bytes()
    path = glb_with_image(tmp_path / "src" / "bomb.glb", bomb)
    monkeypatch.setattr(cg3d.render.supervisor, "worker_memory_bytes", lambda *_: 2 << 30)
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        points, has_color = read(path, "y", "bomb", path.parent)
    assert has_color
    expected = [srgb(c) for c in (0.2, 0.6, 0.2)]  # its baseColorFactor
    assert np.abs(points[:, 3:6] - expected).max() < 0.01
