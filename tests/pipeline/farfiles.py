"""Meshes far from the origin for the tests: a 2 m sphere, and the UTM offset (metres: x 500 km,
y 4,000 km, where float32's step is 0.25 m)."""

from pathlib import Path

import numpy as np
import trimesh

UTM = np.array([500_000.0, 4_000_000.0, 300.0])
SPHERE = trimesh.creation.icosphere(subdivisions=2, radius=1.0)  # a 2 m object


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, kind: str) -> Path:
    dtype = {"float": "<f4", "double": "<f8"}[kind]
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\n"
        + "".join(f"property {kind} {axis}\n" for axis in "xyz")
        + f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    rows = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", 3)])
    rows["n"], rows["i"] = 3, faces
    path.write_bytes(header.encode() + np.asarray(vertices, dtype).tobytes() + rows.tobytes())
    return path


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    lines = [f"v {x!r} {y!r} {z!r}" for x, y, z in vertices]
    lines += ["vn 0 0 1"] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


def far_obj_after_continued_comments(path: Path) -> Path:
    """The far sphere, its faces from 1, after a comment and a vertex's comment that end in a
    backslash: Blender joins each next line into the comment (`v 0 0 0` and `v 0 -1e7 0` are
    no vertices of its), so its vertex 1 is the sphere's first."""
    rows = ["# exported \\\n", "v 0 0 0\n", "v 1 2 3 # first \\ \r\n", "v 0 -1e7 0\n"]
    rows += [f"v {x!r} {y!r} {z!r}\n" for x, y, z in SPHERE.vertices + UTM]
    rows += [f"f {a} {b} {c}\n" for a, b, c in SPHERE.faces + 2]  # after `v 1 2 3`
    path.write_bytes("".join(rows).encode())
    return path


def write_coloured_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, ascii: bool) -> Path:
    """A PLY of double x, y, z and uchar red, green, blue (as a photogrammetry scan's)."""
    form = "ascii" if ascii else "binary_little_endian"
    header = (
        f"ply\nformat {form} 1.0\nelement vertex {len(vertices)}\n"
        + "".join(f"property double {axis}\n" for axis in "xyz")
        + "".join(f"property uchar {colour}\n" for colour in ("red", "green", "blue"))
        + f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    colours = np.arange(len(vertices) * 3).reshape(-1, 3) % 256
    if ascii:
        rows = [
            f"{x!r} {y!r} {z!r} {r} {g} {b}"
            for (x, y, z), (r, g, b) in zip(vertices, colours, strict=True)
        ]
        rows += [f"3 {a} {b} {c}" for a, b, c in faces]
        path.write_text(header + "\n".join(rows) + "\n")
        return path
    points = np.empty(len(vertices), dtype=[("p", "<f8", 3), ("c", "u1", 3)])
    points["p"], points["c"] = vertices, colours
    rows = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", 3)])
    rows["n"], rows["i"] = 3, faces
    path.write_bytes(header.encode() + points.tobytes() + rows.tobytes())
    return path


def write_ascii_stl(path: Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """An ASCII STL of the triangles, its numbers as Python writes doubles (exact)."""
    rows = ["solid scan"]
    for triangle in vertices[faces]:
        rows += ["  facet normal 0 0 1", "    outer loop"]
        rows += [f"      vertex {x!r} {y!r} {z!r}" for x, y, z in triangle]
        rows += ["    endloop", "  endfacet"]
    path.write_text("\n".join(rows + ["endsolid scan"]) + "\n")
    return path
