"""The shared object frame: every stage (sampling, rendering, classify) normalises alike.

Canonical frame: +Y up (ShapeNet, glTF and the ModelNet40 resampled benchmark files);
a source whose files have another up axis (±x, ±y, ±z) says so in the manifest's `up_axis`
column and is rotated here. Normalisation is computed from the mesh vertices, not from sampled points, so that
points and rendered views share one frame: centre = bounding-box centre, scale = 1 / the
largest vertex distance from it, so the whole surface lies inside the unit sphere.

Pure numpy: Blender worker processes import this module too.
"""

import numpy as np

# The up axes a source may declare, and the proper rotation (det +1) taking each onto +Y.
# Z-up → Y-up is (x, y, z) → (x, z, -y), a rotation about +X; the others likewise.
CANONICAL_FROM_UP = {
    "y": np.eye(3),
    "z": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    "-y": np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]),
    "-z": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
    "x": np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    "-x": np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
}
UP_AXES = tuple(CANONICAL_FROM_UP)
Z_UP_TO_Y_UP = CANONICAL_FROM_UP["z"]


def canonical_rotation(up_axis: str) -> np.ndarray:
    """The 3×3 rotation from a file's axes (its up axis `up_axis`) to the canonical +Y up."""
    if up_axis not in CANONICAL_FROM_UP:
        raise ValueError(f"up_axis must be one of {', '.join(UP_AXES)}, got {up_axis!r}")
    return CANONICAL_FROM_UP[up_axis]


def to_canonical_axes(vertices: np.ndarray, up_axis: str) -> np.ndarray:
    """Rotate vertices from the file's up axis into the canonical Y-up frame."""
    if up_axis == "y":
        return vertices
    return vertices @ canonical_rotation(up_axis).T


def from_canonical_axes(vertices: np.ndarray, up_axis: str) -> np.ndarray:
    """Rotate canonical Y-up vertices back into a file's axes (`to_canonical_axes`' inverse)."""
    if up_axis == "y":
        return vertices
    return vertices @ canonical_rotation(up_axis)


def normalization(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre, scale) such that `(v - centre) * scale` lies in the unit sphere."""
    v = np.asarray(vertices, dtype=np.float64)
    centre = (v.min(axis=0) + v.max(axis=0)) / 2.0
    offsets = v - centre
    with np.errstate(over="ignore", under="ignore"):
        radius = float(np.linalg.norm(offsets, axis=1).max())
    if not 0.0 < radius < np.inf:
        # the squares under- or overflowed (a cloud 1e-300 or 1e300 across): measured in
        # units of its largest offset instead (the common case keeps the plain sum's bits)
        largest = float(np.abs(offsets).max())
        if not 0.0 < largest < np.inf:
            raise ValueError("degenerate geometry: all vertices coincide")
        radius = largest * float(np.linalg.norm(offsets / largest, axis=1).max())
    scale = 1.0 / radius
    if not 0.0 < scale < np.inf:
        raise ValueError(f"degenerate geometry: a radius of {radius:.3g} has no finite scale")
    return centre, scale


# Blender holds coordinates and matrices in float32, whose step at a UTM northing (4e6 m) is
# 0.25 m: what it imports is moved near the origin first, by `origin_offset` of a point of it.
# Nothing else changes: the object is normalised by its own bounding box either way.
FAR_FROM_ORIGIN = 1e4


def origin_offset(point: np.ndarray) -> np.ndarray:
    """(3,) whole units that move `point` near the origin when it lies FAR_FROM_ORIGIN or
    further out (whole: exact in float32 up to 2^24); zeros when it is near or not finite."""
    point = np.asarray(point, dtype=np.float64)[:3]
    if not np.isfinite(point).all() or np.abs(point).max() < FAR_FROM_ORIGIN:
        return np.zeros(3)
    return np.round(point)


# Float32 coordinates move in steps that grow with the distance from the origin: 0.25 m at
# 4e6 m (a UTM northing). With at least this many steps across an object, a vertex lies within
# 1/512 of the object's extent of where the file put it: 0.004 of the unit sphere's radius, a
# tenth of the spacing of 8192 points on it. With fewer, the grid shows in the cloud (a 2 m
# object at 4e6 m has 8 steps across: a sphere comes out as a few slabs).
MIN_FLOAT32_STEPS = 256


def float32_quantization(vertices: np.ndarray) -> str | None:
    """Why float32 cannot hold this object's shape where it lies (fewer than
    MIN_FLOAT32_STEPS steps across it), in words; None when it can."""
    v = np.asarray(vertices, dtype=np.float64)[:, :3]
    v = v[np.isfinite(v).all(axis=1)]
    if len(v) == 0:
        return None
    magnitude = float(np.abs(v).max())
    extent = float(np.ptp(v, axis=0).max())
    step = float(np.spacing(np.float32(min(magnitude, float(np.finfo(np.float32).max)))))
    if extent <= 0.0 or extent >= MIN_FLOAT32_STEPS * step:  # no extent: `normalization` says
        return None
    return (
        f"coordinates {magnitude:.4g} from the origin, in float32, move in steps of {step:.3g}: "
        f"{extent / step:.0f} steps across the object's extent of {extent:.4g} "
        f"(at least {MIN_FLOAT32_STEPS} keep its shape)"
    )


def normalize(points: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """Apply a normalisation from `normalization` to xyz (extra columns such as normals kept),
    float32 out. Centred in float64 first: a scan at a UTM offset (4e6 m) cast to float32
    before centring kept 0.25 m steps, and a 2 m object became a few slabs of points."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, :3] = (out[:, :3] - centre) * scale
    return out.astype(np.float32)


def centroid_normalize(xyz: np.ndarray) -> np.ndarray:
    """The public `pc_normalize` (datasets/ModelNetDataset.py:27): minus the centroid, then
    divided by the largest distance from it; float32 in, float32 out, as there."""
    centred = xyz - np.mean(xyz, axis=0)
    radius = np.max(np.sqrt(np.sum(centred**2, axis=1)))
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError("degenerate geometry: all points coincide")
    return centred / radius
