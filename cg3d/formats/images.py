"""The one door through which we open an image (a query, a view in a shard, a render, an
upload): its size is checked from the header before any pixel is decoded, and a bad image is
one `ImageError` line naming it, never PIL's DecompressionBombError traceback."""

import functools
import io
import os
import re
import struct
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from cg3d.files import file_version

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
# The formats whose header PIL reads without decoding, signature first: those Blender decodes
# (IRIS/SGI, DDS, PSD and JPEG 2000 too) and GIF. TGA, which has no signature, is tried last,
# only once every format with one has failed: PIL's plugin checks its header's fields, as
# Blender's `imb_is_a_tga` does, so a file it takes for a TGA is one Blender decodes as a TGA
# (an 18-byte header declaring 60,000² had Blender ask for 14 GB; a 12 MB RLE TGA of 20,000²
# grew it to 3 GB).
HEADER_FORMATS = ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "SGI", "DDS", "PSD", "JPEG2000"]
# How much of a file the hand-read headers (OpenEXR, Radiance HDR) may take
HEAD_BYTES = 1 << 16
EXR_MAGIC = b"\x76\x2f\x31\x01"
CINEON_MAGIC = (b"\x80\x2a\x5f\xd7", b"\xd7\x5f\x2a\x80")
# The first bytes of each format Blender 5 decodes as a texture (`bpy.path.extensions_image`:
# PNG, JPEG, BMP, TIFF and .tx, SGI, DDS, PSD/PSB, JPEG 2000 file and codestream, OpenEXR,
# Radiance HDR, DPX, Cineon; WebP, a RIFF, apart). TGA has none: a file named .tga, or one
# PIL's TGA plugin takes, is left to Blender.
BLENDER_SIGNATURES = (
    PNG_SIGNATURE,
    b"\xff\xd8\xff",
    b"BM",
    b"II*\0",
    b"MM\0*",
    b"II+\0",
    b"MM\0+",
    b"\x01\xda",
    b"DDS ",
    b"8BPS",
    b"\0\0\0\x0cjP  \r\n\x87\n",
    b"\xff\x4f\xff\x51",
    EXR_MAGIC,
    b"#?",
    b"SDPX",
    b"XPDS",
    *CINEON_MAGIC,
)
# A KTX2 image is Blender's to drop, and said so by `meshio.basisu_only_images` when no
# PNG/JPEG fallback stands beside it: not a texture in an unknown format.
KTX2_SIGNATURE = b"\xabKTX 20\xbb\r\n\x1a\n"
# Blender 5 decodes no animated WebP ("Failed to decode image"), yet keeps the image, all
# pixels (0, 0, 0, 0): the object drew black, counted as colour. Its VP8X flags say so.
ANIMATED_WEBP = "an animated WebP, which Blender decodes as black: not decoded"
UNREAD_FORMAT = "in no image format Blender decodes: not decoded"
# A Radiance HDR's resolution line, after its header: "-Y 20000 +X 20000" (either order)
HDR_RESOLUTION = re.compile(rb"\n([-+])([XY]) +(\d+) +([-+])([XY]) +(\d+)[ \t]*\r?\n")


def declared_size(source: Path | BinaryIO) -> tuple[int, int] | None:
    """(width, height) the header of an image file declares, read without decoding a pixel;
    None when it is none of the formats read here or its header does not parse. Read by PIL
    (HEADER_FORMATS, then TGA) or by hand: a PNG PIL refuses for its text or ICC chunk
    (inflating past 1 MB) from its IHDR, OpenEXR's dataWindow and Radiance HDR's resolution
    line, which Blender decodes as float (16 bytes a pixel): a 25 MB RLE HDR of 20,000² had it
    ask for 6.4 GB."""
    for formats in (HEADER_FORMATS, ["TGA"]):
        try:
            with Image.open(source, formats=formats) as image:
                return image.size
        except Exception:  # noqa: BLE001 - any header PIL cannot read: tried by hand below
            pass
    head = _head(source, HEAD_BYTES)
    if head is None:  # Blender's own open of it meets the same fault: it is left to it
        return None
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head[:4] == EXR_MAGIC:
        return _exr_size(head)
    if head[:4] == b"8BPS" and len(head) >= 22:  # PSD, or PSB (version 2: PIL reads neither)
        height, width = struct.unpack_from(">II", head, 14)
        return width, height
    if head[:4] in (b"SDPX", b"XPDS") and len(head) >= 780:  # DPX: image information at 768
        return struct.unpack_from(">II" if head[:1] == b"S" else "<II", head, 772)
    if head[:4] in CINEON_MAGIC and len(head) >= 208:  # Cineon: its first channel's size
        return struct.unpack_from(">II" if head[:1] == b"\x80" else "<II", head, 200)
    if head[:2] == b"#?" and (found := HDR_RESOLUTION.search(head, 0, HEAD_BYTES)):
        sizes = {found.group(2): int(found.group(3)), found.group(5): int(found.group(6))}
        return (sizes[b"X"], sizes[b"Y"]) if len(sizes) == 2 else None
    return None


def _head(source: Path | BinaryIO, size: int) -> bytes | None:
    """The first `size` bytes of a file or stream; None for a file whose read fails."""
    if isinstance(source, Path | str):
        try:
            with open(source, "rb") as handle:
                return handle.read(size)
        except OSError:
            return None
    source.seek(0)
    return source.read(size)


def _exr_size(head: bytes) -> tuple[int, int] | None:
    """The size of an OpenEXR file's (first part's) dataWindow, which its reader allocates, from
    the attributes after its magic and version: name, type (NUL-ended), byte count, value."""
    position = 8
    while position < len(head) and head[position] != 0:
        name_end = head.find(b"\0", position)
        type_end = head.find(b"\0", name_end + 1)
        if name_end < 0 or type_end < 0 or type_end + 5 > len(head):
            return None
        (count,) = struct.unpack_from("<i", head, type_end + 1)
        value = type_end + 5
        if head[position:name_end] == b"dataWindow" and count == 16 and value + 16 <= len(head):
            x_min, y_min, x_max, y_max = struct.unpack_from("<4i", head, value)
            return max(x_max - x_min + 1, 0), max(y_max - y_min + 1, 0)
        if count < 0:
            return None
        position = value + count
    return None


def texture_refusal(source: Path | BinaryIO) -> str:
    """Why a texture is not decoded, or "": its header declares more than MAX_TEXTURE_PIXELS,
    it is an animated WebP (ANIMATED_WEBP), or (a file of its own, not bytes a glTF holds) it
    is in no format Blender decodes (a GIF, garbage under a .png name), which Blender dropped
    without a word, or a PNG or JPEG cut short (`truncation`)."""
    size = declared_size(source)
    if size is not None and size[0] * size[1] > MAX_TEXTURE_PIXELS:
        return (
            f"{size[0]:,} × {size[1]:,} pixels, more than the {MAX_TEXTURE_PIXELS:,} a texture "
            "may have: not decoded"
        )
    head = _head(source, 21) or b""
    if head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and head[20:21] and head[20] & 0x02:
        return ANIMATED_WEBP
    if isinstance(source, Path | str):
        if not _blender_format(Path(source), size is not None):
            return UNREAD_FORMAT
        if cut := truncation(Path(source)):
            return f"{cut}: not decoded"
    return ""


# A PNG or JPEG cut short (an interrupted download) keeps a valid header: Blender 5 dropped
# such a PNG ("hit end of file in png reader") and drew a JPEG's missing part grey, both
# without a word. Told by its structure, no pixel decoded: a PNG's chunks are walked by their
# lengths to IEND (a few reads), a JPEG's segments to its first scan, after which its
# end-of-image marker is looked for (at the file's end, else anywhere after: a phone's motion
# photo carries a video after it).
MAX_SEGMENTS = 1 << 16  # chunks or segments walked at most; past them it is the decoder's
JPEG_EOI = b"\xff\xd9"
JPEG_BARE_MARKERS = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI: no length follows


def truncation(path: Path) -> str:
    """Why the PNG or JPEG file at `path` is cut short, or "" (other formats, a whole file, one
    whose structure is too odd to judge: left to the decoder). Judged once per `file_version`
    in a process: a texture 10,000 objects share was walked 10,000 times (a PNG of 8 KiB
    IDAT chunks is a read per chunk, a JPEG not ending in its marker is read whole). A read
    that fails is not remembered: the next object judges the file again."""
    try:
        return _truncation_of_version(str(path), file_version(path))
    except OSError:
        return ""  # Blender's own open meets the same fault


@functools.lru_cache(maxsize=1 << 14)
def _truncation_of_version(path: str, version: tuple[int, ...]) -> str:
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(4)
        handle.seek(0)
        if head == PNG_SIGNATURE[:4]:
            return _png_truncation(handle, size)
        if head[:3] == b"\xff\xd8\xff":
            return _jpeg_truncation(handle, size)
    return ""


def _png_truncation(handle: BinaryIO, size: int) -> str:
    position = len(PNG_SIGNATURE)
    for _ in range(MAX_SEGMENTS):
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:
            return f"truncated: the PNG ends at byte {size} before its IEND chunk"
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            return ""
        position += 12 + length  # length, type, data, CRC
        if position > size:
            # a type of 4 ASCII letters (the PNG's rule), else its bytes: the reason goes into
            # the manifest's `missing` and onto the terminal, one line without control bytes
            name = kind.decode("ascii") if kind.isalpha() else repr(kind)
            return f"truncated: the PNG's {name} chunk runs past its end (byte {size})"
    return ""


def _jpeg_truncation(handle: BinaryIO, size: int) -> str:
    position = 2
    for _ in range(MAX_SEGMENTS):  # the segments before the first scan, by their lengths (an
        handle.seek(position)  # Exif thumbnail's end-of-image marker is inside one)
        marker = handle.read(4)
        if len(marker) < 2:
            return f"truncated: the JPEG ends at byte {size} before its image data"
        if marker[0] != 0xFF:
            return ""  # not a segment where one should be: the decoder's to judge
        if marker[1] in (0xD9, 0xDA):  # the first scan (or an end with none)
            break
        if marker[1] in JPEG_BARE_MARKERS or marker[1] == 0xFF:
            position += 1 if marker[1] == 0xFF else 2  # a fill byte, or no length
            continue
        if len(marker) < 4:
            return f"truncated: the JPEG ends at byte {size} before its image data"
        position += 2 + struct.unpack(">H", marker[2:])[0]
    else:
        return ""
    handle.seek(max(size - 2, position))
    if handle.read(2) == JPEG_EOI:
        return ""
    handle.seek(position)
    last = b""
    while block := handle.read(1 << 20):
        if JPEG_EOI in last[-1:] + block:
            return ""
        last = block
    return f"truncated: the JPEG ends at byte {size} with no end-of-image marker"


def _blender_format(path: Path, has_size: bool) -> bool:
    """Whether Blender may decode the file at `path` by its first bytes (BLENDER_SIGNATURES,
    WebP's RIFF, KTX2 left to the glTF checks), or as a TGA (its name, or a size PIL read from
    a header of no other format: GIF aside, which Blender does not read). True for a file
    that cannot be read: Blender's own open meets the same fault."""
    head = _head(path, 16)
    if head is None:
        return True
    if head.startswith(BLENDER_SIGNATURES + (KTX2_SIGNATURE,)):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if path.suffix.lower() == ".tga":
        return True
    return has_size and not head.startswith(b"GIF8")


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
