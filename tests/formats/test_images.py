"""One rule for every image we open (issue 25 §2): a size limit read from the header before any
pixel is decoded, and one line naming the image. The oversized PNGs are written by hand (IHDR
declares the size; a tiny IDAT follows), so no test decodes gigapixels or relies on PIL to
make its input."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cg3d.errors import UsageError
from cg3d.formats.images import (
    MAX_IMAGE_PIXELS,
    MAX_TEXTURE_PIXELS,
    ImageError,
    declared_size,
    open_image,
    texture_refusal,
)
from cg3d.formats.shards import decode_member
from tests.formats.images import exr_declaring, hdr_declaring, png_declaring, tga_declaring

OVERSIZED = [(40_000, 40_000), (MAX_IMAGE_PIXELS + 1, 1), (8193, 8192), (1, 70_000_000)]


@pytest.mark.parametrize("size", OVERSIZED)
def test_an_oversized_image_is_one_line_from_a_file_or_bytes(tmp_path, size):
    data = png_declaring(*size)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    for source, name in ((path, str(path)), (data, "image")):
        with pytest.raises(ImageError) as caught:
            open_image(source)
        message = str(caught.value)
        assert message.startswith(name) and "limit" in message and "\n" not in message


def test_an_image_at_the_limit_and_a_small_one_decode():
    buffer = io.BytesIO()
    Image.new("RGB", (5, 3), (10, 20, 30)).save(buffer, format="PNG")
    image = open_image(buffer.getvalue())
    assert image.size == (5, 3) and image.getpixel((4, 2)) == (10, 20, 30)


@pytest.mark.parametrize(
    "data", [b"", b"not an image", png_declaring(4, 4)[:40], b"\x89PNG\r\n\x1a\n" + bytes(30)]
)
def test_a_broken_image_is_one_line(data):
    with pytest.raises(ImageError, match=r"^view: not a readable image \(\w+\)$"):
        open_image(data, "view")


def test_a_shard_view_that_is_too_large_is_a_named_member_error():
    from cg3d.formats.shards import decode_image
    from cg3d.formats.tar import FormatError

    with pytest.raises(FormatError, match="view_00.png does not decode.*limit"):
        decode_member({"view_00.png": png_declaring(40_000, 40_000)}, "view_00.png", decode_image)


def test_the_api_reads_every_image_input_under_the_rule(tmp_path):
    from cg3d.app.api import read_image

    path = tmp_path / "big.png"
    path.write_bytes(png_declaring(40_000, 40_000))
    with pytest.raises(UsageError, match="big.png: 40000 × 40000 pixels is larger than the limit"):
        read_image(path)
    with pytest.raises(UsageError, match="larger than the limit"):
        read_image(np.zeros((MAX_IMAGE_PIXELS // 2 + 1, 2), np.uint8)[:, :, None].squeeze(2))
    assert read_image(np.zeros((4, 5, 3), np.uint8)).size == (5, 4)


def test_a_texture_whose_bytes_cannot_be_read_has_no_declared_size():
    """Left to Blender, whose own read meets the same fault (it was an OSError out of the
    meshes stage's listing of the object's references)."""
    assert declared_size(Path("/proc/self/mem")) is None  # opens, but reading offset 0 is EIO


DECLARING = {"tga": tga_declaring, "hdr": hdr_declaring, "exr": exr_declaring}


@pytest.mark.parametrize("kind", sorted(DECLARING))
def test_a_texture_in_a_format_blender_reads_beside_pil_s_is_refused_by_its_declared_size(kind):
    """TGA (no signature: PIL's header read was not tried), Radiance HDR and OpenEXR (which PIL
    does not read) passed as of no known size: an 18-byte TGA declaring 60,000² had Blender ask
    for 14 GB, a 12 MB RLE one of 20,000² grew it to 3 GB, a 25 MB HDR of 20,000² asked 6.4 GB."""
    make = DECLARING[kind]
    assert declared_size(io.BytesIO(make(60_000, 20_000))) == (60_000, 20_000)
    assert "60,000 × 20,000 pixels" in texture_refusal(io.BytesIO(make(60_000, 20_000)))
    assert texture_refusal(io.BytesIO(make(16_384, 16_384))) == ""  # at the limit
    assert declared_size(io.BytesIO(make(300, 7))) == (300, 7)


def test_a_wide_texture_is_held_to_its_pixel_count_not_a_side():
    """16,385 × 1 decodes to 64 KB: only the memory a texture takes is refused."""
    assert texture_refusal(io.BytesIO(png_declaring(16_385, 1))) == ""
    assert "1 × 268,435,457 pixels" in texture_refusal(
        io.BytesIO(png_declaring(1, MAX_TEXTURE_PIXELS + 1))
    )
