"""Small glTF documents with their buffer inline (a `data:` URI), for the glTF checks' tests."""

import base64
import json
import struct
from pathlib import Path

FLOAT, USHORT, UINT = 5126, 5123, 5125
TRIANGLE = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # 3 × VEC3 float = 36 bytes


def gltf(accessors: list[dict], views: list[dict], data: bytes, byte_length: int | None = None):
    uri = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    return {
        "asset": {"version": "2.0"},
        "buffers": [{"byteLength": len(data) if byte_length is None else byte_length, "uri": uri}],
        "bufferViews": views,
        "accessors": accessors,
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
    }


def positions(count: int, **extra) -> dict:
    return {"componentType": FLOAT, "type": "VEC3", "count": count, **extra}


def write(tmp_path: Path, document: dict, name: str = "m.gltf") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


TRIANGLE_BYTES = struct.pack("<9f", *TRIANGLE)
VIEW = [{"buffer": 0, "byteLength": 36}]
