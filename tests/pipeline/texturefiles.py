"""Meshes with textures for the tests: OBJ/MTL and glTF/GLB files naming or holding images,
and PNGs that declare or inflate to more pixels than a texture may have."""

import base64
import json
import struct
import zlib
from pathlib import Path

# A unit square, two triangles: each file below differs by its first lines (no duplicates).
SQUARE = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3\nf 1 3 4\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def gltf_naming_image(path: Path, image: str) -> Path:
    """A .gltf of one triangle, its buffer embedded, naming the image file `image`."""
    data = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0) + struct.pack("<3H", 0, 1, 2)
    document = {
        "asset": {"version": "2.0"},
        "buffers": [
            {
                "uri": "data:application/octet-stream;base64," + base64.b64encode(data).decode(),
                "byteLength": len(data),
            }
        ],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": 36},
            {"buffer": 0, "byteOffset": 36, "byteLength": 6},
        ],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            },
            {"bufferView": 1, "componentType": 5123, "count": 3, "type": "SCALAR"},
        ],  # fmt: skip
        "images": [{"uri": image}],
        "textures": [{"source": 0}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1, "material": 0}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
    }
    return write(path, json.dumps(document))


def textured_cube(folder: Path) -> Path:
    """A unit cube with UVs, its one material's base colour a 4×4 PNG (written by the test
    when it wants the texture there) and no Kd line (Blender's exporter writes none then)."""
    corners = [(x, y, z) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
    quads = [(1, 3, 4, 2), (5, 6, 8, 7), (1, 2, 6, 5), (2, 4, 8, 6), (4, 3, 7, 8), (3, 1, 5, 7)]
    lines = ["mtllib cube.mtl", *(f"v {x} {y} {z}" for x, y, z in corners)]
    lines += ["vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1", "usemtl skin"]
    lines += ["f " + " ".join(f"{v}/{i + 1}" for i, v in enumerate(quad)) for quad in quads]
    (folder / "cube.obj").write_text("\n".join(lines) + "\n")
    (folder / "cube.mtl").write_text("newmtl skin\nmap_Kd skin.png\n")
    return folder / "cube.obj"


def srgb(linear: float) -> float:
    """IEC 61966-2-1, written out here for the expected colour."""
    return 12.92 * linear if linear <= 0.0031308 else 1.055 * linear ** (1 / 2.4) - 0.055


def png_declaring(path: Path, width: int, height: int, text: bytes = b"") -> Path:
    """A PNG whose header declares `width` × `height` RGB pixels, its pixel data a stub (the
    size of the file is a few hundred bytes); `text`: a zTXt chunk's inflated contents."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    ztxt = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(text, 9)) if text else b""
    body = chunk(b"IHDR", header) + ztxt + chunk(b"IDAT", zlib.compress(b"\0" * 100))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b""))
    return path


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


# A unit square with UVs: positions, texture coordinates and indices (92 bytes: an image after
# them starts 4-aligned), and their buffer views
SQUARE_GEOMETRY = (
    struct.pack("<12f", 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0)
    + struct.pack("<8f", 0, 0, 1, 0, 1, 1, 0, 1)
    + struct.pack("<6H", 0, 1, 2, 0, 2, 3)
)
SQUARE_VIEWS = (
    {"buffer": 0, "byteOffset": 0, "byteLength": 48},
    {"buffer": 0, "byteOffset": 48, "byteLength": 32},
    {"buffer": 0, "byteOffset": 80, "byteLength": 12},
)
SQUARE_FACTOR = (0.2, 0.6, 0.2)  # linear, as glTF's baseColorFactor: green


def square_document(buffer: dict, views: list[dict], images: list[dict], texture: dict) -> dict:
    """The glTF document of the unit square (`SQUARE_GEOMETRY` in `buffer`, `views`), its one
    material's base colour `texture` (of `images`) times SQUARE_FACTOR."""
    return {
        "asset": {"version": "2.0"},
        "buffers": [buffer],
        "bufferViews": views,
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 4,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            },
            {"bufferView": 1, "componentType": 5126, "count": 4, "type": "VEC2"},
            {"bufferView": 2, "componentType": 5123, "count": 6, "type": "SCALAR"},
        ],  # fmt: skip
        "images": images,
        "textures": [texture],
        "materials": [
            {
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0},
                    "baseColorFactor": [*SQUARE_FACTOR, 1],
                }
            }
        ],
        "meshes": [
            {
                "primitives": [
                    {"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0}
                ]
            }
        ],  # fmt: skip
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
    }


def glb_with_image(path: Path, image: bytes, inline: bool = False, stored: str = "") -> Path:
    """A GLB of a unit square with UVs, its base colour the PNG `image` (times a green
    baseColorFactor) stored in its BIN chunk, as Objaverse's files store their textures; with
    `inline`, a .gltf holding the image as a data: URI instead; with `stored` "data" or "file",
    a .gltf whose image is still a bufferView, of a data: URI buffer or of `buffer.bin`."""

    geometry, views = SQUARE_GEOMETRY, list(SQUARE_VIEWS)
    if inline:
        uri = "data:image/png;base64," + base64.b64encode(image).decode()
        images, data = [{"uri": uri}], geometry
    else:
        views.append({"buffer": 0, "byteOffset": len(geometry), "byteLength": len(image)})
        images, data = [{"bufferView": 3, "mimeType": "image/png"}], geometry + image
    data += bytes(-len(data) % 4)
    buffer = {"byteLength": len(data)}
    if inline:
        buffer["uri"] = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    document = square_document(buffer, views, images, {"source": 0})
    path.parent.mkdir(parents=True, exist_ok=True)
    if stored == "data":
        uri = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
        document["buffers"][0]["uri"] = uri
    elif stored == "file":
        (path.parent / "buffer.bin").write_bytes(data)
        document["buffers"][0]["uri"] = "buffer.bin"
    text = json.dumps(document).encode()
    if inline or stored:
        path.write_bytes(text)
        return path
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    chunks += struct.pack("<II", len(data), 0x004E4942) + data
    path.write_bytes(b"glTF" + struct.pack("<II", 2, 12 + len(chunks)) + chunks)
    return path
