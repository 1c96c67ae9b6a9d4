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
from cg3d.formats.images import MAX_IMAGE_PIXELS, ImageError, declared_size, open_image
from cg3d.formats.shards import decode_member
from tests.formats.images import png_declaring

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
