"""A texture file in no format Blender decodes (a GIF, an icon, garbage under a .png name, a
4-byte stub) was dropped by Blender without a word: the object drew in its stated colour and
nothing said why. It is listed in the manifest's `missing` column, as a missing one is, and
Blender's copy names no such file. Formats Blender reads that PIL does not (OpenEXR, Radiance
HDR, DPX, a TGA PIL cannot parse) and KTX2 (said by the glTF checks) are not."""

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from cg3d.formats import images
from cg3d.formats.images import texture_refusal
from cg3d.geometry.meshio import blender_input, references
from tests.formats.images import exr_declaring, hdr_declaring
from tests.pipeline.texturefiles import SQUARE, write


def saved(format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format=format)
    return buffer.getvalue()


UNREAD = {
    "anim.gif": saved("GIF"),
    "icon.png": saved("ICO"),
    "text.png": b"not an image, but text under a .png name\n" * 4,
    "stub.jpg": b"\xff\xd8",
}
READ = {
    "fine.png": saved("PNG"),
    "fine.jpg": saved("JPEG"),
    "fine.tga": saved("TGA"),
    "odd.tga": b"\x00" * 40,  # no header PIL parses: its name says TGA, left to Blender
    "light.hdr": hdr_declaring(8, 8),
    "depth.exr": exr_declaring(8, 8),
    "scan.dpx": b"SDPX" + bytes(800),
    "base.ktx2": b"\xabKTX 20\xbb\r\n\x1a\n" + bytes(64),
}


def test_a_texture_in_no_format_blender_decodes_is_listed_and_not_given(tmp_path):
    root = tmp_path / "src"
    names = [*UNREAD, *READ]
    maps = "".join(f"map_Kd {name}\n" for name in names)
    obj = write(root / "chair.obj", "mtllib chair.mtl\nusemtl m\n" + SQUARE)
    write(root / "chair.mtl", "newmtl m\nKd 0.2 0.6 0.2\n" + maps)
    for name, data in {**UNREAD, **READ}.items():
        (root / name).write_bytes(data)
    found, missing = references(obj, root)
    assert missing == [
        f"{name} (in no image format Blender decodes: not decoded)" for name in UNREAD
    ]
    assert found == [root / "chair.mtl", *(root / name for name in READ)]
    text = blender_input(obj, root, "", tmp_path / "copy").parent.joinpath("material-0.mtl")
    given = text.read_text()
    assert not any(str(root / name) in given for name in UNREAD)
    assert all(str(root / name) in given for name in READ)


def test_bytes_a_gltf_holds_are_held_to_the_size_limit_only():
    """An image a GLB or data: URI holds is read from where the document places it: a place
    misread would drop a texture Blender reads, so no format is judged there."""
    assert texture_refusal(io.BytesIO(b"not an image")) == ""
    assert texture_refusal(Path("/nonexistent/image.png")) == ""  # Blender's open says why


def test_an_animated_webp_is_listed_and_not_given_a_still_one_and_an_apng_are_read(tmp_path):
    """Blender 5 decodes no animated WebP ("Failed to decode image") but keeps the image with
    every pixel (0, 0, 0, 0): the object drew black, counted as colour. An animated PNG is
    read as its first frame (checked with Blender 5.0.1)."""
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((200, 30, 30), (30, 30, 200))]
    for name in ("anim.webp", "anim.png"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100)
    (tmp_path / "still.webp").write_bytes(saved("WEBP"))
    listed = "an animated WebP, which Blender decodes as black: not decoded"
    assert texture_refusal(tmp_path / "anim.webp") == listed
    assert texture_refusal(io.BytesIO((tmp_path / "anim.webp").read_bytes())) == listed  # a GLB's
    assert texture_refusal(tmp_path / "still.webp") == ""
    assert texture_refusal(tmp_path / "anim.png") == ""


def test_a_texture_cut_short_is_listed_and_not_given(tmp_path):
    """A PNG or JPEG cut short (an interrupted download) keeps a valid header: Blender 5
    dropped the PNG ("hit end of file in png reader") and drew the JPEG's missing part grey,
    both without a word. A JPEG with bytes after its end (a phone's motion photo carries a
    video there, some writers pad with zeros) is whole."""
    root = tmp_path / "src"
    root.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    png, jpeg = io.BytesIO(), io.BytesIO()
    Image.fromarray(noise).save(png, format="PNG")
    Image.fromarray(noise).save(jpeg, format="JPEG", quality=90)
    png, jpeg = png.getvalue(), jpeg.getvalue()
    exif = b"Exif\0\0\xff\xd8\xff\xd9"  # a thumbnail's end-of-image marker, before the scan
    thumbnail = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(exif)) + exif + jpeg[2:]
    files = {
        "cut.png": png[: len(png) // 2],
        "cut.jpg": jpeg[: len(jpeg) // 2],
        "thumbnail.jpg": thumbnail[: len(jpeg) // 2],
        "whole.png": png,
        "whole.jpg": jpeg,
        "motion.jpg": jpeg + b"\0\0\0\x18ftypmp42" + bytes(5000),
        "padded.jpg": jpeg + bytes(64),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    obj = write(root / "chair.obj", "mtllib chair.mtl\nusemtl m\n" + SQUARE)
    write(
        root / "chair.mtl", "newmtl m\nKd 0.2 0.6 0.2\n" + "".join(f"map_Kd {n}\n" for n in files)
    )
    found, missing = references(obj, root)
    assert missing == [
        f"cut.png (truncated: the PNG's IDAT chunk runs past its end (byte {len(png) // 2}): "
        "not decoded)",
        *(
            f"{name} (truncated: the JPEG ends at byte {len(jpeg) // 2} with no end-of-image "
            "marker: not decoded)"
            for name in ("cut.jpg", "thumbnail.jpg")
        ),
    ]
    assert found == [root / "chair.mtl", *(root / name for name in list(files)[3:])]
    given = blender_input(obj, root, "", tmp_path / "copy").parent.joinpath("material-0.mtl")
    assert str(root / "cut.png") not in given.read_text()
    assert str(root / "whole.png") in given.read_text()


def test_a_cut_pngs_chunk_of_control_bytes_is_named_on_one_printable_line(tmp_path):
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, format="PNG")
    hostile = struct.pack(">I", (1 << 31) - 1) + b"\n\x1b[J"  # a length past any file
    (tmp_path / "cut.png").write_bytes(png.getvalue()[:33] + hostile + bytes(8))
    said = texture_refusal(tmp_path / "cut.png")
    assert said.startswith("truncated: the PNG's ") and said.isprintable()


def test_a_texture_many_objects_share_is_walked_once_until_it_changes(tmp_path, monkeypatch):
    # its chunks were walked again for each object naming it (a read per 8 KiB IDAT chunk)
    walks = []
    walk = images._png_truncation
    monkeypatch.setattr(images, "_png_truncation", lambda *a: walks.append(a) or walk(*a))
    png = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(png, format="PNG")
    texture = tmp_path / "wood.png"
    texture.write_bytes(png.getvalue()[:-20])  # a download under way
    write(tmp_path / "wood.mtl", "newmtl m\nmap_Kd wood.png\n")
    objects = [write(tmp_path / f"{n}.obj", "mtllib wood.mtl\n" + SQUARE) for n in range(5)]
    assert all(references(obj, tmp_path)[1][0].startswith("wood.png (truncated") for obj in objects)
    assert len(walks) == 1
    texture.write_bytes(png.getvalue())  # finished: judged again
    assert references(objects[0], tmp_path)[1] == [] and len(walks) == 2


def test_a_texture_whose_read_failed_is_judged_again_by_the_next_object(tmp_path, monkeypatch):
    # a read fault (EIO on a network disk) was remembered as "not cut" for the file version
    png = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(png, format="PNG")
    texture = tmp_path / "fault.png"
    texture.write_bytes(png.getvalue()[:-20])
    walk = images._png_truncation

    def fails_once(*args):
        monkeypatch.setattr(images, "_png_truncation", walk)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(images, "_png_truncation", fails_once)
    assert texture_refusal(texture) == ""  # left to Blender's own open
    assert texture_refusal(texture).startswith("truncated: the PNG's IDAT chunk")
