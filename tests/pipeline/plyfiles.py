"""PLY files made by the tests: faces whose counts agree with their rows, or do not."""

import struct
from pathlib import Path

VERTICES = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1)]


def write_ply(path: Path, faces: list[list[int]], form: str, flags: bool = False) -> Path:
    """A PLY of VERTICES and `faces`, each written as [count, *indices] exactly as given (so a
    count may lie); `flags` adds a uchar face property after the list."""
    header = [
        "ply",
        f"format {form} 1.0",
        f"element vertex {len(VERTICES)}",
        "property float x",
        "property float y",
        "property float z",
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        *(["property uchar flags"] if flags else []),
        "end_header",
    ]
    data = ("\n".join(header) + "\n").encode()
    if form == "ascii":
        rows = [" ".join(map(str, v)) for v in VERTICES]
        rows += [" ".join(map(str, face + ([7] if flags else []))) for face in faces]
        data += ("\n".join(rows) + "\n").encode()
    else:
        order = "<" if form == "binary_little_endian" else ">"
        data += b"".join(struct.pack(order + "3f", *v) for v in VERTICES)
        for count, *indices in faces:
            data += struct.pack(order + "B", count) + struct.pack(
                f"{order}{len(indices)}i", *indices
            )
            data += struct.pack("B", 7) if flags else b""
    path.write_bytes(data)
    return path


FORMS = ["ascii", "binary_little_endian", "binary_big_endian"]
# faces as written: [count, *indices]
TWO_READINGS = {
    "count 255, three indices": [[255, 0, 1, 2], [3, 0, 1, 3]],
    "count 255 last": [[3, 0, 1, 2], [255, 0, 1, 3]],
    "an edge (count 2)": [[3, 0, 1, 2], [2, 0, 1]],
    "a point (count 1)": [[3, 0, 1, 2], [1, 4]],
    "count 0": [[3, 0, 1, 2], [0]],
    "count 3, four indices": [[3, 0, 1, 2, 3], [3, 0, 1, 3]],
    "count 4, three indices": [[4, 0, 1, 2], [3, 0, 1, 3]],
}
