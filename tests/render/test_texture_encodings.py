"""Texture encodings of real Objaverse files, as Blender 5 reads them. EXT_texture_webp: the
WebP is read (a PNG fallback beside it is what Blender takes). KHR_texture_basisu: Blender
decodes no KTX2 image; a texture whose only image is one is read as a missing image (the colour
the file states under it, baseColorFactor; it was Blender's default grey, 0.906, as colour) and
the manifest lists it as missing, with why."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cg3d.formats.manifest import manifest_rows
from cg3d.params import MeshesConfig, SampleConfig
from cg3d.pipeline.sample import PointsReader
from cg3d.pipeline.sources import build_manifest
from tests.pipeline.texturefiles import SQUARE_FACTOR as FACTOR
from tests.pipeline.texturefiles import SQUARE_GEOMETRY, SQUARE_VIEWS, square_document, srgb

RED = (200, 30, 30)
KTX2 = b"\xabKTX 20\xbb\r\n\x1a\n" + bytes(200)  # a KTX2 file's signature, then its header


def textured_quad(path: Path, images: list[dict], texture: dict) -> Path:
    """A unit square with UVs, its material's base colour `texture` (of `images`) times FACTOR."""
    uri = "data:application/octet-stream;base64," + base64.b64encode(SQUARE_GEOMETRY).decode()
    buffer = {"uri": uri, "byteLength": len(SQUARE_GEOMETRY)}
    document = square_document(buffer, list(SQUARE_VIEWS), images, texture)
    document["extensionsUsed"] = ["EXT_texture_webp", "KHR_texture_basisu"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def encoded(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), RED).save(buffer, kind)
    return buffer.getvalue()


def ktx2_only(folder: Path, embedded: bool = False) -> Path:
    if embedded:
        image = {"uri": "data:image/ktx2;base64," + base64.b64encode(KTX2).decode()}
    else:
        (folder / "tex").mkdir(parents=True, exist_ok=True)
        (folder / "tex" / "base.ktx2").write_bytes(KTX2)
        image = {"uri": "tex/base.ktx2", "mimeType": "image/ktx2"}
    texture = {"extensions": {"KHR_texture_basisu": {"source": 0}}}
    return textured_quad(folder / ("inline.gltf" if embedded else "file.gltf"), [image], texture)


def colours(path: Path) -> np.ndarray:
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        points, has_color = read(path, "y", "quad", path.parent)
    assert has_color
    return points[:, 3:6]


@pytest.mark.blender
@pytest.mark.parametrize("embedded", [False, True], ids=["file", "data-uri"])
def test_a_ktx2_only_texture_leaves_the_stated_colour(tmp_path, embedded):
    rgb = colours(ktx2_only(tmp_path, embedded))
    assert np.abs(rgb - [srgb(c) for c in FACTOR]).max() < 0.01  # was 0.906 grey


@pytest.mark.blender
def test_a_ktx2_texture_with_a_png_fallback_is_read_from_the_png(tmp_path):
    (tmp_path / "base.ktx2").write_bytes(KTX2)
    (tmp_path / "base.png").write_bytes(encoded("PNG"))
    images = [{"uri": "base.ktx2", "mimeType": "image/ktx2"}, {"uri": "base.png"}]
    texture = {"source": 1, "extensions": {"KHR_texture_basisu": {"source": 0}}}
    rgb = colours(textured_quad(tmp_path / "m.gltf", images, texture))
    expected = [srgb((c / 255) ** 2.2 * f) for c, f in zip(RED, FACTOR, strict=True)]
    assert np.abs(rgb - expected).max() < 0.02


@pytest.mark.blender
def test_a_webp_texture_is_read(tmp_path):
    (tmp_path / "base.webp").write_bytes(encoded("WEBP"))
    texture = {"extensions": {"EXT_texture_webp": {"source": 0}}}
    rgb = colours(textured_quad(tmp_path / "m.gltf", [{"uri": "base.webp"}], texture))
    assert np.median(rgb[:, 0]) > 2 * np.median(rgb[:, 1])  # red, not the factor's green


def test_the_manifest_lists_a_ktx2_only_texture_as_missing_with_why(tmp_path):
    root = tmp_path / "src"
    ktx2_only(root / "a")
    ktx2_only(root / "b", embedded=True)
    out = tmp_path / "meshes"
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = {Path(row["path"]).name: (row["status"], row["missing"]) for row in manifest_rows(out)}
    why = "a KTX2 image (KHR_texture_basisu) with no PNG/JPEG fallback: Blender decodes none"
    assert rows == {
        "file.gltf": ("ok", [f"tex/base.ktx2 ({why})"]),
        "inline.gltf": ("ok", [f"image 0 ({why})"]),
    }
