"""A texture whose header declares more pixels than any texture decodes to in memory (a few KB
of PNG can declare 50,000 × 50,000: 10 GB as Blender decodes it, 40 GB more as the points'
sampler reads it) is never given to Blender: the object is read as without it (the colour the
file states under it), and the manifest's `missing` column says which texture and why."""

import json
import struct
from pathlib import Path

from cg3d.formats.images import MAX_TEXTURE_PIXELS
from cg3d.formats.manifest import manifest_rows
from cg3d.geometry.meshio import blender_input
from cg3d.params import MeshesConfig
from cg3d.pipeline.sources import build_manifest
from tests.pipeline.texturefiles import (
    SQUARE,
    glb_with_image,
    gltf_naming_image,
    png_declaring,
    write,
)

REASON = "not decoded"


def test_a_texture_declaring_too_many_pixels_is_listed_with_its_size(tmp_path):
    root = tmp_path / "src"
    write(root / "a" / "bomb.obj", "mtllib bomb.mtl\nusemtl m\n" + SQUARE)
    write(root / "a" / "bomb.mtl", "newmtl m\nKd 0.2 0.6 0.2\nmap_Kd skin.png\n")
    png_declaring(root / "a" / "skin.png", 50_000, 50_000)
    # PIL refuses a PNG whose zTXt inflates past 1 MB: its size is read from the IHDR
    gltf_naming_image(root / "b" / "bomb.gltf", "tex/big.png")
    png_declaring(root / "b" / "tex" / "big.png", 60_000, 40_000, text=b"A" * (2 << 20))
    write(root / "c" / "fine.obj", "mtllib fine.mtl\nusemtl m\n" + SQUARE)
    write(root / "c" / "fine.mtl", "newmtl m\nmap_Kd skin.png\n")
    png_declaring(root / "c" / "skin.png", 16_384, 16_384)  # at the limit
    out = tmp_path / "meshes"
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = {Path(row["path"]).name: (row["status"], row["missing"]) for row in manifest_rows(out)}
    assert rows == {
        "bomb.obj": ("ok", [f"skin.png (50,000 × 50,000 pixels, {too_many()})"]),
        "bomb.gltf": ("ok", [f"tex/big.png (60,000 × 40,000 pixels, {too_many()})"]),
        "fine.obj": ("ok", []),
    }


def too_many() -> str:
    return f"more than the {MAX_TEXTURE_PIXELS:,} a texture may have: {REASON}"


def test_blender_is_not_given_a_texture_declaring_too_many_pixels(tmp_path):
    """The copies Blender imports name no such texture (it decoded it whole: a 250 KB PNG of
    16,000 × 16,000 took a worker past 1.3 GB), as for a missing one."""
    root = tmp_path / "src"
    obj = write(root / "bomb.obj", "mtllib bomb.mtl\nusemtl m\n" + SQUARE)
    write(root / "bomb.mtl", "newmtl m\nKd 0.2 0.6 0.2\nmap_Kd skin.png\nmap_Ks fine.png\n")
    png_declaring(root / "skin.png", 50_000, 50_000)
    png_declaring(root / "fine.png", 4, 4)
    gltf = gltf_naming_image(root / "bomb.gltf", "skin.png")

    copy = blender_input(obj, root, "", tmp_path / "obj")
    (mtl,) = copy.parent.glob("*.mtl")
    text = mtl.read_text()
    assert "skin.png" not in text and "Kd 0.2 0.6 0.2" in text
    assert str(root / "fine.png") in text  # a texture within the limit is still given

    copy = blender_input(gltf, root, "", tmp_path / "gltf")
    (image,) = json.loads(copy.read_text())["images"]
    assert "skin.png" not in image["uri"] and not Path(image["uri"]).exists()


def test_an_embedded_texture_declaring_too_many_pixels_is_listed_and_not_given(tmp_path):
    root = tmp_path / "src"
    png_declaring(tmp_path / "bomb.png", 50_000, 50_000)
    png_declaring(tmp_path / "fine.png", 64, 64)
    bomb = (tmp_path / "bomb.png").read_bytes()
    glb_with_image(root / "a" / "bomb.glb", bomb)
    glb_with_image(root / "b" / "inline.gltf", bomb, inline=True)
    glb_with_image(root / "c" / "fine.glb", (tmp_path / "fine.png").read_bytes())
    out = tmp_path / "meshes"
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = {Path(row["path"]).name: (row["status"], row["missing"]) for row in manifest_rows(out)}
    listed = [f"image 0 (50,000 × 50,000 pixels, {too_many()})"]
    assert rows == {
        "bomb.glb": ("ok", listed),
        "inline.gltf": ("ok", listed),
        "fine.glb": ("ok", []),
    }
    for name in ("a/bomb.glb", "b/inline.gltf", "c/fine.glb"):
        copy = blender_input(root / name, root, "", tmp_path / "copy" / name)
        text = copy.read_bytes()
        document = json.loads(
            text[20 : 20 + struct.unpack_from("<I", text, 12)[0]] if text[:4] == b"glTF" else text
        )
        (image,) = document["images"]
        assert ("bufferView" in image or "base64" in image.get("uri", "")) == (name == "c/fine.glb")


def test_a_texture_in_a_bufferview_of_a_data_uri_or_bin_file_is_held_to_the_limit(tmp_path):
    """A .gltf whose image is a bufferView of an embedded (data: URI) buffer, as older
    exporters write, or of its .bin file: only a GLB's BIN chunk was read, and a 390 KB PNG
    bomb in either reached Blender."""
    root = tmp_path / "src"
    bomb = png_declaring(tmp_path / "bomb.png", 50_000, 50_000).read_bytes()
    fine = png_declaring(tmp_path / "fine.png", 64, 64).read_bytes()
    glb_with_image(root / "a" / "data.gltf", bomb, stored="data")
    glb_with_image(root / "b" / "bin.gltf", bomb, stored="file")
    glb_with_image(root / "c" / "fine.gltf", fine, stored="data")  # .gltf alike: duplicates
    out = tmp_path / "meshes"
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = {Path(row["path"]).name: (row["status"], row["missing"]) for row in manifest_rows(out)}
    listed = [f"image 0 (50,000 × 50,000 pixels, {too_many()})"]
    assert rows == {
        "data.gltf": ("ok", listed),
        "bin.gltf": ("ok", listed),
        "fine.gltf": ("ok", []),
    }
    for name in ("a/data.gltf", "b/bin.gltf", "c/fine.gltf"):
        copy = blender_input(root / name, root, "", tmp_path / "copy" / name)
        (image,) = json.loads(copy.read_text())["images"]
        assert ("bufferView" in image) == (name == "c/fine.gltf")
