"""Checking mesh files and reading the simple ones into arrays, with one error type that says
what went wrong.

The reading of record is Blender's importer (`cg3d.render.worker`): the views and, for glTF
and for coloured points, the sampled points come from it. `load_mesh` (trimesh) is the fast
path for the formats both read alike (`FAST_SUFFIXES`: a test compares the two readings), and
the OFF reader of the Blender workers. `validate_file` is the meshes stage's check: the file
stays inside its source's root, every file it references (`references`: OBJ `mtllib`,
MTL texture maps, glTF buffer and image URIs) resolves inside the root (`resolve_reference`,
the one function that decides), a glTF buffer exists (a missing MTL or texture is returned, for
the manifest's `missing` column: the object is read without it), and the geometry is a surface
(a point cloud, a file of lines, an unsupported required glTF extension are named as such).
Parsing only: nothing in a file is ever executed.
"""

import base64
import functools
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote

import numpy as np

from cg3d.files import (
    ARCHIVES,
    OutsideRoot,
    annex_link,
    confined_path,
    derived_name,
    error_page,
    file_sha256,
    file_stand_in,
    loads_json,
    os_error_in,
    packed_format,
    pointer,
    real_path,
    shown_name,
    versioned_sha256,
    why_not_a_file,
    zero_tail,
)
from cg3d.formats.images import texture_refusal
from cg3d.formats.manifest import FAILURE_KINDS
from cg3d.formats.pointfiles import is_number
from cg3d.geometry.frame import float32_quantization, origin_offset

SUPPORTED_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
# trimesh and Blender read these alike (tests/render/test_one_reading.py): no Blender needed
# for their points unless colours are asked for.
FAST_SUFFIXES = (".obj", ".off", ".ply", ".stl")
GLTF_SUFFIXES = (".glb", ".gltf")
# Blender opens no path of FILE_MAX (1024) bytes or more: its importers said "Cannot open file"
# or "Invalid PLY header" (an `empty` or importer row), a texture was left out without a word,
# and a render was not written. `blender_input` hands it shorter paths (links where needed).
BLENDER_FILE_MAX = 1024
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
# A GLB's own length field is 32 bits, and MAX_FACES faces as OBJ text (vertices, normals and
# texture coordinates included) take well under this.
MAX_MESH_BYTES = 1 << 32
FACE_OUT_OF_RANGE = "a face refers to a vertex that does not exist"
ZERO_HEAD_BYTES = 4096  # a mesh file's first bytes are a header or text, never all zero

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


def check_suffix(path: Path, also: tuple[str, ...] = ()) -> str:
    """The lower-case suffix of a mesh file read here; MeshError naming the format otherwise.
    `also`: the suffixes a caller reads besides (classify's point files), for the message."""
    suffix = Path(path).suffix.lower()
    if suffix in NAMED_UNSUPPORTED:
        raise MeshError(
            "unsupported_format",
            f"{NAMED_UNSUPPORTED[suffix]} is not read here: convert it to glTF/GLB",
        )
    if (
        suffix[1:].isdigit()
        and (mesh := Path(path).with_suffix("").suffix.lower()) in SUPPORTED_SUFFIXES
    ):
        raise MeshError(  # it said ".1 is not one of .obj …"
            "unsupported_format",
            f"a numbered copy of a {mesh} file, as wget names a download repeated into one "
            f"folder: rename it to {mesh} if it is the file you want, else remove it",
        )
    inner = Path(path).with_suffix("").suffix.lower()
    if suffix in COMPRESSED_SUFFIXES and inner in SUPPORTED_SUFFIXES:
        # Blender's importers and trimesh read no compressed file: never decompressed here
        # (a 1 MB .ply.gz can inflate to gigabytes); the user decompresses what they trust.
        packed, tool = COMPRESSED_SUFFIXES[suffix]
        raise MeshError(
            "unsupported_format",
            f"a {inner} file compressed with {packed}: `{tool}` it (no importer reads it so)",
        )
    if suffix not in SUPPORTED_SUFFIXES:
        raise MeshError(
            "unsupported_format",
            f"{suffix or 'no suffix'} is not one of {' '.join((*SUPPORTED_SUFFIXES, *also))}",
        )
    return suffix


def check_bytes(path: Path) -> None:
    """MeshError unless the file has bytes to read, no more than MAX_MESH_BYTES, and does not
    start with ZERO_HEAD_BYTES zero bytes. From its size and first block alone, before any
    reader sees it: trimesh reads a file whole (twice its size in memory), so a sparse file
    of 100 GB (`truncate -s`) would have taken the machine, and a preallocated download that
    was never written (all zeros) took 30 s and 2 GB to be called "no geometry"."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(ZERO_HEAD_BYTES) if 0 < size <= MAX_MESH_BYTES else b""
    except OSError as error:
        raise MeshError("unreadable", f"cannot open the file: {error.strerror or error}") from error
    if size == 0:
        raise MeshError("empty", "the file has zero bytes")
    if size > MAX_MESH_BYTES:
        raise MeshError("absurd_size", f"{size} bytes, more than {MAX_MESH_BYTES} for one mesh")
    if not head.strip(b"\0"):
        raise MeshError(
            "empty",
            f"its first {len(head)} bytes are all zero (no mesh format starts so: a file "
            "allocated and never written, as an interrupted download leaves)",
        )
    if stand_in := _stand_in(head, Path(path).suffix.lower(), size):
        raise stand_in


# What to do with a compressed stream saved under a mesh's name (`files.packed_format`; an
# archive is extracted): a server that compresses what it sends can save it so.
DECOMPRESS = {
    "gzip": "`gunzip` it (a server that compresses what it sends saved it so)",
    "xz": "`unxz` it",
    "zstd": "`unzstd` it",
    "bzip2": "`bunzip2` it",
}


# A mesh saved compressed (`chair.ply.gz`): its format and the command that decompresses it.
COMPRESSED_SUFFIXES = {
    ".gz": ("gzip", "gunzip"),
    ".xz": ("xz", "unxz"),
    ".zst": ("zstd", "unzstd"),
    ".bz2": ("bzip2", "bunzip2"),
}


def _stand_in(head: bytes, suffix: str, size: int) -> MeshError | None:
    """The failure of a file that holds something else under a mesh's name, from its first
    bytes: a Git LFS or git-annex pointer (`missing_file`: the mesh was never fetched), a
    server's HTML or XML error page, JSON where the format is none (GitHub's API answers
    `{"message": "Not Found"}`), or an archive or compressed stream (`files.packed_format`). Each
    reader said what the stand-in's bytes came to in its format ("no geometry", "a PLY header
    with no end_header", a binary STL of 1633771873 triangles). A binary STL's 80 header
    bytes are free: one whose size fits its triangle count is an STL, whatever it starts with."""
    if reason := pointer(head):
        return MeshError("missing_file", reason)
    if suffix == ".stl" and 84 + 50 * int.from_bytes(head[80:84], "little") == size:
        return None
    if reason := error_page(head):
        return MeshError("unreadable", reason)
    if packed := packed_format(head):
        what = (
            f"a {packed} archive: extract it and point at the folder"
            if packed in ARCHIVES
            else f"{packed}-compressed: {DECOMPRESS[packed]}"
        )
        return MeshError("unsupported_format", f"not a {suffix} file but {what}")
    # A .glb that is JSON is a glTF named .glb, read as one here and by Blender (both go by
    # the bytes: it was "JSON, not a .glb file"); `_read_gltf_json` names an error answer.
    if suffix not in GLTF_SUFFIXES and head.lstrip().startswith((b"{", b"[")):
        first = head.lstrip().split(b"\n", 1)[0][:80].decode("utf-8", errors="replace")
        return MeshError(
            "unreadable",
            f"JSON, not a {suffix} file (it begins {first!r}): a download saved the server's "
            "answer, likely an error, under the file's name; download it again",
        )
    return None


class HandedOver(io.BytesIO):
    """A file's text handed to trimesh in memory, let go once trimesh has read it whole: a
    BytesIO keeps its bytes until closed, so the text of a 500 MB OBJ was held twice all
    through trimesh's parse (its bytes here, its decoded text there), where trimesh given the
    path holds it once. trimesh's OBJ reader reads its file object once, whole (its STL reader
    may seek back: an STL is not handed over)."""

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if size is None or size < 0:
            self.close()
        return data


def load_mesh(path: Path) -> Mesh:
    """Read a mesh file into one triangulated `Mesh`; raise MeshError when unusable."""
    import trimesh

    path = Path(path)
    suffix = check_suffix(path)
    check_bytes(path)
    split = check_declared_counts(path, suffix)
    # An OBJ with faces naming a vertex twice apart is read split, as Blender is given it: in
    # memory (trimesh holds the whole text anyway), never written beside the user's file.
    if suffix == ".obj":
        source = HandedOver(trimesh_obj_text(split_obj_text(path) if split else path.read_bytes()))
    elif suffix == ".off" and split:
        source = io.BytesIO(fanned_off_text(path))
    elif suffix == ".stl" and _starts_with_bom(path):  # trimesh read no solid after one
        source = io.BytesIO(path.read_bytes().removeprefix(UTF8_BOM))
    else:
        source = str(path)
    # Skip materials and texture images: slow to decode, may be missing, and unused here.
    options = {"skip_materials": True} if suffix in (".obj", ".glb", ".gltf") else {}
    try:
        scene = trimesh.load_scene(source, file_type=suffix[1:], process=False, **options)
        _check_has_faces(scene, path)
        vertices, faces = _scene_arrays(scene)
    except MemoryError as error:
        raise MeshError("absurd_size", "the file does not fit in memory") from error
    except MeshError:
        raise
    except IndexError as error:  # trimesh's OBJ reader indexes its vertices by the faces
        raise MeshError("unreadable", f"{FACE_OUT_OF_RANGE} ({error})") from error
    except Exception as error:  # any parser failure: a malformed file, not a crashed stage
        cut = _cut_mid_line(path) if suffix in TEXT_SUFFIXES else ""
        raise MeshError("unreadable", f"{type(error).__name__}: {error}{cut}") from error
    result = Mesh(
        vertices=np.asarray(vertices, dtype=np.float64).reshape(-1, 3),
        faces=np.asarray(faces, dtype=np.int64).reshape(-1, 3),
    )
    check_mesh(result)
    if float32_file(path, suffix):  # the file itself lost the shape: say so, not a blurred cloud
        reason = float32_quantization(result.vertices[np.unique(result.faces)])
        if reason:
            raise MeshError(
                "quantized", f"the file stores {reason}; save it in double or nearer the origin"
            )
    return result


def float32_file(path: Path, suffix: str) -> bool:
    """Whether a mesh file stores its vertex coordinates as float32: a binary STL (always), a
    PLY whose vertex x, y or z is a `float` (trimesh and Blender read an ASCII one so too)."""
    if suffix == ".stl":
        with open(path, "rb") as handle:
            return not _ascii_stl(handle.read(512))
    if suffix != ".ply":
        return False
    with open(path, "rb") as handle:
        elements = _ply_header(handle)[1]
    vertex = next((element for element in elements if element.name == "vertex"), None)
    return vertex is not None and any(
        name in ("x", "y", "z") and kind in ("float", "float32")
        for name, kind, _ in vertex.properties
    )


def _cut_mid_line(path: Path) -> str:
    """Words for a text mesh that failed to parse and does not end in a newline: a download
    cut short mid-line ("could not convert string to float: '-'" said nothing of it)."""
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
    return "" if last in b"\r\n" else " (the file ends mid-line: cut short?)"


# PLY: the face list counts. trimesh reads an ASCII face row by its tokens and ignores the count
# ("255 0 1 2" is a triangle to it), Blender's importer reads the count (255 indices: the row
# runs into the next ones; "2 0 1" an edge that trimesh drops). A file whose counts and rows
# disagree, or with a face of fewer than 3 corners, has two readings: refused before either
# reader sees it (`check_ply_faces`, called by both paths).
PLY_TYPES = {
    "char": "b", "int8": "b", "uchar": "B", "uint8": "B", "short": "h", "int16": "h",
    "ushort": "H", "uint16": "H", "int": "i", "int32": "i", "uint": "I", "uint32": "I",
    "float": "f", "float32": "f", "double": "d", "float64": "d",
}  # fmt: skip
MAX_PLY_HEADER = 1 << 16  # bytes: a header is a few hundred


@dataclass
class _PlyElement:
    name: str
    count: int
    properties: list[tuple[str, str, str | None]]  # (name, type, list item type or None)


def check_declared_counts(path: Path, suffix: str) -> bool:
    """MeshError when the counts a PLY, binary STL or OFF header declares cannot fit the file,
    a PLY or STL ends in zeros, an OBJ or OFF holds a NUL byte, or an OBJ face has two
    readings (both readings, trimesh's and Blender's, check the same way). True when an OBJ
    has faces both readers must be given split (`check_obj_faces`)."""
    split = False
    if suffix in (".ply", ".stl"):
        check_zero_tail(path)
    if suffix in TEXT_SUFFIXES:
        check_text(path)
    if suffix in (".obj", ".stl"):
        check_line_ends(path, suffix)
    if suffix == ".obj":
        split = check_obj_faces(path)
    if suffix == ".off":
        split = check_off_counts(path)
    if suffix == ".ply":
        check_ply_faces(path)
    if suffix == ".stl":
        check_stl_count(path)
    return split


def check_zero_tail(path: Path) -> None:
    """MeshError (`unreadable`) for a PLY or STL whose last 4096 bytes are all zero (`zero_tail`):
    a download cut short into a preallocated file. Its size and header are right, so the
    counts pass; a binary STL read as 80-odd triangles squashed to the origin (sampled as a
    real part of the object), a PLY failed on "face 336 has 0 corners" or "ends before its
    vertex rows do". No real file ends so: a PLY or STL record of all zero bytes is a
    zero-area triangle at the origin or a face of no corners. (A GLB may: zero-valued
    attributes are real data there.)"""
    zeros = zero_tail(path)
    if zeros:
        raise MeshError("unreadable", f"truncated and zero-filled: {zeros}")


def check_ply_faces(path: Path) -> None:
    """MeshError (`unreadable`) unless every face of the PLY at `path` is a list of 3 or more
    vertex indices that holds exactly as many as its count says (the one reading of it);
    `unsupported_format` for a binary one whose vertices carry a list, which Blender fails on."""
    with open(path, "rb") as handle:
        form, elements = _ply_header(handle)
        size = os.fstat(handle.fileno()).st_size
        has_faces = any(element.name == "face" and element.count for element in elements)
        for element in elements:
            # Every record of an element with properties takes a byte or more: a count beyond
            # the file's bytes is a lie, refused before it drives a loop or a read (a header
            # claiming 10^12 vertices hung the stage; 10^11 faces was a MemoryError).
            if element.properties and element.count > size - handle.tell():
                raise MeshError(
                    "unreadable",
                    f"the PLY header declares {element.count} {element.name} records, more "
                    f"than the file's {size} bytes hold",
                )
            lists = [name for name, _, item in element.properties if item is not None]
            if element.name == "vertex" and lists and form != "ascii" and has_faces:
                # trimesh reads it; Blender 5.0's importer fails ("unknown error"): the points
                # would have come from a file whose views could not be drawn. Without faces it
                # is a point cloud, said as such (`no_faces`), which classify and embed read.
                raise MeshError(
                    "unsupported_format",
                    f"a binary PLY whose vertex element has a list property ({lists[0]}), "
                    "which Blender's PLY importer cannot read",
                )
            if element.name == "face":
                if form == "ascii":
                    _ascii_faces(handle, element)
                else:
                    order = "<" if form.endswith("little_endian") else ">"
                    _binary_faces(handle, element, order, size)
                return
            if form == "ascii":
                for number in range(element.count):
                    line = handle.readline()
                    if not line:
                        raise _truncated(element, number)
                    if not line.strip():
                        raise _blank_row(element, number)
            else:
                _skip_binary(handle, element, "<" if form.endswith("little_endian") else ">")
                if handle.tell() > size:
                    raise _truncated(element, None)


TEXT_SUFFIXES = (".obj", ".off")  # text to every reader here: a NUL byte in one is damage
TEXT_BLOCK = 16 << 20


def check_text(path: Path) -> None:
    """MeshError (`unreadable`) for an OBJ or OFF holding a NUL byte, naming where: text never
    holds one, and a download cut short into a preallocated file (zero-filled) otherwise
    reads as part of the mesh (trimesh took the first 74 of an icosphere's 1280 faces for the
    whole object; an OFF said only "setting an array element with a sequence")."""
    with open(path, "rb") as handle:
        offset = 0
        while block := handle.read(TEXT_BLOCK):
            found = block.find(b"\0")
            if found >= 0:
                raise MeshError(
                    "unreadable",
                    f"a NUL byte at byte {offset + found} of {os.fstat(handle.fileno()).st_size} "
                    "in a text format (a file cut short and zero-filled, as an interrupted "
                    "download leaves?)",
                )
            offset += len(block)


# A UTF-8 byte-order mark, as Windows tools begin text files. Before an OBJ's first line, both
# readers lost that line: trimesh said "a face refers to a vertex that does not exist", Blender
# read 7 of a box's 8 corners and 6 of its 12 faces. Before an ASCII STL, trimesh read nothing,
# Blender the whole. trimesh is given both without it, and so is Blender an OBJ (`_obj_copy`).
UTF8_BOM = b"\xef\xbb\xbf"


def _starts_with_bom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(UTF8_BOM)) == UTF8_BOM


LINE_END_PROBE = 1 << 16  # a text mesh ends a line within its first bytes


def check_line_ends(path: Path, suffix: str) -> None:
    """MeshError (`unreadable`) for an OBJ or an ASCII STL whose lines end in CR alone (classic
    Mac OS text): Blender's importers read no faces from one (an OBJ as 1 vertex), trimesh
    failed on an OBJ ("could not convert string to float: 'v'") and read 2 of an STL's 12
    triangles. (An OFF so is read alike by both: trimesh splits its lines at a CR too.)"""
    with open(path, "rb") as handle:
        head = handle.read(LINE_END_PROBE)
    if suffix == ".stl" and not _ascii_stl(head):
        return
    if b"\r" in head and b"\n" not in head:
        raise MeshError(
            "unreadable",
            "its lines end in CR alone (classic Mac OS text), which Blender's importer reads "
            "no faces from: convert its line ends to LF or CRLF",
        )


# OBJ faces with two readings (found by trying Blender 5.0's importer beside trimesh 4.x):
# - a face naming one vertex twice, not side by side ("f 1 2 3 4 2"): trimesh fans every corner
#   as listed from the first (1.5 units² on a unit square); Blender's importer projects any face
#   that repeats a vertex onto a plane and reads the regions a 2D constrained triangulation of
#   that outline encloses (blender/io/wavefront_obj `fixup_invalid_face`): the triangle 2-3-4
#   here (0.5), not the square without the repeat (1). That reading depends on where the
#   corners lie, not only on their order ("f 1 2 3 4 3" is no surface to it, "f 3 2 1 4 1" on
#   the same square a triangle; a spike whose end projects inside the face adds that vertex to
#   it), so no rule over the corners copies it. Such a face is therefore split before either
#   reader sees it (`face_loops`, `split_obj_faces`: trimesh is given the split text in
#   memory, Blender a split copy in its temp folder), and both read the same loops, none of
#   which repeats a vertex. The rule: walking the corners in order (runs of one vertex side by
#   side taken as one), the first vertex met again closes a loop: the corners from its first
#   appearance up to before its second are one loop, the rest (from its second appearance on,
#   wrapping round to the corners before its first) the other; each loop is split again the
#   same way, and a loop of fewer than 3 corners encloses nothing and is dropped.
#   "f 1 2 3 4 2" is the triangle 2 3 4 (and 2 1, dropped): Blender's own reading of it on a
#   square; "f 1 2 3 4 3" is the triangle 1 2 3 (Blender alone read nothing);
# - but a face whose every fan triangle repeats a vertex ("f 1 2 1 3", "f 1 2 1 2 1 4": each
#   edge meets the first corner, a star with no area) is no surface to either reader, wherever
#   its corners lie: read as it is (the split gives nothing too; unsplit, files that read
#   before keep their bytes and readings);
# - a corner naming vertex 0 (OBJ counts from 1): Blender drops the face, trimesh takes the
#   last vertex.
# A vertex repeated side by side ("f 1 2 2 3 4", "f 1 2 3 1", "f 1 1 2") is one reading: Blender
# reads the polygon without the repeat, trimesh's fan gives the same triangles plus zero-area
# ones, which neither samples nor draws. A triangle can repeat a vertex only side by side, so
# only faces of 4 or more corners are looked at.
# Each starts at a newline, a literal the regex engine scans for (about twice as fast as `^`
# over a 50 MB file); the caller puts one before a block's first line. A `#` ends a line.
OBJ_LONG_FACE = re.compile(rb"\n[ \t]*f[ \t]+[^ \t\r\n]+(?:[ \t]+[^ \t\r\n]+){2}[ \t]+[^ \t\r\n]")
OBJ_ZERO_CORNER = re.compile(rb"\n[ \t]*f[ \t][^\n#]*?(?<=[ \t])[-+]?0+(?=[/ \t\r\n#])")

# A line continuation as Blender's importer reads one (`fixup_line_continuations`): a
# backslash, blanks, the line's end. "mtllib \\ " then "m.mtl" named a library "\\" and missed
# the one Blender reads, a block ended inside the statement, a vertex of it was left far out.
OBJ_CONTINUATION = rb"\\[ \t\r]*\n"
CONTINUED = re.compile(OBJ_CONTINUATION)


# A comment after a statement ("f 1 2 3 # hello", "vt 0 0 # uv"), as exporters write them:
# Blender ignores it, trimesh refused the whole file ("invalid literal for int() with base 10:
# '#'"), and `_obj_copy` blanked a face whose comment says "mtllib". Both readers are given the
# file without them (`without_inline_comments`). Only a `#` after a blank starts one: "usemtl
# red#2" names the material "red#2" to both, as it did. Not in `mtllib` and `usemtl`
# (OBJ_NAME_STATEMENTS), whose name is the rest of the line to Blender 5.0.1, `#` and all: it
# reads "mtllib m.mtl # ours" as the file "m.mtl # ours" (`obj_material_libraries`), and
# "usemtl red # c" as the material "red # c", which an MTL's "newmtl red # c" defines (Blender
# reads newmtl so too, and so does `defined_materials`). Stripped there, the copy's "usemtl red"
# matched no material: the views had the importer's grey where Blender read the author's red.
OBJ_NAME_STATEMENTS = (b"mtllib", b"usemtl")
# A comment ending in a line continuation goes on to the next line in Blender (`v 1 2 3 # c \\`
# then `v 9 9 9` is one vertex): the lines it takes are the comment's too. Cut at the backslash,
# the next line was a vertex to both readers and every face after it named the wrong one.
OBJ_INLINE_COMMENT = re.compile(
    rb"(\n[ \t]*(?!(?:" + b"|".join(OBJ_NAME_STATEMENTS) + rb")[ \t])[^#\s][^\n]*?)[ \t]+"
    rb"#(?:[^\n]*?" + OBJ_CONTINUATION + rb")*[^\r\n]*"
)


def has_inline_comment(block: bytes) -> bool:
    """Whether `block` (whole lines of an OBJ) has a comment after a statement
    (OBJ_INLINE_COMMENT). A walk over its `#` bytes (a byte search), not a regex over every
    line: a file without such comments pays for its whole-line comments only."""
    position = block.find(b"#")
    while position >= 0:
        head = block[block.rfind(b"\n", 0, position) + 1 : position]
        if not head.strip():  # a whole-line comment: on to the next line
            end = block.find(b"\n", position)
            position = -1 if end < 0 else block.find(b"#", end)
            continue
        if head[-1:] in (b" ", b"\t") and head.split(maxsplit=1)[0] not in OBJ_NAME_STATEMENTS:
            return True
        position = block.find(b"#", position + 1)  # inside a word ("red#2"): go on
    return False


def check_obj_faces(path: Path) -> bool:
    """MeshError (`unreadable`) for an OBJ face naming vertex 0, naming its line; whether the
    file has faces that name a vertex twice, not side by side (the comment above
    OBJ_LONG_FACE), which both readers are given split, or a comment after a statement
    (`has_inline_comment`), which both are given
    without (`rewrite_obj_block`). Regular expressions over whole-line
    blocks: only the faces of 4 or more corners are looked at one by one (1.3M triangles,
    50 MB: 0.9 s; trimesh reads it in 4.3). Corners are compared as written, so "f 1 2 3 -1",
    naming vertex 1 twice in two spellings, is not caught."""
    split = False
    with open(path, "rb") as handle:
        lines = 0
        for block in line_blocks(handle):
            joined = continued_lines(block)
            # the first line starts at a newline too; a match's start is its line's in `block`
            zeros = OBJ_ZERO_CORNER.finditer(b"\n" + block)
            zero = next((match for match in zeros if match.start() not in joined), None)
            if zero:
                line = lines + block.count(b"\n", 0, zero.start()) + 1
                raise MeshError(
                    "unreadable",
                    f"the OBJ face at line {line} "
                    "names vertex 0 (OBJ counts from 1; Blender drops the face, trimesh takes "
                    "the last vertex)",
                )
            for start, end, _ in faces_to_split(block):
                if block[start:end].rstrip(b"\r").endswith(b"\\"):  # its words run on
                    line = lines + block.count(b"\n", 0, start) + 1
                    raise MeshError(
                        "unreadable",
                        f"the OBJ face at line {line} names a vertex twice, not side by side, "
                        "and goes on on the next line (Blender and trimesh read two different "
                        "surfaces from it)",
                    )
                split = True
            if not split and has_inline_comment(block):
                split = True
            lines += block.count(b"\n")
    return split


def continued_lines(block: bytes) -> set[int]:
    """Where each line of `block` (whole lines of an OBJ) that a continued line goes on to
    starts (OBJ_CONTINUATION): Blender reads it as the statement above, so `# c \\` then
    `f 1 0 2` is one comment, no face (a face check that read it refused a file Blender reads,
    and a face split there gave the copy faces Blender never had). Empty for most blocks: a
    byte search for a backslash first."""
    if b"\\" not in block:
        return set()
    return {continuation.end() for continuation in CONTINUED.finditer(block)}


def faces_to_split(block: bytes) -> Iterator[tuple[int, int, list[bytes]]]:
    """(start, end, corner words) of each face of `block` (whole lines) that names a vertex
    twice, not side by side, and is no star (the comment above OBJ_LONG_FACE): its line's span
    in `block`, its newline excluded, and its corners (`1/2/3` words; a `#` ends the line).
    A line a continued one goes on to is no face (`continued_lines`)."""
    framed = b"\n" + block  # a match starts at the newline before its line: framed[i] = block[i-1]
    joined = continued_lines(block)
    for face in OBJ_LONG_FACE.finditer(framed):
        start = face.start()
        if start in joined:
            continue
        end = block.find(b"\n", start)
        end = len(block) if end < 0 else end
        words = block[start:end].partition(b"#")[0].split()[1:]
        vertices = [word.split(b"/")[0] for word in words]
        corners = _apart(vertices)
        if len(set(corners)) < len(corners) and not _fan_without_area(vertices):
            yield start, end, words


class _LeastEnds:
    """The least of n numbers, each set alone, over any range of their indices: a segment
    tree (log n a change, log n a query), for `face_loops`."""

    def __init__(self, count: int, value: int) -> None:
        self.size = 1 << max(count - 1, 0).bit_length()
        self.least = [value] * (2 * self.size)

    def set(self, index: int, value: int) -> None:
        index += self.size
        self.least[index] = value
        while index > 1:
            index //= 2
            self.least[index] = min(self.least[2 * index], self.least[2 * index + 1])

    def over(self, low: int, high: int, empty: int) -> int:
        """The least of the numbers at indices low..high-1 (`empty` for none)."""
        best, low, high = empty, low + self.size, high + self.size
        while low < high:
            if low & 1:
                best, low = min(best, self.least[low]), low + 1
            if high & 1:
                high -= 1
                best = min(best, self.least[high])
            low, high = low // 2, high // 2
        return best


def face_loops(words: list[bytes]) -> list[list[bytes]]:
    """The loops the corners `words` of a face are read as (the rule above OBJ_LONG_FACE), in
    order, each with no vertex twice and 3 corners or more; each corner keeps its word (its
    texture and normal indices too).

    The rule walks the face again from the corner that closed each loop, so done as written
    it takes time quadratic in the corners (a mirrored 10,000-corner face "f 1 2 .. 2 1": 4.7
    s). Done here in n log n: the corners left stay in a ring in their order, each linked to
    the next corner of its vertex round the ring (an arc); a walk from `start` stops at the
    arc that ends first, counting from `start`, among those that do not pass over it. With
    each arc's end numbered past its start (plus n when it wraps), that is the least end of
    the arcs starting at `start` or after, or, n further, of those before it (a segment tree
    of arc ends by start); a walk that would go round the whole ring meets no repeat."""
    keys = [word.split(b"/")[0] for word in words]
    kept = [i for i in range(len(keys)) if keys[i] != keys[i - 1]] or [0]  # runs as one
    corners, keys = [words[i] for i in kept], [keys[i] for i in kept]
    count = len(keys)
    after = [*range(1, count), 0]  # the ring of corners left
    before = [count - 1, *range(count - 1)]
    same_after, same_before = list(range(count)), list(range(count))  # each vertex's ring
    first: dict[bytes, int] = {}
    last: dict[bytes, int] = {}
    for corner, key in enumerate(keys):
        if key in last:
            same_after[last[key]], same_before[corner] = corner, last[key]
        first.setdefault(key, corner)
        last[key] = corner
    for key, corner in last.items():  # close each vertex's ring
        same_after[corner], same_before[first[key]] = first[key], corner
    never = 4 * count  # no arc: past any walk

    def arc_end(corner: int) -> int:
        following = same_after[corner]
        if following == corner:
            return never
        return following if following > corner else following + count

    ends = _LeastEnds(count, never)
    for corner in range(count):
        ends.set(corner, arc_end(corner))
    loops: list[list[bytes]] = []
    start = 0
    while True:
        end = min(ends.over(start, count, never), ends.over(0, start, never) + count)
        if end >= start + count:  # round the whole ring: no vertex met again
            break
        closing = end % count
        corner, loop = same_before[closing], []
        while corner != closing:
            loop.append(corner)
            corner = after[corner]
        head = loop[0]
        after[before[head]], before[closing] = closing, before[head]
        for corner in loop:  # out of the ring, and of its vertex's ring
            previous, following = same_before[corner], same_after[corner]
            same_after[previous], same_before[following] = following, previous
            ends.set(corner, never)
            if previous != corner:
                ends.set(previous, arc_end(previous))
        if len(loop) >= 3:
            loops.append([corners[corner] for corner in loop])
        start = closing
    rest, corner = [start], after[start]
    while corner != start:
        rest.append(corner)
        corner = after[corner]
    if len(rest) >= 3:
        loops.append([corners[corner] for corner in rest])
    return loops


def split_obj_faces(block: bytes) -> bytes:
    """`block` (whole lines) with each face `faces_to_split` finds replaced, in its place (its
    group and material stay its loops'), by its loops (`face_loops`), one `f` line each; a face
    with none leaves an empty line. Every other byte as it is. The one rewrite both readers'
    bytes go through (`split_obj_text`, `blender_input`)."""
    pieces, position = [], 0
    for start, end, words in faces_to_split(block):
        loops = face_loops(words)
        pieces += [block[position:start], b"\n".join(b"f " + b" ".join(c) for c in loops)]
        position = end
    pieces.append(block[position:])
    return b"".join(pieces)


def without_inline_comments(block: bytes) -> bytes:
    """`block` (whole lines of an OBJ) with each comment after a statement removed, blanks
    before it included (OBJ_INLINE_COMMENT); every line kept."""
    if b"#" not in block:
        return block
    return OBJ_INLINE_COMMENT.sub(_statement_kept, b"\n" + block)[1:]


def _statement_kept(comment: re.Match) -> bytes:
    """An OBJ_INLINE_COMMENT match's statement, and an empty line for each line the comment
    went on to."""
    return comment[1] + b"\n" * (comment[0].count(b"\n") - 1)


def rewrite_obj_block(block: bytes) -> bytes:
    """`block` as both readers are given it when `check_obj_faces` says so: comments after
    statements removed, then faces split (`split_obj_faces`)."""
    return split_obj_faces(without_inline_comments(block))


def split_obj_text(path: Path) -> bytes:
    """The OBJ at `path` as trimesh is given it when `check_obj_faces` says it is rewritten:
    all its bytes, each block through `rewrite_obj_block`."""
    with open(path, "rb") as handle:
        return b"".join(rewrite_obj_block(block) for block in line_blocks(handle))


# trimesh reads a group whose face lines all hold as many numbers as its first one by reshaping
# them, as though every corner were laid out as the first line's are: a face whose corners carry
# different indices ("f 1/1 2//1 3", as exporters write where a UV is missing) was read as the
# triangle (1, 1, 2), and so was a square "f 1/1/1 2/1/1 5/1" after "f 1/1 2/1 3/1 4/1" (8
# numbers each). Blender reads each corner by its own slashes. Where the corners of a file are
# not all laid out alike, trimesh is given them cut to their vertex index (OBJ_CORNER_TAIL:
# "12/5/7" is "12"): the fast path reads no UVs, so its geometry is the same, read right.
OBJ_FACE_LINE = re.compile(rb"(?m)^[ \t]*f[ \t][^\n]*")
OBJ_CORNER_TAIL = re.compile(rb"([ \t][-+]?\d+)/[^ \t\r\n]*")  # after a blank and the index
TABS_AS_BLANKS = bytes.maketrans(b"\t", b" ")


def corner_layouts(text: bytes) -> set[bytes]:
    """How the face corners of an OBJ's `text` are laid out, each with its numbers deleted:
    "" a vertex index alone, "/" with a texture index, "/x/" with a normal, "//" with both.
    Byte translations and one search for the face lines (0.2 s on a 23 MB OBJ, a third of
    cutting its corners); a blank more between two corners reads as a corner "": cut then."""
    marked = text.replace(b"//", b"/x/").translate(TABS_AS_BLANKS, b"0123456789+-\r")
    lines = set(OBJ_FACE_LINE.findall(marked))
    return {corner for line in lines for corner in line.lstrip().split(b" ")[1:]}


def vertex_corners(block: bytes) -> bytes:
    """Whole lines of an OBJ with each face corner cut to its vertex index (OBJ_CORNER_TAIL),
    for a file whose corners are not all laid out alike (`corner_layouts`). Names and comments
    stay but for a blank, a number and a slash in them ("o part 1/2"), which decide no surface."""
    return OBJ_CORNER_TAIL.sub(rb"\1", block)


# trimesh's OBJ reader finds a statement only at a line's start and followed by a space: an
# indented line ("  f 1 2 3", "\tv 0 0 0") or a tab after its keyword ("v\t0 0 0") was skipped
# (a box whose every other face was indented read as half a box; indented vertices, as "a face
# refers to a vertex that does not exist"), where Blender reads every one. (Continued lines
# are joined before: `_trimesh_obj_block`.)
OBJ_INDENT = re.compile(rb"\n +")


def trimesh_obj_text(text: bytes) -> bytes:
    """An OBJ's `text` as trimesh is given it, to read the surface Blender reads: without a
    byte-order mark (UTF8_BOM), continued lines joined (CONTINUED), tabs as blanks, statements
    unindented (OBJ_INDENT), face corners cut to their vertex where they are not all laid out
    alike (`vertex_corners`).
    Byte searches first: a file that needs none of it is not copied. One that does is rewritten
    in blocks of whole lines (`line_blocks`): a substitution over the whole text held a piece
    per match besides it (3 a face), several times the text of a large OBJ."""
    text = text.removeprefix(UTF8_BOM)
    cut = len(corner_layouts(text)) > 1
    plain = b"\t" not in text and text[:1] != b" " and b"\n " not in text
    continued = b"\\" in text and CONTINUED.search(text) is not None  # a byte search first
    if not cut and plain and not continued:
        return text
    with io.BytesIO(text) as handle:
        return b"".join(_trimesh_obj_block(block, cut) for block in line_blocks(handle, COPY_BLOCK))


def _trimesh_obj_block(block: bytes, cut: bool) -> bytes:
    """Whole lines of an OBJ as `trimesh_obj_text` gives them (a block starts a line)."""
    # continued lines joined as Blender joins them: trimesh joins only a backslash at the line's
    # very end, with nothing for it ("v 1\" then "2 3" was "v 12 3"), so "# c \ " then "v 9 9 9"
    # was a vertex to trimesh alone, and each face after it named another vertex than Blender's
    block = CONTINUED.sub(b"  ", block)
    block = OBJ_INDENT.sub(b"\n", b"\n" + block.replace(b"\t", b" "))[1:]
    return vertex_corners(block) if cut else block


def _fan_without_area(corners: list[bytes]) -> bool:
    """Whether every triangle of the fan from the first corner (trimesh's reading) names a
    vertex twice: then every edge of the face meets that corner or repeats one, an outline
    that encloses nothing, so Blender reads no surface from it either."""
    first = corners[0]
    return all(first in (a, b) or a == b for a, b in pairwise(corners[1:]))


def _apart(corners: list[bytes]) -> list[bytes]:
    """`corners` with each run of one vertex side by side (the last and first are side by side
    too) taken as one corner."""
    kept = [corner for number, corner in enumerate(corners) if corner != corners[number - 1]]
    return kept or corners[:1]


# OFF's keyword (Geomview): [ST][C][N][4][n]OFF, then the counts, on its line or the next, even
# with no blank between ("OFF490 518 0": thousands of ModelNet files). trimesh reads every one
# of them by the first 3 numbers of a vertex row: right, but for 4OFF and nOFF (4-D, n-D).
OFF_KEYWORD = re.compile(rb"(?:ST)?C?N?C?(?P<dimension>4?n?)OFF")


def off_rows(path: Path) -> Iterator[list[bytes]]:
    """The words of an OFF's rows as trimesh reads them: lines split at a CR too (an OFF of
    classic Mac OS line ends is read), `#` comments gone, blank lines skipped."""
    with open(path, "rb") as handle:
        for line in (part for physical in handle for part in physical.split(b"\r")):
            words = line.partition(b"#")[0].split()
            if words:
                yield words


def off_header(rows: Iterator[list[bytes]]) -> tuple[int, int] | None:
    """The vertex and face counts of an OFF whose rows are `rows` (read up to them), or None
    for a header that does not parse (left to trimesh's own message). MeshError for a
    keyword in lower case, and `unsupported_format` for 4OFF and nOFF (OFF_KEYWORD)."""
    words = next(rows, None)
    keyword = OFF_KEYWORD.match(words[0]) if words else None
    if keyword is None:
        if words and _lower_case_keyword(words[0]):
            # trimesh looks for "OFF" in capitals: "not enough values to unpack", said nothing
            raise MeshError(
                "unreadable",
                f"its keyword is {words[0].decode('ascii', 'replace')!r} in lower case: an "
                "OFF begins with OFF in capitals, as readers expect (write it so)",
            )
        return None
    if keyword["dimension"]:
        raise MeshError(
            "unsupported_format",
            f"{keyword[0].decode()}: an OFF whose vertices have 4 or n coordinates, not "
            "read here (trimesh would take the first 3 or fail)",
        )
    # the counts on the keyword's line ("OFF 8 6 0", even "OFF8 6 0") or the next
    counts = [word for word in [words[0][keyword.end() :], *words[1:]] if word]
    if not counts:
        counts = next(rows, [])
    try:
        return int(counts[0]), int(counts[1])
    except (IndexError, ValueError):
        return None


def _lower_case_keyword(word: bytes) -> bool:
    """Whether `word` is an OFF keyword (its counts joined to it perhaps) not in capitals."""
    upper = word.upper()
    keyword = OFF_KEYWORD.match(upper)
    return keyword is not None and (keyword.end() == len(upper) or upper[keyword.end() :].isdigit())


def check_off_counts(path: Path) -> bool:
    """MeshError (`unreadable`) for an OFF holding fewer rows than its header's vertex and face
    counts. trimesh reads the rows there are: an OFF cut at a line break was a partial mesh
    marked ok (cut mid-line, "setting an array element with a sequence"); so was a NOFF, STOFF
    or CNOFF cut short, whose keyword went unrecognised here. Rows are counted as trimesh reads
    them (`off_rows`); a header that does not parse is left to trimesh's own message.
    `off_header` refuses a lower-case keyword, 4OFF and nOFF. True when a face has 5 or more
    corners: trimesh fails on such a face among faces of another size (UFuncTypeError: it fans
    the words unconverted), so it is given the faces fanned (`fanned_off_text`)."""
    rows = off_rows(path)
    declared = off_header(rows)
    if declared is None:
        return False
    held, polygons = 0, False
    for words in rows:
        held += 1
        if held > declared[0] and not polygons:  # a face row: its corner count first
            polygons = words[0].isdigit() and int(words[0]) > 4
    if held < sum(declared):
        raise MeshError(
            "unreadable",
            f"truncated: the OFF header declares {declared[0]} vertices and {declared[1]} "
            f"faces ({sum(declared)} rows), the file holds {held}",
        )
    return polygons


def fanned_off_text(path: Path) -> bytes:
    """An OFF's text for trimesh with every face a triangle, in trimesh's own reading of it
    (`triangulate_quads`): the triangles, then each quad's 0-1-2 triangles and its 2-3-0 ones,
    then the fans from the first corner of the faces of 5 or more corners; a face of fewer
    than 3 corners dropped. Only for an OFF `check_off_counts` passed with such faces."""
    rows = off_rows(path)
    vertices, faces = off_header(rows)
    vertex_rows = [b" ".join(next(rows)[:3]) for _ in range(vertices)]
    triangles, quads, fans = [], [], []
    for number in range(faces):
        words = next(rows)
        if not words[0].isdigit():
            raise MeshError("unreadable", f"OFF face {number} does not begin with its corner count")
        corners = words[1 : int(words[0]) + 1]
        if len(corners) == 3:
            triangles.append(corners)
        elif len(corners) == 4:
            quads.append(corners)
        elif len(corners) > 4:
            fans.extend([corners[0], *pair] for pair in pairwise(corners[1:]))
    quads = [[a, b, c] for a, b, c, _ in quads] + [[c, d, a] for a, _, c, d in quads]
    faces = [b"3 " + b" ".join(face) for face in (*triangles, *quads, *fans)]
    return b"\n".join([b"OFF", b"%d %d 0" % (vertices, len(faces)), *vertex_rows, *faces, b""])


# Bytes no ASCII STL holds (text: printable, tabs, line breaks) and every binary one does in its
# first STL_TEXT_PROBE bytes: the top byte of a triangle count below 2^24 is a NUL.
STL_BINARY_BYTE = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
STL_TEXT_PROBE = 512


def _ascii_stl(head: bytes) -> bool:
    """Whether an STL's first bytes are an ASCII one's: text starting "solid" (after a UTF-8
    byte-order mark, if any), with no byte text never holds (STL_BINARY_BYTE)."""
    text = head.removeprefix(UTF8_BOM)
    return text.lstrip()[:5].lower() == b"solid" and not STL_BINARY_BYTE.search(text)


def check_stl_count(path: Path) -> None:
    """MeshError (`unreadable`) for a binary STL whose triangle count disagrees with its size
    (84 + 50 bytes a triangle): readers then take it for ASCII text, and the row said only
    "the file holds no geometry". Binary is told from ASCII by its bytes, not by the header's
    first word: many CAD exporters begin a binary STL's header with "solid" (both readers
    read such a file as binary only when its size is exact; cut short, it was "empty")."""
    with open(path, "rb") as handle:
        head = handle.read(STL_TEXT_PROBE)
        size = os.fstat(handle.fileno()).st_size
    if _ascii_stl(head):
        return
    if len(head) < 84:
        raise MeshError("unreadable", f"a binary STL of {size} bytes, shorter than its header")
    (count,) = struct.unpack_from("<I", head, 80)
    if 84 + 50 * count > size:
        raise MeshError(
            "unreadable",
            f"truncated: the binary STL header declares {count} triangles ({84 + 50 * count} "
            f"bytes), the file holds {size} bytes ({(size - 84) // 50} triangles)",
        )
    if 84 + 50 * count != size:
        raise MeshError(
            "unreadable",
            f"a binary STL whose header declares {count} triangles ({84 + 50 * count} bytes) "
            f"in {size} bytes",
        )


def _ply_header(handle: BinaryIO) -> tuple[str, list[_PlyElement]]:
    form, elements = "", []
    while True:
        line = handle.readline(MAX_PLY_HEADER)
        if not line or handle.tell() > MAX_PLY_HEADER:
            raise MeshError("unreadable", "a PLY header with no end_header")
        words = line.decode("ascii", "replace").split()
        if not words or words[0] in ("ply", "comment", "obj_info"):
            continue
        if words[0] == "end_header":
            return form, elements
        try:
            if words[0] == "format":
                form = words[1]
            elif words[0] == "element":
                elements.append(_PlyElement(words[1], int(words[2]), []))
                if elements[-1].count < 0:
                    raise ValueError
            elif words[0] == "property" and words[1] == "list":
                elements[-1].properties.append((words[4], words[2], words[3]))
            elif words[0] == "property":
                elements[-1].properties.append((words[2], words[1], None))
        except (IndexError, ValueError):
            raise MeshError("unreadable", f"a malformed PLY header line: {line[:60]!r}") from None


def _too_few(number: int, count: int) -> MeshError:
    return MeshError(
        "unreadable",
        f"PLY face {number} has {count} corners (a face needs 3 or more; readers would disagree)",
    )


def _truncated(element: _PlyElement, held: int | None) -> MeshError:
    """The file ends before the `element` rows its header declares (`held` of them whole,
    where known)."""
    where = f"ends in {element.name} {held}" if held is not None else "ends before they do"
    return MeshError(
        "unreadable",
        f"truncated: the PLY header declares {element.count} {element.name} records, the file "
        + where,
    )


def _blank_row(element: _PlyElement, number: int) -> MeshError:
    """A blank line where an ASCII PLY's row `number` of `element` should be: rows are read a
    line each here (it said "PLY face 0 has 1 corners" of a file with blank lines between its
    vertex rows), and trimesh fails on one ("index 0 is out of bounds")."""
    return MeshError(
        "unreadable",
        f"a blank line where the ASCII PLY's {element.name} row {number} should be (its rows "
        "are one a line)",
    )


def _ascii_faces(handle: BinaryIO, element: _PlyElement) -> None:
    for number in range(element.count):
        line = handle.readline()
        if line and not line.strip():
            raise _blank_row(element, number)
        tokens = line.split()
        expected = 0  # the values the row must hold, by its properties and list counts
        for _, _, item in element.properties:
            if item is None:
                expected += 1
                continue
            try:
                count = int(float(tokens[expected]))
            except (IndexError, ValueError):
                raise MeshError("unreadable", f"PLY face {number}: no list count") from None
            if count < 3:
                raise _too_few(number, count)
            expected += 1 + count
        if expected != len(tokens):
            raise MeshError(
                "unreadable",
                f"PLY face {number} holds {len(tokens)} values where its counts say {expected} "
                "(readers would disagree on it)",
            )


def _skip_binary(handle: BinaryIO, element: _PlyElement, order: str) -> None:
    if all(item is None for _, _, item in element.properties):
        size = sum(struct.calcsize(PLY_TYPES.get(kind, "i")) for _, kind, _ in element.properties)
        handle.seek(size * element.count, os.SEEK_CUR)
        return
    for _ in range(element.count):
        _binary_record(handle, element, order, None)


def _binary_faces(handle: BinaryIO, element: _PlyElement, order: str, size: int) -> None:
    """Every face's counts: at once when all faces are one list of the same count (the usual
    all-triangle file), else record by record."""
    if len(element.properties) == 1 and element.properties[0][2] is not None and element.count:
        _, kind, item = element.properties[0]
        start = handle.tell()
        first = handle.read(struct.calcsize(PLY_TYPES.get(kind, "i")))
        handle.seek(start)
        if kind in PLY_TYPES and item in PLY_TYPES and first:
            (count,) = struct.unpack(order + PLY_TYPES[kind], first)
            sizes = struct.calcsize(PLY_TYPES[kind]), struct.calcsize(PLY_TYPES[item])
            needed = (sizes[0] + count * sizes[1]) * element.count
            # read only what the file can hold (a read allocates what it asks for first); a
            # count past that (2^32-1) is no dtype numpy makes: the records below name it
            if 0 < needed <= size - start:
                record = np.dtype(
                    [("n", order + PLY_TYPES[kind]), ("i", order + PLY_TYPES[item], (count,))]
                )
                data = handle.read(needed)
                counts = np.frombuffer(data, record)["n"]
                if count >= 3 and (counts == count).all():
                    return
            handle.seek(start)
    for number in range(element.count):
        _binary_record(handle, element, order, number)


def _binary_record(handle: BinaryIO, element: _PlyElement, order: str, face: int | None) -> None:
    """Read past one binary record; with `face` (its number), check its lists' counts."""
    try:
        for _, kind, item in element.properties:
            if item is None:
                handle.seek(struct.calcsize(PLY_TYPES[kind]), os.SEEK_CUR)
                continue
            code = PLY_TYPES[kind]
            read = handle.read(struct.calcsize(code))
            if len(read) < struct.calcsize(code):
                raise _truncated(element, face)  # the file ends inside this record
            (count,) = struct.unpack(order + code, read)
            if face is not None and count < 3:
                raise _too_few(face, count)
            size = count * struct.calcsize(PLY_TYPES[item])
            if len(handle.read(size)) != size:
                what = f"PLY face {face}" if face is not None else f"a PLY {element.name} record"
                raise MeshError(  # a count can lie as well as a file be cut short
                    "unreadable",
                    f"{what} runs past the file's end: its list count ({count}) overruns it, "
                    f"or the file is truncated (its header declares {element.count} "
                    f"{element.name} records)",
                )
    except KeyError:
        what = f"PLY face {face}" if face is not None else f"a PLY {element.name} record"
        raise MeshError("unreadable", f"{what} is of an unknown type") from None


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
        raise MeshError("unreadable", FACE_OUT_OF_RANGE)
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
        raise MeshError(
            "outside_root", f"{_named(reference)} resolves outside the source root"
        ) from None
    except ValueError:  # a NUL byte (as a %00 in a URI): no file has that name
        missing = "holds a NUL byte: it names no file"
    else:
        missing = why_not_a_file(target)
        if required and not missing and (said := file_stand_in(target)):
            # a glTF buffer in a clone without `git lfs pull`: its pointer's 130 bytes were
            # read as vertices (a small mesh passed as ok), or failed a size check
            missing = f"is {said}"
    if missing:
        if required:
            raise MeshError(
                "missing_file", f"{_named(reference)} (referenced by the file) {missing}"
            )
        return None
    return target


def _named(reference: str) -> str:
    """`reference` as a failure row says it: as written, or quoted and cut when it holds
    control characters or is too long for a line."""
    return reference if reference.isprintable() and len(reference) <= 120 else shown_name(reference)


def gltf_document(path: Path) -> dict:
    """The JSON document of a .gltf or .glb file (of a .glb, only its JSON chunk is read);
    MeshError when it does not parse."""
    with open(path, "rb") as handle:
        return _read_gltf_json(handle)[1]


def _read_gltf_json(handle: BinaryIO) -> tuple[bytes, dict]:
    """(the bytes read, the JSON document) of a .gltf or .glb file open at its start: all of a
    .gltf; of a .glb its 20-byte header and JSON chunk, the handle left where the next chunk
    starts. MeshError when it does not parse."""
    text = b""  # for the reason, when the header itself fails
    try:
        head = handle.read(20)
        if head[:4] == b"glTF":
            _check_glb_length(head, os.fstat(handle.fileno()).st_size)
            length, kind = struct.unpack_from("<II", head, 12)
            if kind != 0x4E4F534A:
                raise ValueError("the first GLB chunk is not JSON")
            text = handle.read(length)
            read = head + text
        else:
            read = text = head + handle.read()
        document = loads_json(text)  # nested too deep: a ValueError like other bad JSON
    except (ValueError, struct.error, UnicodeDecodeError) as error:
        raise MeshError(
            "unreadable", _json_nul_ended(head, text) or f"not a glTF document: {error}"
        ) from error
    if not isinstance(document, dict):
        raise MeshError("unreadable", "not a glTF document: the JSON is not an object")
    if "asset" not in document and (said := ERROR_ANSWER_KEYS & document.keys()):
        # GitHub's API answers {"message": "Not Found"}: it was "the file holds no meshes"
        raise MeshError(
            "unreadable",
            f"not a glTF document but an error answer (no 'asset'; its {sorted(said)[0]!r}: "
            f"{shown_name(str(document[sorted(said)[0]]), 80)}): a download saved the "
            "server's answer under the file's name; download it again",
        )
    return read, document


# The keys of the JSON errors servers answer with, which a glTF document (it needs `asset`)
# never holds alone.
ERROR_ANSWER_KEYS = {"message", "error", "errors", "detail", "code"}


def _json_nul_ended(head: bytes, text: bytes) -> str:
    """The reason for a GLB whose JSON chunk does not parse and ends in NUL bytes ("" for any
    other failure). Where the text before them parses, the chunk was padded with NULs where the
    spec pads with spaces (some exporters do): Blender 5.0's importer ("Bad glTF: json error:
    Extra data") and trimesh 4.x refuse it too, so it stays refused, named, rather than read one
    way here and another there. Where it does not parse either: a copy cut short inside the
    JSON into a preallocated file."""
    if head[:4] != b"glTF":
        return ""
    zeros = len(text) - len(text.rstrip(b"\0"))
    if not zeros:
        return ""
    try:
        loads_json(text.rstrip(b"\0"))
    except (ValueError, UnicodeDecodeError):
        if zeros <= 3:  # the most padding a chunk has: a text that fails before it is broken
            return ""
        return (
            f"truncated and zero-filled: the GLB's JSON chunk ends in {zeros} zero bytes, its "
            "text stopping mid-document before them, as a download cut short into a "
            "preallocated file leaves"
        )
    return (
        f"its JSON chunk is padded with {zeros} NUL bytes, not spaces as the glTF spec pads it "
        "(Blender's and trimesh's importers refuse it too: re-export it)"
    )


def _check_glb_length(head: bytes, size: int) -> None:
    """MeshError (`unreadable`) for a GLB shorter than its 12-byte header says (bytes 8-12: the
    whole file's length). A download cut short keeps its header: trimesh said only "chunk was
    not expected length!", and the structural check passed a GLB cut at half as ok (its
    BIN chunk's declared length was taken for the bytes it holds)."""
    declared, json_length = struct.unpack_from("<II", head, 8)  # a header cut short: struct.error
    if declared > size:
        raise MeshError(
            "unreadable",
            f"truncated: the GLB header says {declared} bytes, the file holds {size}",
        )
    if 20 + json_length > size:  # read whole, it would be allocated before it is found short
        raise MeshError(
            "unreadable",
            f"the GLB's JSON chunk declares {json_length} bytes, past the file's end ({size})",
        )


# OBJ and MTL references as Blender 5's importer reads them (found by trying it,
# tests/render/test_references.py): a statement may be indented by spaces or tabs; an OBJ line
# ending in a backslash goes on on the next line; `mtllib` names one file, the rest of the line
# with quotes removed; a texture map statement's options (`-bm 1`, `-o u v w`...) come before
# its file name, which is the rest of the line (`map_Kd x.png -bm 1` names "x.png -bm 1").
# Options and how many values each takes at most (-o/-s/-t take 1 to 3 numbers).
TEXTURE_OPTIONS = {
    "-o": 3,
    "-s": 3,
    "-t": 3,
    "-mm": 2,
    "-bm": 1,
    "-boost": 1,
    "-texres": 1,
    "-clamp": 1,
    "-blendu": 1,
    "-blendv": 1,
    "-cc": 1,
    "-imfchan": 1,
    "-type": 1,
}
COPY_BLOCK = 1 << 20
NAMING_KEYWORDS = ("usemtl", "o", "g")  # OBJ statements whose argument is a free name
TEXTURE_KEYWORDS = ("bump", "disp", "decal", "refl", "norm")  # and every map_*
# The MTL statements Blender's copy keeps as they are: colours and factors, never a file name.
MTL_VALUE_KEYWORDS = {
    "newmtl", "Ka", "Kd", "Ks", "Ke", "Ns", "Ni", "d", "Tr", "Tf", "illum",
    "Pr", "Pm", "Ps", "Pc", "Pcr", "aniso", "anisor", "sharpness",
}  # fmt: skip


# How the names in an OBJ or MTL (a library, a texture, a material) are decoded: bytes that are
# not UTF-8 (a Latin-1 "café.mtl" from a Windows tool) as lone surrogates, which name the very
# file on disk again and are written back as the same bytes. Blender reads names as bytes and
# found that library; decoded with U+FFFD it was "missing", so Blender's copy had no material.
NAME_BYTES = "surrogateescape"


def _mtl_lines(mtl: Path) -> list[str]:
    """The lines of the MTL file `mtl`, its names decoded as NAME_BYTES says, without a UTF-8
    byte-order mark: before `newmtl`, it hid the first material from Blender's importer (the
    author's red drawn as its default grey); Blender's copy of the MTL is written without it."""
    return mtl.read_text(encoding="utf-8", errors=NAME_BYTES).removeprefix("\ufeff").splitlines()


def _continued(line: bytes) -> bool:
    """Whether the physical OBJ `line` (its line end included) goes on on the next."""
    return line.endswith(b"\n") and line[:-1].rstrip(b" \t\r").endswith(b"\\")


def obj_statements(handle: BinaryIO) -> Iterator[tuple[list[bytes], str]]:
    """An OBJ's logical lines: (the physical lines, backslash continuations joined, the text)."""
    lines: list[bytes] = []
    for line in handle:
        lines.append(line)
        if _continued(line):
            continue
        *parts, last = lines
        text = b"".join(part.rstrip(b" \t\r\n").removesuffix(b"\\") for part in parts)
        text += last.rstrip(b"\r\n")
        yield lines, text.decode(errors=NAME_BYTES)
        lines = []
    if lines:
        yield lines, b"".join(lines).decode(errors=NAME_BYTES)


def line_blocks(handle: BinaryIO, size: int = 16 * COPY_BLOCK) -> Iterator[bytes]:
    """An OBJ's bytes in blocks of about `size` that end where a logical line ends."""
    carry = b""
    while chunk := handle.read(size):
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        while cut and _continued(data[:cut]):  # inside a continued line
            cut = data.rfind(b"\n", 0, cut - 1) + 1
        carry = data[cut:]
        if cut:
            yield data[:cut]
    if carry:
        yield carry


def mtllib_statements(block: bytes) -> Iterator[tuple[int, int, str]]:
    """(start, end, text) of each logical line of `block` (whole lines of an OBJ) that mentions
    `mtllib` in any case. Byte searches, no loop over the lines: a large OBJ names its
    libraries once or twice, and continued lines are rare (then the lines are walked)."""
    if not CONTINUED.search(block):
        lowered = block.lower()
        position = 0
        while (found := lowered.find(b"mtllib", position)) >= 0:
            start = block.rfind(b"\n", 0, found) + 1
            end = block.find(b"\n", found) + 1 or len(block)
            yield start, end, block[start:end].decode(errors=NAME_BYTES)
            position = end
        return
    offset = 0
    for lines, text in obj_statements(io.BytesIO(block)):
        size = sum(map(len, lines))
        if "mtllib" in text.lower():
            yield offset, offset + size, text
        offset += size


def _argument(text: str, keyword: str) -> str | None:
    """The rest of the statement `text` after `keyword` (quotes removed), or None if `text` is
    not that statement."""
    words = text.split(maxsplit=1)
    if not words or words[0] != keyword:
        return None
    return words[1].strip().replace('"', "") if len(words) > 1 else ""


def obj_material_libraries(path: Path) -> list[str]:
    """The MTL file names of an OBJ's `mtllib` statements, as Blender reads them: the rest of
    the line, a `#` after a blank included. Blender 5.0.1 reads "mtllib a b #2.mtl" as the
    file "a b #2.mtl", and "mtllib m.mtl # ours" as "m.mtl # ours" (which it reports missing,
    then falls back on `<stem>.mtl`: `read_material_libraries`). A byte-order mark before
    the first line is no part of its statement (Blender's copy drops it: `_obj_copy`); read
    with it, "\ufeffmtllib" named no library, so Blender's copy had none and the object came
    out the importer's grey, with nothing listed as missing."""
    with open(path, "rb") as handle:
        if handle.read(len(UTF8_BOM)) != UTF8_BOM:
            handle.seek(0)
        names = [
            _argument(text, "mtllib")
            for block in line_blocks(handle)
            for _, _, text in mtllib_statements(block)
        ]
    return [name for name in names if name]


def read_material_libraries(path: Path) -> list[str]:
    """The MTL file names Blender's importer reads for the OBJ `path`, in its order: the
    `mtllib` ones, then `<stem>.mtl` beside the OBJ when that file exists and is not named
    already (Blender's own rule, after the old Python importer: files written by Windows tools
    name `Chair.MTL` beside a `chair.mtl`, or no library at all). The last library to define
    a material gives it (Blender 5.0), so that default one wins over the named ones."""
    names = obj_material_libraries(path)
    default = Path(path).with_suffix(".mtl").name
    if default not in names and (Path(path).parent / default).exists():
        names.append(default)
    return names


def texture_map(line: str) -> tuple[str, list[str], str] | None:
    """(keyword, options, file name) of an MTL texture map statement, else None."""
    words = line.split()
    if not words:
        return None
    keyword = words[0]
    if not (keyword.lower().startswith("map_") or keyword.lower() in TEXTURE_KEYWORDS):
        return None
    rest = line.strip()[len(keyword) :].strip()
    options: list[str] = []
    while rest.startswith("-"):
        option, _, rest = rest.partition(" ")
        if option not in TEXTURE_OPTIONS:
            break  # a file name that starts with "-"
        options.append(option)
        for _ in range(TEXTURE_OPTIONS[option]):
            value, _, after = rest.strip().partition(" ")
            if not value or (TEXTURE_OPTIONS[option] > 1 and not is_number(value)):
                break
            options.append(value)
            rest = after
        rest = rest.strip()
    return keyword, options, rest.replace('"', "")


def _mtl_maps(mtl: Path) -> list[str]:
    """The texture files an MTL names (`map_Kd`, `bump`, `disp`, `norm`, ...)."""
    maps = (texture_map(line) for line in _mtl_lines(mtl))
    return [found[2] for found in maps if found and found[2]]


def defined_materials(copy: Path) -> dict[str, bool]:
    """The material names the MTL libraries of Blender's OBJ copy (`blender_input`) define,
    each with whether it states `Kd` (numbers, not `Kd spectral`/`xyz`). A `usemtl` naming none
    of them (its library missing, or a name no library has) makes Blender's importer invent a
    default material, whose colour is nobody's. Kd is the author's colour under a missing
    `map_Kd` (MTL multiplies the map by it); without Kd that colour is the importer's 0.8."""
    states_kd: dict[str, bool] = {}
    for library in obj_material_libraries(copy):  # the copy names its resolved MTLs only
        name = None
        for line in _mtl_lines(copy.parent / library):
            words = line.split(maxsplit=1)
            if len(words) == 2 and words[0] == "newmtl":
                name = words[1].strip()
                states_kd.setdefault(name, False)
            elif name is not None and len(words) == 2 and words[0] == "Kd":
                states_kd[name] = states_kd[name] or is_number(words[1].split()[0])
    return states_kd


def references(path: Path, root: Path) -> tuple[list[Path], list[str]]:
    """(the files `path` makes an importer read, each resolved and checked inside `root`; the
    optional ones it names that are missing: an OBJ's `mtllib` files and their texture maps, a
    glTF's images, each as the file writes it, a texture as its MTL does). The object is read
    without the missing ones (Kd or baseColorFactor colours it, else no colour), so the meshes
    stage lists them in the manifest (`missing`), as it does one that is a Git LFS or git-annex
    pointer (`files.stand_in`) or a server's page saved under its name, and a texture Blender
    is not given: one declaring too many pixels (`texture_file`) or a KTX2 image without a
    fallback (`basisu_only_images`). One stat each, which the check of the files that exist
    needs anyway, a read of each file's first KB (`files.stand_in`), an image's header and
    its structure (a PNG's chunk lengths, a JPEG's end marker: `images.truncation`): no pixel
    is decoded."""
    path, suffix = Path(path), Path(path).suffix.lower()
    base = real_path(path).parent
    found: list[Path] = []
    missing: list[str] = []

    def reference(name: str, file: Path | None, image: bool = False) -> Path | None:
        # A texture or MTL that is a Git LFS or git-annex pointer, or a server's HTML page or
        # XML error saved under its name, counts as missing, said so: Blender rendered the
        # object untextured without a word. Its first KB is read whatever its size (a page is
        # any size: only files under 1 KB were read, and a 5 KB 404 page passed as an image).
        # Of an image, the header is read too: one Blender would not be given
        # (`texture_file`) is missing.
        said = file_stand_in(file) if file is not None else ""
        if image and file is not None and not said:
            said = texture_refusal(file)
        if file is None or said:
            missing.append(f"{_named(name)} ({said})" if said else _named(name))
            return None
        found.append(file)
        return file

    if suffix == ".obj":
        for name in read_material_libraries(real_path(path)):
            mtl = reference(name, resolve_reference(root, base, name, required=False))
            if mtl is not None:
                for texture in _mtl_maps(mtl):
                    reference(texture, mtl_texture(root, mtl, texture), image=True)
    elif suffix in GLTF_SUFFIXES:
        document = gltf_document(path)
        for kind, _, name, file in _gltf_references(document, base, root):
            reference(name, file, image=kind == "images")
        missing += [f"{name} ({KTX2_UNREAD})" for name in basisu_only_images(document).values()]
        oversized = oversized_embedded_images(document, real_path(path), root).items()
        missing += [f"image {index} ({why})" for index, why in oversized]
    return found, list(dict.fromkeys(missing))  # a texture two materials name: said once


def mtl_texture(root: Path, mtl: Path, name: str) -> Path | None:
    """The file the texture map `name` of the MTL `mtl` names, as Blender's importer finds it
    (checked with Blender 5.0 on Linux): backslashes read as slashes (`tex\\wood.png`, as
    Windows exporters write it), else the file of that base name beside the MTL (a Windows
    tool's `C:\\Users\\me\\wood.png`); None when neither is there. Each inside `root`
    (`resolve_reference`: MeshError `outside_root` for one that escapes)."""
    written = name.replace("\\", "/")
    file = resolve_reference(root, mtl.parent, written, required=False)
    folder, _, base_name = written.rpartition("/")
    if file is None and folder and base_name:
        file = resolve_reference(root, mtl.parent, base_name, required=False)
    return file


def _gltf_references(
    document: dict, base: Path, root: Path
) -> Iterator[tuple[str, dict, str, Path | None]]:
    """(its kind, "buffers" or "images"; the item; its URI as Blender reads it; the file, or
    None for a missing image) of each buffer and image of a glTF document naming a file;
    MeshError for one outside `root` or a missing buffer. Blender's importer turns backslashes into slashes and unquotes the URI."""
    for kind in ("buffers", "images"):
        for item in document.get(kind, []):
            uri = item.get("uri") if isinstance(item, dict) else None
            if isinstance(uri, str) and not uri.startswith("data:"):
                name = unquote(uri.replace("\\", "/"))
                yield kind, item, name, resolve_reference(root, base, name, kind == "buffers")


# Check, then use: what the sample and render stages open is checked when they open it.


def lone_file_root(path: Path) -> Path:
    """The root of a file read on its own (given to classify or the demo, not listed by the
    meshes stage): the folder it resolves into, so it and what it references stay there."""
    return Path(path).resolve().parent


def listed_file(path: Path, root: Path, sha256: str = "") -> Path:
    """The file a manifest row lists, checked at read time: resolved now (symlinks followed)
    inside `root`, and, when the row has one, with the sha256 the meshes stage recorded.
    MeshError `changed_since_listed` otherwise (a file swapped for a symlink to the outside, or
    rewritten, after `cg3d meshes`). Returns the resolved path: the one to open."""
    path = Path(path)
    resolved = real_path(path)  # a symlink loop stays itself: reading it says ELOOP
    if not resolved.is_relative_to(Path(root).resolve()):
        raise MeshError(
            "changed_since_listed", f"{path} now resolves to {resolved}, outside the source root"
        )
    if sha256 and _sha256(resolved) != sha256:
        raise MeshError("changed_since_listed", f"{path} is not the file the manifest lists")
    return resolved


def listed_references(
    path: Path, root: Path, sha256: str, listed_sha256: str, listed_missing: list[str]
) -> None:
    """The files `path` makes an importer read (`references`), checked at read time against
    its manifest row: one deleted after `cg3d meshes` (an MTL, a texture, a .bin) was read as
    absent with no row saying so, and one rewritten was read under the listed chunk key.
    MeshError `changed_since_listed` naming a file now missing that was not, or for a hash that
    differs from `references_sha256`; the mesh's own (`listed_file` against `sha256`) when
    the mesh itself changed; naming a file listed missing that is there now, where the row
    found none (its `references_sha256` is "": the hash cannot tell). A row that listed no
    file, found or missing (also a manifest older than the column), is not checked: an
    Objaverse .glb costs nothing. The rest: a parse of the file's references, a stat and
    header read of each, and a hash of each (`versioned_sha256`: once per process while
    unchanged)."""
    if not listed_sha256 and not listed_missing:
        return
    try:
        _same_references(path, root, listed_sha256, listed_missing)
    except MeshError:
        listed_file(path, root, sha256)  # the mesh rewritten or gone: that is the cause to name
        raise


def _same_references(path: Path, root: Path, listed_sha256: str, listed_missing: list[str]) -> None:
    try:
        found, missing = references(path, root)
        digest = references_sha256(found)
    except OSError as error:  # raised from it: a full or network disk still stops the stage
        raise MeshError(
            "unreadable", f"cannot read {error.filename or path}: {error.strerror or error}"
        ) from error
    gone = [name for name in missing if name not in listed_missing]
    if gone:
        raise MeshError(
            "changed_since_listed",
            f"{', '.join(gone)}, referenced by {Path(path).name}, is missing since "
            "`cg3d meshes` listed it: restore it, or run `cg3d meshes` again",
        )
    came = [name for name in listed_missing if name not in missing]
    if not listed_sha256:  # the row found none (or its manifest is older than the column)
        if came and digest:  # read now, under the chunk key of the object without it
            raise MeshError(
                "changed_since_listed",
                f"{', '.join(came)}, referenced by {Path(path).name}, was listed missing by "
                "`cg3d meshes` and is there now: run `cg3d meshes` again",
            )
    elif digest != listed_sha256:
        raise MeshError(
            "changed_since_listed",
            f"a file {Path(path).name} references (an MTL, texture or buffer) is not the one "
            "the manifest lists: run `cg3d meshes` again",
        )


def _absent_file(base: Path, name: str, folder: Path) -> Path:
    """Where the copy of a glTF says a missing image is: the path its URI names, or, for a
    name no file can have (a NUL byte), a path in the fresh copy `folder` that does not exist
    either (Blender reads the object without the image, as for any missing image)."""
    try:
        return real_path(base / name)
    except ValueError:
        return folder / "no-such-image"


def _sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as error:
        raise MeshError("unreadable", f"cannot read {path}: {error.strerror or error}") from error


def blender_input(path: Path, root: Path, sha256: str, folder: Path) -> Path:
    """The file to hand Blender's importer for a manifest row, checked now (`listed_file`).
    An OBJ or glTF becomes a copy in `folder` (emptied first), hashed as it is written so that
    Blender reads the very bytes compared, whose references are checked inside `root` again
    and rewritten to the resolved paths: an OBJ's material libraries are copies too, naming
    only confined texture files, so whatever forms Blender parses it opens nothing that was
    not checked; a glTF's buffer and image URIs name the resolved files (`_gltf_copy`). A
    binary PLY of doubles far from the origin becomes a copy moved near it (`ply_vertex_move`)."""
    suffix = real_path(path).suffix.lower()  # of the file a link leads to, as Blender reads it
    copied = suffix in (".obj", *GLTF_SUFFIXES)
    # inside the root; a copied file's bytes are compared as they are copied, the others' here
    resolved = listed_file(path, root, "" if copied else sha256)
    check_bytes(resolved)  # a file given to classify was never through the meshes stage
    split = check_declared_counts(resolved, suffix)  # Blender's bytes, checked as the fast path's
    move = ply_vertex_move(resolved) if suffix == ".ply" else None
    text_move = None if copied or move else text_vertex_move(resolved, suffix)
    moved = move is not None or text_move is not None
    if not copied and not moved and len(os.fsencode(str(resolved))) < BLENDER_FILE_MAX:
        return resolved  # PLY, STL, OFF name no other file
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        if move is not None:  # far from the origin: Blender's float32 would hold it on a grid
            copy, digest = _ply_copy(resolved, folder / resolved.name, move)
        elif text_move is not None:  # likewise, an ASCII PLY of doubles or an ASCII STL
            copy, digest = _rewritten_copy(resolved, folder / resolved.name, text_move)
        elif not copied:  # nested too deep for Blender: a link to it (its importer read no file)
            return folder / _blender_reference(resolved, folder)
        elif suffix in GLTF_SUFFIXES:
            copy, digest = _gltf_copy(resolved, root, folder / resolved.name)  # sizes checked
        else:
            copy, digest = _obj_copy(resolved, root, folder, split)
    except OSError as error:
        # A write to an open copy names no file: a full disk or a file past `ulimit -f` stopped
        # the render stage with "error: File too large (EFBIG)" alone. The copies are written
        # in `folder`, which is then the place to name.
        if error.filename is not None or error.errno is None:
            raise
        raise os_error_in(error, folder / resolved.name) or error from error
    if sha256 and digest != sha256:
        raise MeshError("changed_since_listed", f"{path} is not the file the manifest lists")
    return copy


def _obj_copy(resolved: Path, root: Path, folder: Path, split: bool) -> tuple[Path, str]:
    """(the OBJ copy, the sha256 of the bytes read): see `blender_input`. With `split`, its
    faces that name a vertex twice apart are split as trimesh's are (`split_obj_faces`)."""
    libraries = []
    for name in read_material_libraries(resolved):
        mtl = resolve_reference(root, resolved.parent, name, required=False)
        if mtl is not None:
            libraries.append(_confined_mtl(mtl, root, folder / f"material-{len(libraries)}.mtl"))
    copy = folder / resolved.name
    digest = hashlib.sha256()
    move = ObjVertexMove(obj_face_anchor(resolved))
    with open(resolved, "rb") as source, open(copy, "wb") as out:
        out.writelines(f"mtllib {library.name}\n".encode() for library in libraries)
        for number, block in enumerate(line_blocks(source)):
            digest.update(block)
            if number == 0:  # Blender read the line after a byte-order mark as nothing
                block = block.removeprefix(UTF8_BOM)
            if split:  # first: a comment that mentions mtllib blanked its statement
                block = without_inline_comments(block)
            # Any statement that mentions a material library, in any case, is blanked (ours
            # come first), but for those that name a material, object or group.
            pieces, position = [], 0
            for start, end, text in mtllib_statements(block):
                if text.split(maxsplit=1)[0] not in NAMING_KEYWORDS:
                    pieces.append(block[position:start] + b"\n" * block.count(b"\n", start, end))
                    position = end
            pieces.append(block[position:])
            # blanking keeps every line, so the faces found in the user's bytes are still whole
            block = b"".join(pieces)
            out.write(move(split_obj_faces(block) if split else block))
    return copy, digest.hexdigest()


# Blender's copy of an OBJ far from the origin is moved near it by the first vertex its first
# face names (`frame.origin_offset`), every vertex in float64 as the fast path reads them: a
# vertex no face uses (a stray at 1e7 written first) is not the object's place, and moving by
# it took an object at the origin out where float32 holds it on a grid (a `quantized` row).
# A statement's words are parted by blanks or by a line continuation: Blender's importer reads
# a backslash, blanks and the line's end as blanks (`v 5e5 \` then `4e6 300` is one vertex,
# which the copy left far out, a `quantized` row). The blanks between words are kept as written.
OBJ_BLANKS = rb"(?:[ \t]|" + OBJ_CONTINUATION + rb")+"
OBJ_NUMBER = rb"([^ \t\r\n\\]+)"
OBJ_VERTEX = re.compile(
    rb"^([ \t]*v" + OBJ_BLANKS + rb")" + OBJ_NUMBER
    + rb"(" + OBJ_BLANKS + rb")" + OBJ_NUMBER
    + rb"(" + OBJ_BLANKS + rb")" + OBJ_NUMBER,
    re.MULTILINE,
)  # fmt: skip
OBJ_VERTEX_START = re.compile(rb"^[ \t]*v" + OBJ_BLANKS, re.MULTILINE)
OBJ_FACE_START = re.compile(rb"^[ \t]*f" + OBJ_BLANKS + rb"([-+]?[0-9]+)", re.MULTILINE)


def _statement_matches(
    pattern: re.Pattern, block: bytes, end: int | None = None
) -> Iterator[re.Match]:
    """`pattern`'s matches (each at a line's start) in `block` (whole logical lines of an OBJ,
    `line_blocks`), up to `end`, that begin a statement. A line after a continued one
    (OBJ_CONTINUATION) goes on the statement above, as Blender joins them: `# note \\` then
    `v 9 9 9` is one comment, a vertex Blender never has. Counted as one, it put the anchor
    on the next vertex (a `quantized` row for a valid file)."""
    joined = continued_lines(block)
    matches = pattern.finditer(block, 0, len(block) if end is None else end)
    return (match for match in matches if match.start() not in joined) if joined else matches


def obj_face_anchor(path: Path) -> np.ndarray | None:
    """(3,) float64 place of the vertex an OBJ's first face names first; None when no face
    names one (then the first vertex serves). Byte searches, streamed, that stop there: up to
    the first face, then up to that vertex (a negative index: its `v` statements counted)."""
    before = 0  # blocks before the one with the first face
    with open(path, "rb") as handle:
        for block in _unmarked_blocks(handle):
            if face := next(_statement_matches(OBJ_FACE_START, block), None):
                break
            before += 1
        else:
            return None
    index = int(face.group(1))
    if index < 0:  # counted back from the last vertex before the face
        index += 1 + _vertex_count(block, face.start())
        with open(path, "rb") as handle:
            index += sum(map(_vertex_count, itertools.islice(_unmarked_blocks(handle), before)))
    return _obj_vertex(path, index - 1) if index > 0 else None


def _vertex_count(block: bytes, end: int | None = None) -> int:
    """The `v` statements of an OBJ block (up to `end`)."""
    return sum(1 for _ in _statement_matches(OBJ_VERTEX_START, block, end))


def _obj_vertex(path: Path, number: int) -> np.ndarray | None:
    """(3,) float64 place of an OBJ's `v` statement `number` (from 0), read up to it; None when
    it has no such vertex or its place is not three numbers."""
    with open(path, "rb") as handle:
        for block in _unmarked_blocks(handle):
            count = _vertex_count(block)
            if number >= count:
                number -= count
                continue
            start = next(
                itertools.islice(_statement_matches(OBJ_VERTEX_START, block), number, None)
            )
            vertex = OBJ_VERTEX.match(block, start.start())
            try:
                return np.array([float(word) for word in vertex.group(2, 4, 6)]) if vertex else None
            except ValueError:
                return None
    return None


def _unmarked_blocks(handle: BinaryIO) -> Iterator[bytes]:
    """`line_blocks`, the first without a byte-order mark (as Blender's copy has it)."""
    blocks = line_blocks(handle)
    first = next(blocks, b"")
    yield first.removeprefix(UTF8_BOM)
    yield from blocks


class ObjVertexMove:
    """Rewrites an OBJ's blocks, in order, with its `v` statements moved by `origin_offset` of
    `anchor` (`obj_face_anchor`), else of its first vertex (unchanged when that lies near the
    origin)."""

    def __init__(self, anchor: np.ndarray | None = None) -> None:
        self.decided = anchor is not None
        offset = origin_offset(anchor) if anchor is not None else np.zeros(3)
        self.offset: list[float] | None = offset.tolist() if offset.any() else None

    def __call__(self, block: bytes) -> bytes:
        if self.decided and self.offset is None:
            return block
        pieces, position = [], 0
        for match in _statement_matches(OBJ_VERTEX, block):  # a comment's line is left as it is
            pieces += [block[position : match.start()], self._moved(match)]
            position = match.end()
        pieces.append(block[position:])
        return b"".join(pieces)

    def _moved(self, match: re.Match) -> bytes:
        try:
            xyz = [float(word) for word in match.group(2, 4, 6)]
        except ValueError:  # not three numbers: left as Blender's importer reads it
            return match.group(0)
        if not self.decided:
            self.decided = True
            offset = origin_offset(np.array(xyz))
            self.offset = offset.tolist() if offset.any() else None
        if self.offset is None:
            return match.group(0)
        x, y, z = (repr(v - o).encode() for v, o in zip(xyz, self.offset, strict=True))
        return b"".join((match.group(1), x, match.group(3), y, match.group(5), z))


# A binary PLY of doubles far from the origin (a georeferenced scan, as photogrammetry and
# CloudCompare write one, colours beside): Blender's importer holds its coordinates in float32,
# so its copy is moved near the origin as an OBJ's is, every other byte as the user's.
PLY_MOVE_ROWS = 1 << 16  # vertex rows moved at a time


def ply_vertex_move(path: Path) -> tuple[int, np.dtype, int, np.ndarray] | None:
    """(the header's length, the vertex record, their count, the whole-unit offset) that moves a binary PLY
    whose first element is its vertices, of scalar properties with double x, y and z, near the
    origin (`frame.origin_offset` of the first vertex its first face names, else of the
    first vertex); None when it lies near it already or is laid out otherwise (float x, y, z:
    lost in the file, `load_mesh`'s `quantized`)."""
    with open(path, "rb") as handle:
        form, elements = _ply_header(handle)
        start = handle.tell()
        order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(form)
        vertex = elements[0] if elements else None
        if order is None or vertex is None or vertex.name != "vertex" or not vertex.count:
            return None
        kinds = {name: kind for name, kind, _ in vertex.properties}
        if any(item is not None or kind not in PLY_TYPES for _, kind, item in vertex.properties):
            return None
        if len(kinds) < len(vertex.properties) or any(
            PLY_TYPES.get(kinds.get(axis, "")) != "d" for axis in "xyz"
        ):
            return None
        record = np.dtype([(name, order + PLY_TYPES[kind]) for name, kind, _ in vertex.properties])
        handle.seek(start + vertex.count * record.itemsize)
        index = _first_face_corner(handle, elements[1:2], order)
        number = index if index is not None and 0 <= index < vertex.count else 0
        handle.seek(start + number * record.itemsize)
        row = np.frombuffer(handle.read(record.itemsize), record)
    if len(row) == 0:
        return None  # truncated: the checks say so
    offset = origin_offset(np.array([float(row[axis][0]) for axis in "xyz"]))
    return (start, record, vertex.count, offset) if offset.any() else None


def _first_face_corner(handle: BinaryIO, faces: list[_PlyElement], order: str) -> int | None:
    """The vertex index that the face record at the handle's place names first, when the
    element after the vertices is faces whose first property is their index list."""
    if not faces or faces[0].name != "face" or not faces[0].count or not faces[0].properties:
        return None
    _, kind, item = faces[0].properties[0]
    if item not in PLY_TYPES or kind not in PLY_TYPES:
        return None
    data = handle.read(struct.calcsize(PLY_TYPES[kind]) + struct.calcsize(PLY_TYPES[item]))
    try:
        count, index = struct.unpack(order + PLY_TYPES[kind] + PLY_TYPES[item], data)
    except struct.error:
        return None
    return index if count > 0 else None


def _ply_copy(
    resolved: Path, copy: Path, move: tuple[int, np.dtype, int, np.ndarray]
) -> tuple[Path, str]:
    """(the copy moved by `ply_vertex_move`, the sha256 of the bytes read)."""
    start, record, left, offset = move
    digest = hashlib.sha256()
    with open(resolved, "rb") as source, open(copy, "wb") as out:
        header = source.read(start)
        digest.update(header)
        out.write(header)
        while left and (block := source.read(min(left, PLY_MOVE_ROWS) * record.itemsize)):
            digest.update(block)
            whole = len(block) - len(block) % record.itemsize  # a truncated file: as it is
            rows = np.frombuffer(block[:whole], record).copy()
            for axis, by in zip("xyz", offset, strict=True):
                rows[axis] -= by
            out.write(rows.tobytes() + block[whole:])
            if whole < len(block):
                break  # the file ends inside a record: copied as it is, the checks say so
            left -= len(rows)
        for rest in iter(lambda: source.read(COPY_BLOCK), b""):  # faces and the rest, as read
            digest.update(rest)
            out.write(rest)
    return copy, digest.hexdigest()


# An ASCII PLY of doubles or an ASCII STL far from the origin: Blender's importers read their
# decimal text into float32 on the grid, so the copy holds each vertex's numbers parsed in
# float64 and moved by whole units (`origin_offset`), written back exact (repr), all else as read.
# A `vertex` is a word wherever it stands: Blender's and trimesh's readers take a line's words,
# and a writer that put a facet's vertices on its `outer loop` line had those copied unmoved.
STL_VERTEX = re.compile(
    rb"(?<![^ \t\r\n])(vertex[ \t]+)([^ \t\r\n]+)([ \t]+)([^ \t\r\n]+)([ \t]+)([^ \t\r\n]+)",
    re.IGNORECASE,
)


def text_vertex_move(path: Path, suffix: str) -> Callable[[bytes], bytes] | None:
    """What rewrites the blocks of whole lines (`line_blocks`) of an ASCII PLY whose x, y, z are
    doubles, or of an ASCII STL, moved near the origin; None when the file lies near it or is
    laid out otherwise."""
    if suffix == ".stl":
        with open(path, "rb") as handle:
            if not _ascii_stl(handle.read(STL_TEXT_PROBE)):
                return None
            handle.seek(0)
            head = next(line_blocks(handle, COPY_BLOCK), b"")  # its first vertex is in it
            first = STL_VERTEX.search(head, head.find(b"\n") + 1)  # past `solid <its name>`
        try:
            offset = origin_offset(np.array([float(word) for word in first.group(2, 4, 6)]))
        except (AttributeError, ValueError):  # no vertex, or not three numbers
            return None
        if not offset.any():
            return None
        return functools.partial(STL_VERTEX.sub, functools.partial(_moved_words, offset=offset))
    return _ascii_ply_move(path) if suffix == ".ply" else None


def _moved_words(match: re.Match, offset: np.ndarray) -> bytes:
    """A vertex statement's match (keyword, x, blank, y, blank, z) with x, y, z moved by `offset`."""
    try:
        xyz = [float(word) for word in match.group(2, 4, 6)]
    except ValueError:  # not three numbers: left as the importer reads it
        return match.group(0)
    x, y, z = (repr(v - o).encode() for v, o in zip(xyz, offset.tolist(), strict=True))
    return b"".join((match.group(1), x, match.group(3), y, match.group(5), z))


def _ascii_ply_move(path: Path) -> Callable[[bytes], bytes] | None:
    """`text_vertex_move` of an ASCII PLY whose first element is its vertices, of scalar
    properties with double x, y and z: moved by the first vertex its first face names (a face
    element after the vertices, its index list first), else by its first vertex."""
    with open(path, "rb") as handle:
        form, elements = _ply_header(handle)
        start = handle.tell()
        vertex = elements[0] if elements else None
        if form != "ascii" or vertex is None or vertex.name != "vertex" or not vertex.count:
            return None
        names = [name for name, _, _ in vertex.properties]
        kinds = {name: kind for name, kind, _ in vertex.properties}
        if any(item is not None for _, _, item in vertex.properties) or len(kinds) < len(names):
            return None
        if any(PLY_TYPES.get(kinds.get(axis, "")) != "d" for axis in "xyz"):
            return None
        # rows are one a line (the checks refuse a blank one: `_blank_row`)
        anchor = next(handle, b"").split()
        face = next(itertools.islice(handle, vertex.count - 1, None), b"").split()
        faces = elements[1] if len(elements) > 1 else None
        listed = faces is not None and faces.name == "face" and faces.properties[:1]
        index = 0
        if listed and faces.properties[0][2] is not None and face[1:2] and face[1].isdigit():
            index = int(face[1])  # the index list's first
        if 0 < index < vertex.count:  # read again, up to it
            handle.seek(start)
            anchor = next(itertools.islice(handle, index, None), b"").split()
    columns = [names.index(axis) for axis in "xyz"]
    try:
        offset = origin_offset(np.array([float(anchor[column]) for column in columns]))
    except (IndexError, ValueError):  # cut short: the checks say so
        return None
    return AsciiPlyMove(start, vertex.count, len(names), columns, offset) if offset.any() else None


class AsciiPlyMove:
    """Rewrites an ASCII PLY's blocks of whole lines, in order: its header as it is, then its
    `count` vertex rows (a line each) of `width` words with the `columns` x, y, z moved by
    `offset`."""

    def __init__(
        self, header: int, count: int, width: int, columns: list[int], offset: np.ndarray
    ) -> None:
        self.header, self.rows, self.width = header, count, width
        self.columns, self.offset = columns, offset.tolist()

    def __call__(self, block: bytes) -> bytes:
        head = block[: self.header]
        self.header -= len(head)
        if not self.rows or len(head) == len(block):
            return block
        lines = block[len(head) :].splitlines(keepends=True)
        rows = min(self.rows, len(lines))
        lines[:rows] = map(self._moved, lines[:rows])
        self.rows -= rows
        return head + b"".join(lines)

    def _moved(self, line: bytes) -> bytes:
        words = line.split()
        if len(words) < self.width:  # (words past it the importers skip, as Blender reads them)
            return line  # not a vertex row as declared: the importer says what it makes of it
        try:
            for column, by in zip(self.columns, self.offset, strict=True):
                words[column] = repr(float(words[column]) - by).encode()
        except ValueError:
            return line
        return b" ".join(words) + line[len(line.rstrip(b"\r\n")) :]


def _rewritten_copy(
    resolved: Path, copy: Path, rewrite: Callable[[bytes], bytes]
) -> tuple[Path, str]:
    """(a copy of `resolved` whose blocks of whole lines `rewrite` gave, the sha256 of the
    bytes read)."""
    digest = hashlib.sha256()
    with open(resolved, "rb") as source, open(copy, "wb") as out:
        for block in line_blocks(source):
            digest.update(block)
            out.write(rewrite(block))
    return copy, digest.hexdigest()


def _gltf_copy(resolved: Path, root: Path, copy: Path) -> tuple[Path, str]:
    """(a copy of a glTF/GLB, the sha256 of the bytes read) for Blender's importer: each file
    URI replaced by the resolved, confined path it names, and the application-specific vertex
    attributes (`_NAME`: feature ids, temperatures...; no stage reads them) removed. Blender
    5.0's importer pairs those attributes with their data in the iteration order of a set,
    which changes with each process's hash seed: with two of them, a file was read in one
    worker and failed in another ("couldn't access the py sequence", a shape mismatch).
    MeshError for a document that does not parse or whose accessors do not fit their bytes
    (`check_gltf_sizes`), before anything is written."""
    digest = hashlib.sha256()
    with open(resolved, "rb") as source:
        read, document = _read_gltf_json(source)  # parsed once: checked, then rewritten
        digest.update(read)
        head, glb = read[:20], read[:4] == b"glTF"
        # Before any importer allocates, on the very document the copy is made of; structure
        # first, as the meshes stage checks it (`check_geometry`): a file given to classify or
        # embed is told in its words (a required meshopt extension was Blender's "Extension
        # EXT_meshopt_compression is not available", `unreadable`, not `unsupported_format`).
        check_gltf(document)
        check_gltf_sizes(document, resolved)
        for kind, item, name, file in _gltf_references(document, resolved.parent, root):
            # Missing images stay missing (Blender reads the object without them), and so
            # does one too large to decode (`texture_file`): named as no file in the copy folder.
            if file is not None and kind == "images" and texture_file(file) is None:
                item["uri"] = quote(str(copy.parent / "no-such-image"))
                continue
            named = _blender_reference(file, copy.parent) if file else None
            item["uri"] = quote(named or str(_absent_file(resolved.parent, name, copy.parent)))
        _without_basisu(document, copy.parent / "no-such-image")
        for index in oversized_embedded_images(document, resolved, root):  # as `texture_file`
            document["images"][index] = {"uri": quote(str(copy.parent / "no-such-image"))}
        for mesh in document.get("meshes", []):
            for primitive in mesh.get("primitives", []):
                _drop_custom_attributes(primitive)
        encoded = json.dumps(document, separators=(",", ":")).encode()
        with open(copy, "wb") as out:
            if not glb:
                out.write(encoded)
                return copy, digest.hexdigest()
            encoded += b" " * (-len(encoded) % 4)  # chunks are 4-byte aligned, JSON space-padded
            rest = os.fstat(source.fileno()).st_size - source.tell()  # the BIN chunk, as it is
            length = 12 + 8 + len(encoded) + rest
            out.write(head[:8] + struct.pack("<III", length, len(encoded), 0x4E4F534A))
            out.write(encoded)
            while block := source.read(COPY_BLOCK):
                digest.update(block)
                out.write(block)
    return copy, digest.hexdigest()


# Blender 5's glTF importer reads KHR_texture_basisu's document but decodes no KTX2 image: a
# texture with no other source lost its material's stated colour too (Blender's default grey).
KTX2_UNREAD = "a KTX2 image (KHR_texture_basisu) with no PNG/JPEG fallback: Blender decodes none"


def basisu_only_images(document: dict) -> dict[int, str]:
    """{index: name (its URI, else `image N`)} of each image that a texture has as its
    KHR_texture_basisu source while stating no `source` of its own (a fallback Blender reads)."""
    images = document.get("images", [])
    found = {}
    for texture in document.get("textures", []):
        source = _basisu_only_source(texture)
        if source is not None and source < len(images) and isinstance(images[source], dict):
            uri = images[source].get("uri")
            plain = isinstance(uri, str) and uri and not uri.startswith("data:")
            found[source] = unquote(uri.replace("\\", "/")) if plain else f"image {source}"
    return found


def _basisu_only_source(texture: object) -> int | None:
    """The KHR_texture_basisu image of a texture that states no `source`, else None."""
    if not isinstance(texture, dict) or "source" in texture:
        return None
    extensions = texture.get("extensions")
    basisu = extensions.get("KHR_texture_basisu") if isinstance(extensions, dict) else None
    source = basisu.get("source") if isinstance(basisu, dict) else None
    return source if type(source) is int and source >= 0 else None


def _without_basisu(document: dict, absent: Path) -> None:
    """Each texture whose only image is KTX2 (`basisu_only_images`) takes it as its `source`,
    the image named as the file `absent`, which does not exist: Blender reads the object as
    with a missing image, in the colour the file states under it (baseColorFactor)."""
    images = basisu_only_images(document)
    for texture in document.get("textures", []):
        if (source := _basisu_only_source(texture)) in images:
            texture["source"] = source
    for index in images:
        document["images"][index] = {"uri": quote(str(absent))}


# An image's header lies in its first bytes (a JPEG's size after its EXIF and ICC segments).
EMBEDDED_HEAD = 1 << 16


def oversized_embedded_images(document: dict, path: Path, root: Path) -> dict[int, str]:
    """{index: why} of each image stored in a buffer rather than a file of its own (a data:
    URI, a bufferView of a GLB's BIN chunk, as Objaverse's files hold their textures, of a
    data: URI buffer or of a .bin file under `root`) whose header declares too many pixels to
    decode (`images.texture_refusal`). Its first bytes are read."""
    found = {}
    for index, image in enumerate(document.get("images", [])):
        head = _embedded_head(document, image, path, root)
        if head and (why := texture_refusal(io.BytesIO(head))):
            found[index] = why
    return found


def _embedded_head(document: dict, image: object, path: Path, root: Path) -> bytes:
    """The first EMBEDDED_HEAD bytes of an image stored in a data: URI or a bufferView, else
    b"" (an image in a file of its own, or one a malformed document places nowhere: the checks
    say why)."""
    if not isinstance(image, dict):
        return b""
    uri = image.get("uri")
    if isinstance(uri, str):
        return _data_uri_bytes(uri, 0)
    views, buffers = document.get("bufferViews", []), document.get("buffers", [])
    index = image.get("bufferView")
    view = views[index] if type(index) is int and 0 <= index < len(views) else None
    if not isinstance(view, dict):
        return b""
    number, offset = view.get("buffer"), view.get("byteOffset", 0)
    if type(number) is not int or not 0 <= number < len(buffers) or type(offset) is not int:
        return b""
    buffer, offset = buffers[number], max(offset, 0)
    uri = buffer.get("uri") if isinstance(buffer, dict) else None
    if isinstance(uri, str) and uri.startswith("data:"):
        return _data_uri_bytes(uri, offset)
    if isinstance(uri, str):  # a .bin beside the file (`references` checked it lies in root)
        file = resolve_reference(root, path.parent, unquote(uri.replace("\\", "/")), False)
        return _read_at(file, offset) if file is not None else b""
    if number != 0:
        return b""  # a GLB's BIN chunk is its buffer 0
    with open(path, "rb") as handle:
        head = handle.read(20)
        if head[:4] != b"glTF" or len(head) < 20:
            return b""
    return _read_at(path, 20 + struct.unpack_from("<I", head, 12)[0] + 8 + offset)


def _data_uri_bytes(uri: str, offset: int) -> bytes:
    """EMBEDDED_HEAD bytes from `offset` of a base64 data: URI's payload, decoding only them;
    b"" for another URI or a payload that does not decode."""
    media, _, data = uri.partition(",")
    if not media.startswith("data:") or not media.endswith(";base64"):
        return b""
    start = offset // 3 * 4  # base64 turns each 3 bytes into 4 characters
    try:
        decoded = base64.b64decode(data[start : start + (EMBEDDED_HEAD // 3 + 2) * 4])
    except ValueError:
        return b""
    return decoded[offset % 3 : offset % 3 + EMBEDDED_HEAD]


def _read_at(file: Path, offset: int) -> bytes:
    with open(file, "rb") as handle:
        handle.seek(offset)
        return handle.read(EMBEDDED_HEAD)


def texture_file(file: Path | None) -> Path | None:
    """The texture file Blender is given: None (a missing texture) for one whose header
    declares too many pixels to decode (`images.texture_refusal`, which the meshes stage lists
    in `missing`): Blender decoded it whole and the worker met its memory limit, or took the
    machine's memory where the limit is high."""
    return None if file is None or texture_refusal(file) else file


def _blender_reference(file: Path, folder: Path) -> str:
    """How a copy in `folder` names the checked file `file`: its path, or when that is too long
    for Blender (BLENDER_FILE_MAX: a texture nested deep, which it left out without a word)
    the name of a link to it made in `folder`, which the copy's reader resolves beside it."""
    if len(os.fsencode(str(file))) < BLENDER_FILE_MAX:
        return str(file)
    digest = hashlib.sha256(os.fsencode(str(file))).hexdigest()[:12]
    # its suffix kept (as the name's end) within NAME_MAX: "skin.<250 bytes>" is a name too
    link = folder / derived_name(file.suffix, f"linked-{digest}", "")
    if not link.is_symlink():  # one texture may be named twice
        link.symlink_to(file)
    return link.name


def _drop_custom_attributes(primitive: dict) -> None:
    draco = primitive.get("extensions", {}).get("KHR_draco_mesh_compression", {})
    for attributes in (primitive.get("attributes"), draco.get("attributes")):
        if isinstance(attributes, dict):
            for name in [name for name in attributes if name.startswith("_")]:
                del attributes[name]


def _confined_mtl(mtl: Path, root: Path, copy: Path) -> Path:
    """`copy`: the MTL `mtl` with its value statements, and its texture maps naming their
    resolved paths (MeshError `outside_root` for one outside `root`, as the meshes stage says);
    nothing else (no statement Blender could read a file name from is copied unread)."""
    kept = []
    for line in _mtl_lines(mtl):
        words = line.split()
        if words and words[0] in MTL_VALUE_KEYWORDS:
            kept.append(line.strip())
            continue
        found = texture_map(line)
        if found and found[2]:
            texture = texture_file(mtl_texture(root, mtl, found[2]))
            # A missing texture stays missing (a name in the fresh copy folder that no file
            # has), as for a glTF: dropping the map would leave the importer's default colour
            # under it looking like the author's.
            named = (
                _blender_reference(texture, copy.parent)
                if texture is not None
                else str(copy.parent / "no-such-image")
            )
            kept.append(" ".join([found[0], *found[1], named]))
    copy.write_text("\n".join(kept) + "\n", encoding="utf-8", errors=NAME_BYTES)
    return copy


def check_gltf(document: dict) -> None:
    """The structural check of a glTF file: required extensions read, every index names an
    item that exists and the nodes form no cycle (`check_gltf_references`), some triangles."""
    required = set(document.get("extensionsRequired", []))
    unread = sorted(required - GLTF_EXTENSIONS_READ)
    if unread:
        raise MeshError(
            "unsupported_format",
            f"the file requires the glTF extension {', '.join(unread)}, not read here",
        )
    check_gltf_references(document)
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


def check_gltf_references(document: dict) -> None:
    """Every index Blender's importer follows names an item the file has, and the nodes form
    trees: a primitive's attributes, indices and morph targets name accessors; a node its
    mesh, skin and children; a skin its joints, skeleton and inverse bind matrices; an
    animation its samplers' accessors and its channels' samplers and nodes; a scene its nodes;
    `scene` a scene. Trees, as the spec requires and Blender's importer asserts: no node has
    two parents or is its own descendant, and a scene lists each root once and no child as a
    root. Without this check such a file passes the meshes stage and fails later in
    Blender's import, as a failure row of sample and render that names only the importer's
    error. Iterative: a cycle in `children` (which a recursive walk would follow forever) or a
    chain of a million nodes recurses nowhere."""
    accessors = len(_gltf_list(document, "accessors"))
    meshes = _gltf_list(document, "meshes")
    nodes = _gltf_list(document, "nodes")
    skins = _gltf_list(document, "skins")
    for m, mesh in enumerate(meshes):
        for p, primitive in enumerate(_gltf_list(mesh, "primitives", f"mesh {m} primitives")):
            what = f"mesh {m} primitive {p}"
            named = [("attribute", _gltf_dict(primitive, "attributes", what))]
            targets = _gltf_list(primitive, "targets", f"{what} targets")
            named += [(f"morph target {t}", target) for t, target in enumerate(targets)]
            for part, attributes in named:
                for name, index in attributes.items():
                    _gltf_index(index, accessors, f"{what} {part} {name}", "accessor")
            if "indices" in primitive:
                _gltf_index(primitive["indices"], accessors, f"{what} indices", "accessor")
    children = []
    parents: dict[int, int] = {}
    for n, node in enumerate(nodes):
        for key, items in (("mesh", meshes), ("skin", skins)):
            if key in node:
                _gltf_index(node[key], len(items), f"node {n}", key)
        kids = _gltf_indices(node, "children", len(nodes), f"node {n} children", "node")
        for kid in kids:
            if kid in parents:
                raise MeshError(
                    "unreadable",
                    f"glTF node {kid} has two parents (nodes {parents[kid]} and {n}): "
                    "glTF nodes form trees",
                )
            parents[kid] = n
        children.append(kids)
    for k, skin in enumerate(skins):
        _gltf_indices(skin, "joints", len(nodes), f"skin {k} joints", "node")
        if "skeleton" in skin:
            _gltf_index(skin["skeleton"], len(nodes), f"skin {k} skeleton", "node")
        if "inverseBindMatrices" in skin:
            what = f"skin {k} inverseBindMatrices"
            _gltf_index(skin["inverseBindMatrices"], accessors, what, "accessor")
    for a, animation in enumerate(_gltf_list(document, "animations")):
        samplers = _gltf_list(animation, "samplers", f"animation {a} samplers")
        for number, sampler in enumerate(samplers):
            for key in ("input", "output"):
                what = f"animation {a} sampler {number} {key}"
                _gltf_index(sampler.get(key), accessors, what, "accessor")
        for number, channel in enumerate(
            _gltf_list(animation, "channels", f"animation {a} channels")
        ):
            what = f"animation {a} channel {number}"
            _gltf_index(channel.get("sampler"), len(samplers), what, "sampler")
            target = _gltf_dict(channel, "target", what)
            if "node" in target:
                _gltf_index(target["node"], len(nodes), what, "node")
    looped = _node_in_cycle(children)
    if looped is not None:
        raise MeshError(
            "unreadable", f"glTF node {looped} is its own descendant (a cycle in children)"
        )
    scenes = _gltf_list(document, "scenes")
    for number, scene in enumerate(scenes):
        roots = _gltf_indices(scene, "nodes", len(nodes), f"scene {number}", "node")
        seen: set[int] = set()
        for root in roots:
            if root in parents:
                raise MeshError(
                    "unreadable",
                    f"glTF scene {number} names node {root} as a root, "
                    f"but it is node {parents[root]}'s child",
                )
            if root in seen:
                raise MeshError("unreadable", f"glTF scene {number} names node {root} twice")
            seen.add(root)
    if "scene" in document:
        _gltf_index(document["scene"], len(scenes), "document's scene", "scene")


def _node_in_cycle(children: list[list[int]]) -> int | None:
    """A node on a cycle of `children` (node → its children's indices), or None: a depth-first
    walk with its own stack, not Python's, so no depth of nesting recurses."""
    unseen, on_path, done = 0, 1, 2
    state = [unseen] * len(children)
    for start in range(len(children)):
        if state[start] != unseen:
            continue
        state[start] = on_path
        stack = [(start, iter(children[start]))]
        while stack:
            node, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                state[node] = done
                stack.pop()
            elif state[child] == on_path:
                return child
            elif state[child] == unseen:
                state[child] = on_path
                stack.append((child, iter(children[child])))
    return None


# glTF accessor layouts: bytes per component, components per element.
GLTF_COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
GLTF_TYPE_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
# An accessor with no bufferView (zeros, then sparse values; or Draco-decoded) is backed by no
# bytes of the file: it may decode to at most this many times the file's buffer bytes (Draco
# compresses a vertex to a few bytes at best), plus a small floor.
GLTF_UNBACKED_RATIO, GLTF_UNBACKED_FLOOR = 64, 1 << 20


def gltf_buffer_sizes(document: dict, path: Path) -> list[int]:
    """The bytes each buffer of a glTF really holds where that is known without resolving a
    file (a `data:` URI: its decoded length; a GLB's own buffer: its BIN chunk), else what it
    declares; MeshError for a declared byteLength larger than the bytes it has."""
    sizes = []
    for number, buffer in enumerate(_gltf_list(document, "buffers")):
        declared = _gltf_int(buffer, "byteLength", f"buffer {number}")
        uri = buffer.get("uri")
        have = None
        if isinstance(uri, str) and uri.startswith("data:"):
            payload = uri.partition(",")[2]
            have = len(payload) * 3 // 4 - payload[-2:].count("=") if ";base64" in uri else None
        elif uri is None:  # only a GLB's buffer 0 is backed without one (its BIN chunk)
            have = _glb_bin_length(path) if number == 0 else 0
        if have is not None and declared > have:
            if uri is None and _meshopt_fallback(buffer):
                raise MeshError(
                    "unsupported_format",
                    "the file's geometry is compressed with EXT_meshopt_compression, not read "
                    f"here (its uncompressed fallback, buffer {number}, holds no bytes)",
                )
            raise MeshError(
                "unreadable", f"glTF buffer {number} declares {declared} bytes but holds {have}"
            )
        sizes.append(declared)
    return sizes


def _meshopt_fallback(buffer: dict) -> bool:
    """Whether `buffer` is the placeholder `gltfpack -cf` writes for EXT_meshopt_compression:
    the bufferViews name it for loaders without the extension, and no bytes back it. Blender
    5.0's importer, which has no meshopt decoder, read it and raised "KeyError: 1"."""
    extension = buffer.get("extensions", {})
    extension = extension.get("EXT_meshopt_compression") if isinstance(extension, dict) else None
    return isinstance(extension, dict) and extension.get("fallback") is True


def _glb_bin_length(path: Path) -> int:
    """The length of a GLB's BIN chunk (0 for a .gltf or a GLB without one)."""
    with open(path, "rb") as handle:
        head = handle.read(20)
        if head[:4] != b"glTF":
            return 0
        json_length = struct.unpack_from("<I", head, 12)[0]
        handle.seek(20 + json_length)
        chunk = handle.read(8)
        size = os.fstat(handle.fileno()).st_size
    if len(chunk) < 8 or chunk[4:8] != b"BIN\0":
        return 0
    (declared,) = struct.unpack_from("<I", chunk)
    # what it declares is no proof of what it holds: an edited chunk length passed as buffer
    # bytes, and Blender failed on it at sample and render
    if declared > size - (28 + json_length):
        raise MeshError(
            "unreadable",
            f"the GLB's BIN chunk declares {declared} bytes, the file holds "
            f"{size - (28 + json_length)} after its JSON",
        )
    return declared


def _gltf_list(document: dict, key: str, what: str | None = None) -> list:
    """`document[key]`, a list of objects (none when absent); `what` names it in the error."""
    items = document.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise MeshError("unreadable", f"glTF {what or key} is not a list of objects")
    return items


def _gltf_dict(item: dict, key: str, what: str) -> dict:
    """`item[key]`, an object (empty when absent)."""
    value = item.get(key, {})
    if not isinstance(value, dict):
        raise MeshError("unreadable", f"glTF {what}: {key} is not an object")
    return value


def _gltf_index(value: object, count: int, what: str, kind: str) -> int:
    """`value`, an index below `count`, else MeshError: `what` names a `kind` that is absent."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < count:
        raise MeshError("unreadable", f"glTF {what} names {kind} {value!r}, which is absent")
    return value


def _gltf_indices(item: dict, key: str, count: int, what: str, kind: str) -> list[int]:
    """`item[key]`, a list of indices below `count` (empty when absent)."""
    values = item.get(key, [])
    if not isinstance(values, list):
        raise MeshError("unreadable", f"glTF {what}: {key} is not a list")
    return [_gltf_index(value, count, what, kind) for value in values]


def _gltf_int(item: dict, key: str, what: str, default: int | None = None) -> int:
    value = item.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MeshError("unreadable", f"glTF {what}: {key} is {value!r}, not a count")
    return value


def _view_bytes(views: list, index: object, sizes: list[int], what: str) -> tuple:
    """(byteLength, byteStride or None) of bufferView `index`, checked inside its buffer."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(views):
        raise MeshError("unreadable", f"glTF {what} names bufferView {index!r}, which is absent")
    view = views[index]
    buffer = view.get("buffer")
    if not isinstance(buffer, int) or isinstance(buffer, bool) or not 0 <= buffer < len(sizes):
        raise MeshError("unreadable", f"glTF bufferView {index} names buffer {buffer!r}")
    offset = _gltf_int(view, "byteOffset", f"bufferView {index}", 0)
    length = _gltf_int(view, "byteLength", f"bufferView {index}")
    if offset + length > sizes[buffer]:
        raise MeshError(
            "unreadable",
            f"glTF bufferView {index} ends at byte {offset + length} of buffer {buffer}, "
            f"which holds {sizes[buffer]}",
        )
    stride = view.get("byteStride")
    return length, stride if isinstance(stride, int) and stride > 0 else None


def check_gltf_sizes(document: dict, path: Path) -> None:
    """Every accessor's data fits the bytes that back it, before any importer allocates it:
    count × component size × type width (strided as its bufferView says) within its
    bufferView, each bufferView within its buffer, each buffer no longer than the bytes it
    has; a sparse accessor's indices and values within theirs. An accessor with no bufferView
    decodes to at most GLTF_UNBACKED_RATIO × the file's buffer bytes. A 1 KB file declaring
    2^32-1 vertices over a 36-byte buffer took 21 GB in Blender; here it is one MeshError."""
    sizes = gltf_buffer_sizes(document, path)
    views = _gltf_list(document, "bufferViews")
    for index in range(len(views)):  # not only an accessor's: Draco's data is a bufferView's
        _view_bytes(views, index, sizes, f"bufferView {index}")
    unbacked_limit = GLTF_UNBACKED_RATIO * sum(sizes) + GLTF_UNBACKED_FLOOR
    for number, accessor in enumerate(_gltf_list(document, "accessors")):
        what = f"accessor {number}"
        count = _gltf_int(accessor, "count", what)
        component = GLTF_COMPONENT_BYTES.get(accessor.get("componentType"))
        width = GLTF_TYPE_WIDTHS.get(accessor.get("type"))
        if component is None or width is None:
            raise MeshError("unreadable", f"glTF {what}: unknown componentType or type")
        element = component * width
        if "bufferView" in accessor:
            length, stride = _view_bytes(views, accessor["bufferView"], sizes, what)
            offset = _gltf_int(accessor, "byteOffset", what, 0)
            needed = offset + (stride or element) * (count - 1) + element if count else 0
            if needed > length:
                raise MeshError(
                    "unreadable",
                    f"glTF {what} declares {count} elements of {element} bytes ({needed} bytes); "
                    f"its bufferView holds {length}",
                )
        elif count * element > unbacked_limit:
            raise MeshError(
                "unreadable",
                f"glTF {what} declares {count} elements of {element} bytes backed by no "
                f"bufferView, more than {unbacked_limit} bytes for a file of {sum(sizes)}",
            )
        sparse = accessor.get("sparse")
        if sparse is not None:
            _check_sparse(document, views, sizes, sparse, count, element, what)
    check_glb_zero_tail(document, path)


# A GLB's zeros are real data (zero UVs, joints, morph deltas), so a zero tail alone proves
# nothing; what zeros read as decides. A triangle naming one vertex three times has no area: no
# exporter writes them (the glTF validator flags each), and a tail of zeros over a triangle list
# reads as a run of them naming vertex 0. This many in a row is refused.
ZERO_TRIANGLES = 64
TAIL_CHUNK = 1 << 16  # the trailing zeros are measured backwards in reads of this


def _trailing_zeros(handle: BinaryIO, size: int, limit: int) -> int:
    """How many bytes at the end of the file are zero, counted up to `limit`."""
    run = 0
    while run < limit:
        step = min(TAIL_CHUNK, limit - run)
        handle.seek(size - run - step)
        chunk = handle.read(step)
        kept = len(chunk.rstrip(b"\0"))
        run += step - kept
        if kept:
            break
    return run


def check_glb_zero_tail(document: dict, path: Path) -> None:
    """MeshError (`unreadable`, "truncated and zero-filled") for a GLB whose BIN chunk ends in
    zeros that no real file holds there: a download cut short into a preallocated file keeps
    its header and chunk lengths, so every size check passes. The zeros are read as the
    accessors they fall in say, and refused only where that reading contradicts the file:
    - an accessor with `min`/`max` (POSITION always has them) whose zeroed elements lie outside
      those bounds, or whose elements are all zero though its bounds are not;
    - the indices of a triangle list reading as ZERO_TRIANGLES or more triangles (0, 0, 0).
    Reads the trailing zeros only (none, in a whole file). A Draco stream is not judged."""
    if path.suffix.lower() != ".glb":
        return
    buffers = document.get("buffers") or [{}]
    if not isinstance(buffers[0], dict) or "uri" in buffers[0]:
        return  # buffer 0 is a file, not the BIN chunk
    with open(path, "rb") as handle:
        head = handle.read(20)
        bin_start = 28 + struct.unpack_from("<I", head, 12)[0]
        handle.seek(bin_start - 8)
        chunk = handle.read(8)
        size = os.fstat(handle.fileno()).st_size
        if len(chunk) < 8 or chunk[4:] != b"BIN\0":
            return
        if bin_start + struct.unpack_from("<I", chunk)[0] != size:
            return  # more chunks after it: its tail is not the file's
        run = _trailing_zeros(handle, size, size - bin_start)
    if run < 12:  # the BIN chunk's padding, and less than one triangle of the smallest indices
        return
    zero_from = size - run - bin_start  # the first zero byte of the tail, in buffer 0
    triangles = _triangle_list_indices(document)
    views = document.get("bufferViews", [])
    for number, accessor in enumerate(document.get("accessors", [])):
        first = _first_zeroed_element(accessor, views, zero_from)
        if first is None:
            continue
        count = accessor["count"]
        reading = _zero_reading(accessor, number, first, count, number in triangles)
        if reading:
            raise MeshError(
                "unreadable",
                f"truncated and zero-filled: its last {run} bytes (of {size}) are zero, and "
                f"{reading}: a download cut short into a preallocated file leaves this",
            )


def _triangle_list_indices(document: dict) -> set[int]:
    """The accessors that are the indices of a triangle-list primitive (mode 4, the default)."""
    found = set()
    for number, mesh in enumerate(_gltf_list(document, "meshes")):
        for primitive in _gltf_list(mesh, "primitives", f"mesh {number} primitives"):
            if primitive.get("mode", 4) == 4 and isinstance(primitive.get("indices"), int):
                found.add(primitive["indices"])
    return found


def _first_zeroed_element(accessor: dict, views: list, zero_from: int) -> int | None:
    """The first element of `accessor` (in buffer 0, plain: no sparse) lying wholly in the
    zeros from byte `zero_from` of buffer 0; None when none does or the accessor is another
    kind (`check_gltf_sizes` has checked the numbers it reads)."""
    view = accessor.get("bufferView")
    if view is None or "sparse" in accessor or views[view].get("buffer") != 0:
        return None
    count = accessor["count"]
    element = GLTF_COMPONENT_BYTES[accessor["componentType"]] * GLTF_TYPE_WIDTHS[accessor["type"]]
    stride = views[view].get("byteStride")
    stride = stride if isinstance(stride, int) and stride > 0 else element
    start = views[view].get("byteOffset", 0) + accessor.get("byteOffset", 0)
    first = max(0, -(-(zero_from - start) // stride))  # ceil: wholly past zero_from
    return first if first < count else None


def _zero_reading(accessor: dict, number: int, first: int, count: int, indices: bool) -> str:
    """What elements `first`.. of an accessor read as zeros contradict, in words; "" if
    nothing (zeros are a real value of most attributes)."""
    low, high = accessor.get("min"), accessor.get("max")
    bounds = (
        isinstance(low, list)
        and isinstance(high, list)
        and len(low) == len(high) > 0
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in low + high)
    )
    if bounds:
        shown = f"[{', '.join(f'{v:g}' for v in low)}] to [{', '.join(f'{v:g}' for v in high)}]"
        if first == 0 and any(v != 0 for v in low + high):
            return f"glTF accessor {number}'s {count} elements read as all zero, though it declares bounds {shown}"
        if any(v > 0 for v in low) or any(v < 0 for v in high):
            return (
                f"glTF accessor {number}'s elements from {first} on read as zero, outside the "
                f"bounds it declares ({shown})"
            )
    zero_triangles = count // 3 - (first + 2) // 3 if indices else 0  # whole ones only
    if zero_triangles >= ZERO_TRIANGLES:
        return (
            f"the triangle list of glTF accessor {number} reads as {zero_triangles} triangles "
            "naming vertex 0 three times"
        )
    return ""


def _check_sparse(document, views, sizes, sparse, count: int, element: int, what: str) -> None:
    if not isinstance(sparse, dict):
        raise MeshError("unreadable", f"glTF {what}: sparse is not an object")
    changed = _gltf_int(sparse, "count", f"{what} sparse")
    if changed > count:
        raise MeshError("unreadable", f"glTF {what}: sparse count {changed} > count {count}")
    for part, size in (("indices", None), ("values", element)):
        block = sparse.get(part)
        if not isinstance(block, dict):
            raise MeshError("unreadable", f"glTF {what}: sparse {part} is missing")
        if size is None:
            size = GLTF_COMPONENT_BYTES.get(block.get("componentType"))
            if size not in (1, 2, 4):
                raise MeshError("unreadable", f"glTF {what}: sparse indices componentType")
        length, _ = _view_bytes(views, block.get("bufferView"), sizes, what)
        offset = _gltf_int(block, "byteOffset", f"{what} sparse {part}", 0)
        if offset + changed * size > length:
            raise MeshError(
                "unreadable",
                f"glTF {what}: sparse {part} need {offset + changed * size} bytes; "
                f"their bufferView holds {length}",
            )


def validate_file(path: Path, root: Path, geometry: bool = True) -> tuple[list[str], str]:
    """The meshes stage's check of one file (see the module docstring); MeshError if unusable.
    `geometry=False` stops before `check_geometry`, for a caller that saw the same bytes pass.
    Returns, for the manifest, the optional files it names that are missing and the
    `references_sha256` of those it reads (`references`); OSError for one it cannot read.
    """
    path = Path(path)
    resolved = real_path(path)
    if not resolved.is_relative_to(Path(root).resolve()):
        # git-annex links each file into its repository's .git/annex/objects: a root below
        # the repository's top holds links only (their content is never read from outside)
        annexed = (
            ": a git-annex link; point the root at the repository's top folder, or run "
            "`git annex unlock` there"
            if annex_link(resolved)
            else ""
        )
        raise MeshError(
            "outside_root", f"the file resolves to {resolved}, outside the source root{annexed}"
        )
    check_suffix(path)
    check_bytes(path)
    found, missing = references(path, root)
    if geometry:
        check_geometry(path)
    return missing, references_sha256(found)


def references_sha256(files: list[Path]) -> str:
    """One sha256 over the sha256s of the files a mesh makes an importer read (`references`:
    its MTLs and their textures, a glTF's buffers and images), in the order it names them;
    "" when it names none. The manifest's `sha256` is the mesh file's only: with this beside
    it a chunk's content key sees a texture or MTL rewritten under an unchanged mesh (the
    sample and render stages reused the old colours and views). Content, not mtimes, which a
    copy (`cp -p`, `rsync -t`, an archive) keeps or sets back."""
    if not files:
        return ""
    digest = hashlib.sha256()
    for file in files:
        digest.update(versioned_sha256(file).encode() + b"\n")
    return digest.hexdigest()


# The formats whose `check_geometry` reads the file's own bytes only (no materials, textures or
# other files), so its outcome is the same for every copy of the same bytes.
BYTES_ONLY_SUFFIXES = (".obj", ".off", ".stl", ".glb", ".gltf")


def check_geometry(path: Path) -> None:
    """glTF geometry is decoded by Blender in the sample and render stages (Draco, sparse
    accessors, skins...), so here it is checked structurally; the other formats are read."""
    if Path(path).suffix.lower() in GLTF_SUFFIXES:
        document = gltf_document(path)
        check_gltf(document)
        check_gltf_sizes(document, path)
    else:
        load_mesh(path)
