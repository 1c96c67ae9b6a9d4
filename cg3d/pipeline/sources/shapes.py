"""Parametric mesh parts for the synthetic source: boxes, rounded boxes, cylinders, tori, basins.

Pure numpy. A part is (vertices (V, 3) float64, faces (F, 3) int64); `Parts` collects them and
concatenates once. Frame: +Y up, the object's front towards +Z, units metres, floor at y = 0.
"""

import numpy as np

Part = tuple[np.ndarray, np.ndarray]


class Parts:
    """The parts of one object, concatenated into one mesh at the end."""

    def __init__(self) -> None:
        self.parts: list[Part] = []

    def add(self, part: Part) -> None:
        self.parts.append(part)

    def mesh(self) -> Part:
        vertices, faces, offset = [], [], 0
        for v, f in self.parts:
            vertices.append(v)
            faces.append(f + offset)
            offset += len(v)
        return np.concatenate(vertices), np.concatenate(faces)


def box(center, size) -> Part:
    """An axis-aligned box of full extents `size` around `center`."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    vertices = np.asarray(center, float) + corners * np.asarray(size, float) / 2
    faces = np.array(
        [
            [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],  # -x, +x
            [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],  # -y, +y
            [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],  # -z, +z
        ]
    )  # fmt: skip
    return vertices, faces


def _signed_power(values: np.ndarray, exponent: float) -> np.ndarray:
    return np.sign(values) * np.abs(values) ** exponent


def _grid_faces(rows: int, cols: int, wrap: bool = True) -> np.ndarray:
    """Triangles of a (rows × cols) vertex grid, closed around the columns when `wrap`."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols if wrap else cols - 1), indexing="ij")
    a = r * cols + c
    b = r * cols + (c + 1) % cols
    d = (r + 1) * cols + c
    e = (r + 1) * cols + (c + 1) % cols
    return np.concatenate([np.stack([a, d, e], -1), np.stack([a, e, b], -1)]).reshape(-1, 3)


def _superellipse_rings(size, roundness: float, lat: np.ndarray, segments: int) -> np.ndarray:
    """Rings of a superellipsoid with full extents `size` at latitudes `lat` (radians)."""
    lon = np.linspace(-np.pi, np.pi, segments, endpoint=False)
    lat, lon = np.meshgrid(lat, lon, indexing="ij")
    e = max(roundness, 0.05)
    cos_lat = _signed_power(np.cos(lat), e)
    x = cos_lat * _signed_power(np.cos(lon), e)
    y = _signed_power(np.sin(lat), e)
    z = cos_lat * _signed_power(np.sin(lon), e)
    return np.stack([x, y, z], -1).reshape(-1, 3) * np.asarray(size, float) / 2


def rounded_box(center, size, roundness: float = 0.3, segments: int = 16) -> Part:
    """A closed superellipsoid: roundness → 0 is a box, 1 an ellipsoid, in between a cushion."""
    rings = segments // 2 + 1
    lat = np.linspace(-np.pi / 2, np.pi / 2, rings)
    vertices = _superellipse_rings(size, roundness, lat, segments) + np.asarray(center, float)
    return vertices, _grid_faces(rings, segments)


def basin(top_center, size, wall: float, roundness: float = 0.3, segments: int = 20) -> Part:
    """An open-topped hollow bowl (bathtub, toilet bowl): outer and inner shells and a rim.

    `size` is the outer (width, depth below the rim, length); the rim lies at `top_center`.
    """
    rings = segments // 4 + 1
    lat = np.linspace(-np.pi / 2, 0.0, rings)
    outer_size = np.array([size[0], 2 * size[1], size[2]], float)
    inner_size = outer_size - np.array([2 * wall, 2 * wall, 2 * wall])
    outer = _superellipse_rings(outer_size, roundness, lat, segments)
    inner = _superellipse_rings(inner_size, roundness, lat, segments)
    vertices = np.concatenate([outer, inner]) + np.asarray(top_center, float)
    n = rings * segments
    faces = [_grid_faces(rings, segments), _grid_faces(rings, segments)[:, ::-1] + n]
    top_outer = (rings - 1) * segments + np.arange(segments)
    top_inner = top_outer + n
    following = np.roll(np.arange(segments), -1)
    rim = np.concatenate(
        [
            np.stack([top_outer, top_inner, top_inner[following]], -1),
            np.stack([top_outer, top_inner[following], top_outer[following]], -1),
        ]
    )
    return vertices, np.concatenate([*faces, rim])


def _norm(vector: np.ndarray) -> float:
    """The length of a 3-vector, summed in a fixed order: `np.linalg.norm` goes through BLAS,
    whose kernel (and so the last bit) depends on the CPU, and the data's hashes must not."""
    x, y, z = vector
    return float(np.sqrt(x * x + y * y + z * z))


def cylinder(
    start, end, radius: float, end_radius: float | None = None, segments: int = 12
) -> Part:
    """A closed (possibly tapered) cylinder from point `start` to point `end`."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    length = _norm(axis)
    axis = axis / length
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    u = np.cross(axis, helper)
    u /= _norm(u)
    v = np.cross(axis, u)
    angles = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    circle = np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v
    top_radius = radius if end_radius is None else end_radius
    vertices = np.concatenate([start + radius * circle, end + top_radius * circle, [start, end]])
    i = np.arange(segments)
    j = (i + 1) % segments
    faces = np.concatenate(
        [
            np.stack([i, j, j + segments], -1),
            np.stack([i, j + segments, i + segments], -1),
            np.stack([np.full(segments, 2 * segments), j, i], -1),
            np.stack([np.full(segments, 2 * segments + 1), i + segments, j + segments], -1),
        ]
    )
    return vertices, faces


def ring(center, radii, tube: float, segments: int = 24, tube_segments: int = 8) -> Part:
    """A flat oval torus in the XZ plane: centre line radii (x, z), round tube of radius `tube`."""
    lon = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    tube_angle = np.linspace(0, 2 * np.pi, tube_segments, endpoint=False)
    lon, tube_angle = np.meshgrid(lon, tube_angle, indexing="ij")
    outward = np.stack([np.cos(lon), np.zeros_like(lon), np.sin(lon)], -1)
    line = outward * np.array([radii[0], 0.0, radii[1]])
    up = np.array([0.0, 1.0, 0.0])
    points = line + tube * (
        np.cos(tube_angle)[..., None] * outward + np.sin(tube_angle)[..., None] * up
    )
    vertices = points.reshape(-1, 3) + np.asarray(center, float)
    # Wrap both ways: rows are positions along the centre line, columns around the tube.
    faces = _grid_faces(segments + 1, tube_segments) % (segments * tube_segments)
    return vertices, faces


def rotate_x(part: Part, angle: float, pivot) -> Part:
    """Tilt a part about the X axis (a chair back leaning back) around `pivot`."""
    c, s = np.cos(angle), np.sin(angle)
    pivot = np.asarray(pivot, float)
    x, y, z = (part[0] - pivot).T
    # Written out rather than `@ rotation.T` (BLAS), for the reason given in `_norm`.
    rotated = np.stack([x, c * y - s * z, s * y + c * z], axis=1)
    return rotated + pivot, part[1]
