"""Loading mesh files into plain arrays, with one error type that says what went wrong.

Every stage that reads meshes (meshes validation, sample, render, classify) goes through
`load_mesh`, so a file is judged the same way everywhere. Parsing only: trimesh reads the
geometry (a glTF scene is flattened with its node transforms applied); nothing in a file is
ever executed. Materials and textures are skipped: only the surface matters here.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cg3d.formats.manifest import FAILURE_KINDS

SUPPORTED_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")

# Beyond these a file is not a single object in any sane unit (or would exhaust memory).
MAX_EXTENT = 1.0e6
MAX_FACES = 20_000_000

# trimesh logs every odd file at warning level; the failure rows say it once, in words.
logging.getLogger("trimesh").setLevel(logging.ERROR)


class MeshError(Exception):
    """A mesh that cannot be used; `kind` is one of manifest.FAILURE_KINDS."""

    def __init__(self, kind: str, reason: str) -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}")
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass
class Mesh:
    """A triangle mesh: vertices (V, 3) float64, faces (F, 3) int64 indexing them."""

    vertices: np.ndarray
    faces: np.ndarray


def load_mesh(path: Path) -> Mesh:
    """Read a mesh file into one triangulated `Mesh`; raise MeshError when unusable."""
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise MeshError(
            "unsupported_format",
            f"{suffix or 'no suffix'} is not one of {' '.join(SUPPORTED_SUFFIXES)}",
        )
    try:
        size = path.stat().st_size
    except OSError as error:
        raise MeshError("unreadable", f"cannot open the file: {error.strerror or error}") from error
    if size == 0:
        raise MeshError("empty", "the file has zero bytes")
    # Skip materials and texture images: slow to decode, may be missing, and unused here.
    options = {"skip_materials": True} if suffix in (".obj", ".glb", ".gltf") else {}
    try:
        scene = trimesh.load_scene(str(path), file_type=suffix[1:], process=False, **options)
        vertices, faces = _scene_arrays(scene)
    except MemoryError as error:
        raise MeshError("absurd_size", "the file does not fit in memory") from error
    except Exception as error:  # any parser failure: a malformed file, not a crashed stage
        raise MeshError("unreadable", f"{type(error).__name__}: {error}") from error
    result = Mesh(
        vertices=np.asarray(vertices, dtype=np.float64).reshape(-1, 3),
        faces=np.asarray(faces, dtype=np.int64).reshape(-1, 3),
    )
    check_mesh(result)
    return result


def _scene_arrays(scene) -> tuple[np.ndarray, np.ndarray]:
    """All triangles of a scene in world coordinates (node transforms applied)."""
    nodes = scene.graph.nodes_geometry
    if len(nodes) == 1:
        # The common single-mesh file: skip the copy a full scene flattening makes.
        transform, name = scene.graph[nodes[0]]
        geometry = scene.geometry[name]
        if np.allclose(transform, np.eye(4)) and hasattr(geometry, "faces"):
            return geometry.vertices, geometry.faces
    mesh = scene.to_mesh()  # concatenates every mesh with its transform; drops points and lines
    return mesh.vertices, mesh.faces


def check_mesh(mesh: Mesh) -> None:
    """Raise MeshError unless `mesh` is a finite, sanely sized surface with some area."""
    vertices, faces = mesh.vertices, mesh.faces
    if len(vertices) == 0 or len(faces) == 0:
        raise MeshError("empty", f"{len(vertices)} vertices and {len(faces)} faces")
    if len(faces) > MAX_FACES:
        raise MeshError("absurd_size", f"{len(faces)} faces (more than {MAX_FACES})")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError("unreadable", "a face refers to a vertex that does not exist")
    used = vertices[np.unique(faces)]
    if not np.isfinite(used).all():
        raise MeshError("non_finite", "NaN or infinite vertex coordinates")
    extent = float((used.max(axis=0) - used.min(axis=0)).max())
    if extent > MAX_EXTENT:
        raise MeshError(
            "absurd_size", f"bounding box {extent:.3g} units across (max {MAX_EXTENT:g})"
        )
    corners = vertices[faces]
    doubled_areas = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    # Relative to the size of the object, so that millimetre and kilometre models pass alike.
    if extent <= 0.0 or doubled_areas.sum() <= 1e-12 * extent * extent:
        raise MeshError("degenerate", "the surface has zero area")
