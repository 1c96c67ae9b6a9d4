"""The one door through which we open an image (a query, a view in a shard, a render, an
upload): its size is checked from the header before any pixel is decoded, and a bad image is
one `ImageError` line naming it, never PIL's DecompressionBombError traceback."""

import io
from pathlib import Path

from PIL import Image

# 8192 × 8192: twice the largest render (`params.MAX_RESOLUTION`) on a side, far above any
# photo a query needs (CLIP sees 224 pixels). A 190 KB PNG can declare 40,000 × 40,000
# (1.6 G pixels, 6 GB decoded): refused from its header.
MAX_IMAGE_PIXELS = 8192 * 8192


# PIL's own bomb check is replaced by this module's, which reads the same header but says the
# size in one line; every image we decode comes through `open_image`, and an image a library
# opens for us (gradio's upload, header only) is checked here after.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An image we will not decode: too large, or not a readable image; the message names it."""


def check_image_size(width: int, height: int, name: str) -> None:
    """ImageError unless `width` × `height` is within MAX_IMAGE_PIXELS."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{name}: {width} × {height} pixels is larger than the limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels"
        )


def open_image(source: Path | str | bytes, name: str | None = None) -> Image.Image:
    """The decoded image of a file or of encoded bytes (its first frame); ImageError naming
    `name` (default: the path, or "image") when it is too large or does not decode."""
    name = name or (str(source) if not isinstance(source, bytes) else "image")
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        image = Image.open(fp)
    except Exception as error:  # noqa: BLE001 - a decoder's any failure is a bad image
        raise ImageError(f"{name}: not a readable image ({type(error).__name__})") from None
    try:
        check_image_size(*image.size, name)
        image.load()
    except ImageError:
        image.close()
        raise
    except Exception as error:  # noqa: BLE001 - truncated data, bad chunks, ...
        image.close()
        raise ImageError(f"{name}: not a readable image ({type(error).__name__})") from None
    return image
