"""A texture that inflates past what a texture may be (a real PNG of 20,000 × 20,000 grey
pixels, 390 KB on disk) is not decoded by Blender: the object is sampled as without it, in the
colour its MTL states, instead of the worker growing to its memory limit (1.4 GB in 9 s, then
a "memory" failure naming no texture; with the default limit, 3/4 of the machine)."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import cg3d.render.supervisor
from cg3d.params import SampleConfig
from cg3d.pipeline.sample import PointsReader
from tests.pipeline.sources.test_texture_bombs import glb_with_image
from tests.render.test_missing_textures import srgb, textured_cube

pytestmark = pytest.mark.blender


def png_bomb(path: Path, side: int) -> Path:
    """A valid grey PNG of `side` × `side` black pixels (zlib shrinks them 1,000-fold)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    packer = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # a filter byte, then the row
    pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


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
