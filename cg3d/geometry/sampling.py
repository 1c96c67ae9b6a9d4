"""Points on an object's surface, in the shared object frame: area-weighted surface samples,
farthest point sampling down to N, and the colour and normal at each point.

One function per step, used alike by the fast path of the sample stage (`cg3d.pipeline.sample`)
and the Blender workers (`cg3d.render.worker`), so both readings sample the same way. Each object
has its own random generator seeded from (seed, object id), so its points do not depend on
chunking, worker count, executor or which reading was used.
"""

import hashlib
import math

import numpy as np

from cg3d.geometry.fps import fps_indices
from cg3d.geometry.frame import normalization
from cg3d.geometry.surface import Surface
from cg3d.params import SampleConfig

# FPS picks N of max(10k, 1.25 N) surface samples: 10k → 8192 as in ULIP / Point-BERT data,
# and enough candidates for FPS to spread 1024 points better than a random subset would.
MIN_SURFACE_SAMPLES = 10_000


def surface_sample_count(n_points: int) -> int:
    return max(MIN_SURFACE_SAMPLES, math.ceil(1.25 * n_points))


def object_rng(seed: int, object_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, object id)."""
    digest = int.from_bytes(hashlib.sha256(object_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def sample_triangles(
    triangles: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` points uniform over the area of (F, 3, 3) triangles: (face, barycentric (n, 3),
    xyz (n, 3))."""
    cross = face_cross(triangles)
    doubled_area = np.linalg.norm(cross, axis=1)
    total = doubled_area.sum()
    if not np.isfinite(total) or total <= 0.0:
        raise ValueError("degenerate: the mesh has no surface area")
    face = rng.choice(len(triangles), size=count, p=doubled_area / total)
    # Uniform barycentric coordinates: fold the unit square's upper half onto the triangle.
    u, v = rng.random((2, count))
    outside = u + v > 1.0
    u[outside], v[outside] = 1.0 - u[outside], 1.0 - v[outside]
    bary = np.stack([1.0 - u - v, u, v], axis=1)
    return face, bary, np.einsum("nk,nkj->nj", bary, triangles[face])


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator, normals: bool
) -> np.ndarray:
    """`count` points uniform over a mesh's surface, (count, 3), or (count, 6) with normals."""
    triangles = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    face, _, xyz = sample_triangles(triangles, count, rng)
    if not normals:
        return xyz
    cross = face_cross(triangles[face])
    return np.concatenate([xyz, cross / np.linalg.norm(cross, axis=1, keepdims=True)], axis=1)


def face_cross(triangles: np.ndarray) -> np.ndarray:
    return np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])


def points_from_surface(
    surface: Surface, config: SampleConfig, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """(N, C) float32 points of a surface already in the normalised frame (channels as
    `channel_names`), and whether any point had a colour of its own."""
    count = surface_sample_count(config.points)
    face, bary, xyz = sample_triangles(surface.triangles, count, rng)
    picked = fps_indices(xyz, config.points, int(rng.integers(count)), config.fps)
    columns, has_color = [xyz[picked]], False
    if config.colors:
        rgb, has_color = surface.colors_at(face[picked], bary[picked])
        columns.append(rgb)
    if config.normals:
        cross = face_cross(surface.triangles[face[picked]])
        columns.append(cross / np.linalg.norm(cross, axis=1, keepdims=True))
    return np.concatenate(columns, axis=1).astype(np.float32), has_color


def normalised_surface(vertices: np.ndarray, faces: np.ndarray) -> Surface:
    """The triangles of a mesh already in the canonical axes, normalised by the vertices its
    faces use (as the Blender reading normalises its triangles)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        raise ValueError("empty: the mesh has no faces")
    triangles = vertices[faces]
    if not np.isfinite(triangles).all():
        raise ValueError("non_finite: the mesh has NaN or infinite vertex coordinates")
    try:
        centre, scale = normalization(triangles.reshape(-1, 3))
    except ValueError as error:
        raise ValueError(f"degenerate: {error}") from error
    return Surface((triangles - centre) * scale)


def sample_object(
    vertices: np.ndarray, faces: np.ndarray, config: SampleConfig, rng: np.random.Generator
) -> np.ndarray:
    """(N, C) float32 points of a mesh already in the canonical frame, inside the unit sphere
    (colours, when asked for, are NO_COLOR: a bare mesh has none)."""
    return points_from_surface(normalised_surface(vertices, faces), config, rng)[0]
