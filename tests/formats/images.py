"""Image files made by the tests: a PNG whose header declares any size."""

import struct
import zlib


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` × `height` RGB pixels (its data is one short row)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1 + 3 * min(width, 64)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tga_declaring(width: int, height: int) -> bytes:
    """A run-length TGA (24-bit, top-left origin) declaring `width` × `height`: one run of
    128 grey pixels, repeated for at most 64 runs (Blender reads it; PIL's header parse too)."""
    header = struct.pack("<BBBHHBHHHHBB", 0, 0, 10, 0, 0, 0, 0, 0, width, height, 24, 0x20)
    return header + b"\xff\x80\x80\x80" * min(width * height // 128, 64)


def hdr_declaring(width: int, height: int) -> bytes:
    """A Radiance HDR header declaring `width` × `height` (its resolution line), no pixels."""
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\nEXPOSURE=1.0\n\n-Y %d +X %d\n" % (height, width)


def exr_declaring(width: int, height: int) -> bytes:
    """An OpenEXR header as Blender 5 writes one (a string attribute, one half channel, then the
    dataWindow) declaring `width` × `height`, no pixels."""

    def attribute(name: bytes, kind: bytes, value: bytes) -> bytes:
        return name + b"\0" + kind + b"\0" + struct.pack("<i", len(value)) + value

    channel = b"R\0" + struct.pack("<iB3xii", 1, 0, 1, 1) + b"\0"
    return (
        b"\x76\x2f\x31\x01"
        + struct.pack("<i", 2)
        + attribute(b"Software", b"string", b"Blender 5.0.1")
        + attribute(b"channels", b"chlist", channel)
        + attribute(b"dataWindow", b"box2i", struct.pack("<4i", 0, 0, width - 1, height - 1))
        + b"\0"
    )
