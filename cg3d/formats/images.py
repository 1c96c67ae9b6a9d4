"""The one door through which we open an image (a query, a view in a shard, a render, an
upload): its size is checked from the header before any pixel is decoded, and a bad image is
one `ImageError` line naming it, never PIL's DecompressionBombError traceback."""

import io
import struct
from pathlib import Path
from typing import BinaryIO

from PIL import Image

# 8192 × 8192: twice the largest render (`params.MAX_RESOLUTION`) on a side, far above any
# photo a query needs (CLIP sees 224 pixels). A 190 KB PNG can declare 40,000 × 40,000
# (1.6 G pixels, 6 GB decoded): refused from its header.
MAX_IMAGE_PIXELS = 8192 * 8192
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# PIL's own bomb check is replaced by this module's, which reads the same header but says the
# size in one line; every image we decode comes through `open_image`, and an image a library
# opens for us (gradio's upload, header only) is checked here after.
Image.MAX_IMAGE_PIXELS = None


# A mesh's texture is decoded whole by Blender (4 bytes a pixel) and read by the points' sampler
# as float32 (16 more): 16384 on a side, the largest texture a GPU draws, takes 5.4 GB. Past it a
# texture is not decoded at all: a 390 KB PNG of 20,000 × 20,000 grew a Blender worker to its
# 2 GiB limit (a "memory" failure naming no texture), and one of 50,000² compresses to 2.4 MB.
MAX_TEXTURE_PIXELS = 16384 * 16384
# The formats whose header PIL reads without decoding, and only those: PIL's other plugins
# (TGA has no signature) could take any bytes for an image of some size.
HEADER_FORMATS = ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"]


def declared_size(source: Path | BinaryIO) -> tuple[int, int] | None:
    """(width, height) the header of an image file declares, read without decoding a pixel;
    None when it is none of HEADER_FORMATS or its header does not parse (PIL refuses a PNG
    whose text or ICC chunk inflates past 1 MB: its size is then read from its IHDR)."""
    try:
        with Image.open(source, formats=HEADER_FORMATS) as image:
            return image.size
    except Exception:  # noqa: BLE001 - any header PIL cannot read: the size is unknown
        pass
    if isinstance(source, Path | str):
        try:
            with open(source, "rb") as handle:
                head = handle.read(24)
        except OSError:  # Blender's own open of it meets the same fault: it is left to it
            return None
    else:
        source.seek(0)
        head = source.read(24)
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    return None


def texture_refusal(source: Path | BinaryIO) -> str:
    """Why a texture is not decoded (its header declares more than MAX_TEXTURE_PIXELS), or ""."""
    size = declared_size(source)
    if size is None or size[0] * size[1] <= MAX_TEXTURE_PIXELS:
        return ""
    return (
        f"{size[0]:,} × {size[1]:,} pixels, more than the {MAX_TEXTURE_PIXELS:,} a texture may "
        "have: not decoded"
    )


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
