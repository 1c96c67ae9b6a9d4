"""Checking mesh files and reading the simple ones into arrays, with one error type that says
what went wrong.

The reading of record is Blender's importer (`cg3d.render.worker`): the views and, for glTF
and for coloured points, the sampled points come from it. `load_mesh` (trimesh) is the fast
path for the formats both read alike (`FAST_SUFFIXES`: a test compares the two readings), and
the OFF reader of the Blender workers. `validate_file` is the meshes stage's check: the file
stays inside its source's root, every file it references (`referenced_files`: OBJ `mtllib`,
MTL texture maps, glTF buffer and image URIs) resolves inside the root (`resolve_reference`,
the one function that decides) and exists, and the geometry is a surface (a point cloud, a
file of lines, an unsupported required glTF extension are named as such). Parsing only:
nothing in a file is ever executed.
"""

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from cg3d.files import OutsideRoot, confined_path
from cg3d.formats.manifest import FAILURE_KINDS

SUPPORTED_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
# trimesh and Blender read these alike (tests/render/test_one_reading.py): no Blender needed
# for their points unless colours are asked for.
FAST_SUFFIXES = (".obj", ".off", ".ply", ".stl")
GLTF_SUFFIXES = (".glb", ".gltf")
# Formats researchers hold that are not read here: named, never "empty" (Blender 5 dropped
# COLLADA; FBX and 3MF are not read by this pipeline: convert them to glTF).
NAMED_UNSUPPORTED = {
    ".fbx": "FBX",
    ".dae": "COLLADA (.dae, no longer in Blender 5)",
    ".3mf": "3MF",
    ".blend": "a .blend file (never opened: it can hold scripts)",
    ".usd": "USD",
    ".usdz": "USDZ",
    ".usda": "USD",
    ".usdc": "USD",
    ".abc": "Alembic",
    ".3ds": "3DS",
    ".x3d": "X3D",
    ".wrl": "VRML",
}
# Extensions Blender 5's glTF importer reads; a file requiring another one is refused by name.
GLTF_EXTENSIONS_READ = {
    "KHR_draco_mesh_compression",
    "KHR_mesh_quantization",
    "KHR_texture_transform",
    "KHR_materials_emissive_strength",
    "KHR_materials_unlit",
    "KHR_materials_pbrSpecularGlossiness",
    "KHR_materials_clearcoat",
    "KHR_materials_transmission",
    "KHR_materials_volume",
    "KHR_materials_ior",
    "KHR_materials_specular",
    "KHR_materials_sheen",
    "KHR_materials_variants",
    "KHR_materials_anisotropy",
    "KHR_lights_punctual",
    "KHR_texture_basisu",
    "EXT_texture_webp",
    "EXT_mesh_gpu_instancing",
}
COMPRESSION_EXTENSIONS = ("KHR_draco_mesh_compression", "EXT_meshopt_compression")
TRIANGLE_MODES = (4, 5, 6)  # glTF primitive modes with faces (0 points, 1-3 lines)

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


def check_suffix(path: Path) -> str:
    """The lower-case suffix of a mesh file read here; MeshError naming the format otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in NAMED_UNSUPPORTED:
        raise MeshError(
            "unsupported_format",
            f"{NAMED_UNSUPPORTED[suffix]} is not read here: convert it to glTF/GLB",
        )
    if suffix not in SUPPORTED_SUFFIXES:
        raise MeshError(
            "unsupported_format",
            f"{suffix or 'no suffix'} is not one of {' '.join(SUPPORTED_SUFFIXES)}",
        )
    return suffix


def check_nonempty(path: Path) -> None:
    try:
        size = Path(path).stat().st_size
    except OSError as error:
        raise MeshError("unreadable", f"cannot open the file: {error.strerror or error}") from error
    if size == 0:
        raise MeshError("empty", "the file has zero bytes")


def load_mesh(path: Path) -> Mesh:
    """Read a mesh file into one triangulated `Mesh`; raise MeshError when unusable."""
    import trimesh

    path = Path(path)
    suffix = check_suffix(path)
    check_nonempty(path)
    # Skip materials and texture images: slow to decode, may be missing, and unused here.
    options = {"skip_materials": True} if suffix in (".obj", ".glb", ".gltf") else {}
    try:
        scene = trimesh.load_scene(str(path), file_type=suffix[1:], process=False, **options)
        _check_has_faces(scene, path)
        vertices, faces = _scene_arrays(scene)
    except MemoryError as error:
        raise MeshError("absurd_size", "the file does not fit in memory") from error
    except MeshError:
        raise
    except Exception as error:  # any parser failure: a malformed file, not a crashed stage
        raise MeshError("unreadable", f"{type(error).__name__}: {error}") from error
    result = Mesh(
        vertices=np.asarray(vertices, dtype=np.float64).reshape(-1, 3),
        faces=np.asarray(faces, dtype=np.int64).reshape(-1, 3),
    )
    check_mesh(result)
    return result


def _check_has_faces(scene, path: Path) -> None:
    """MeshError naming what a file without faces holds: a point cloud, or only lines."""
    if any(len(getattr(g, "faces", ())) for g in scene.geometry.values()):
        return
    vertices = sum(len(getattr(g, "vertices", ())) for g in scene.geometry.values())
    kinds = {type(g).__name__ for g in scene.geometry.values()}
    if "Path3D" in kinds or "Path2D" in kinds or _obj_has_lines(path):
        raise MeshError("no_faces", "the file holds only lines, no faces")
    if vertices:
        raise MeshError("no_faces", f"a point cloud ({vertices} vertices, no faces)")
    raise MeshError("empty", "the file holds no geometry")


def _obj_has_lines(path: Path) -> bool:
    """Whether an OBJ has `l` (polyline) records; trimesh reads those as bare vertices."""
    if path.suffix.lower() != ".obj":
        return False
    with open(path, "rb") as handle:
        return any(line.lstrip().startswith(b"l ") for line in handle)


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


# Path safety and the meshes stage's check.


def resolve_reference(root: Path, base_dir: Path, reference: str, required: bool) -> Path | None:
    """The file `reference` (relative to `base_dir`, or absolute) names, if it lies inside
    `root` after symlinks are followed; MeshError naming it when it escapes, or when it is
    `required` and missing (a missing optional file, a texture, is None: the object is read
    without it). The one function that decides what a source may read."""
    try:
        target = confined_path(root, base_dir, reference)
    except OutsideRoot:
        raise MeshError("outside_root", f"{reference} resolves outside the source root") from None
    if not target.is_file():
        if required:
            raise MeshError("missing_file", f"{reference} (referenced by the file) does not exist")
        return None
    return target


def gltf_document(path: Path) -> dict:
    """The JSON document of a .gltf or .glb file; MeshError when it does not parse."""
    try:
        data = Path(path).read_bytes()
        if data[:4] == b"glTF":
            length, kind = struct.unpack_from("<II", data, 12)
            if kind != 0x4E4F534A:
                raise ValueError("the first GLB chunk is not JSON")
            data = data[20 : 20 + length]
        document = json.loads(data)
    except (ValueError, struct.error, UnicodeDecodeError) as error:
        raise MeshError("unreadable", f"not a glTF document: {error}") from error
    if not isinstance(document, dict):
        raise MeshError("unreadable", "not a glTF document: the JSON is not an object")
    return document


def _mtl_maps(mtl: Path) -> list[str]:
    """Texture files an MTL names (`map_Kd`, `bump`, `disp`, `norm`, ...; options skipped)."""
    found = []
    for line in mtl.read_text(errors="replace").splitlines():
        words = line.split()
        if words and (
            words[0].lower().startswith("map_")
            or words[0].lower() in ("bump", "disp", "decal", "refl", "norm")
        ):
            found.append(words[-1])  # the file name comes after any -o/-s/... options
    return found


def referenced_files(path: Path, root: Path) -> list[Path]:
    """Every file `path` makes an importer read, each resolved and checked inside `root`."""
    path, suffix = Path(path), Path(path).suffix.lower()
    base = path.resolve().parent
    found: list[Path | None] = []
    if suffix == ".obj":
        with open(path, "rb") as handle:
            names = [
                name
                for line in handle
                if line.startswith(b"mtllib")
                for name in line.decode(errors="replace").split()[1:]
            ]
        for name in names:
            mtl = resolve_reference(root, base, name, required=False)
            found.append(mtl)
            if mtl is not None:
                found += [resolve_reference(root, mtl.parent, m, False) for m in _mtl_maps(mtl)]
    elif suffix in GLTF_SUFFIXES:
        document = gltf_document(path)
        for kind in ("buffers", "images"):
            for item in document.get(kind, []):
                uri = item.get("uri") if isinstance(item, dict) else None
                if isinstance(uri, str) and not uri.startswith("data:"):
                    found.append(resolve_reference(root, base, unquote(uri), kind == "buffers"))
    return [file for file in found if file is not None]


def check_gltf(document: dict) -> None:
    """The structural check of a glTF file: required extensions read, some triangles."""
    required = set(document.get("extensionsRequired", []))
    unread = sorted(required - GLTF_EXTENSIONS_READ)
    if unread:
        raise MeshError(
            "unsupported_format",
            f"the file requires the glTF extension {', '.join(unread)}, not read here",
        )
    modes = [
        primitive.get("mode", 4)
        for mesh in document.get("meshes", [])
        for primitive in mesh.get("primitives", [])
    ]
    if not modes:
        raise MeshError("empty", "the file holds no meshes")
    if not any(mode in TRIANGLE_MODES for mode in modes):
        if all(mode == 0 for mode in modes):
            raise MeshError("no_faces", "a point cloud (glTF POINTS primitives, no faces)")
        raise MeshError("no_faces", "the file holds only lines or points, no faces")


def validate_file(path: Path, root: Path, geometry: bool = True) -> None:
    """The meshes stage's check of one file (see the module docstring); MeshError if unusable.
    `geometry=False` stops before `check_geometry`, for a caller that saw the same bytes pass.
    """
    path = Path(path)
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise MeshError(
            "outside_root", f"the file resolves to {path.resolve()}, outside the source root"
        )
    check_suffix(path)
    check_nonempty(path)
    referenced_files(path, root)
    if geometry:
        check_geometry(path)


# The formats whose `check_geometry` reads the file's own bytes only (no materials, textures or
# other files), so its outcome is the same for every copy of the same bytes.
BYTES_ONLY_SUFFIXES = (".obj", ".off", ".stl", ".glb", ".gltf")


def check_geometry(path: Path) -> None:
    """glTF geometry is decoded by Blender in the sample and render stages (Draco, sparse
    accessors, skins...), so here it is checked structurally; the other formats are read."""
    if Path(path).suffix.lower() in GLTF_SUFFIXES:
        check_gltf(gltf_document(path))
    else:
        load_mesh(path)
