"""A user's point files (the app's and `cg3d classify`/`scene`'s inputs): npy, text, PLY; and
the point PLY scene-query writes (`write_point_ply`).

Meshes go through the pipeline's `load_mesh`; benchmark files through `cg3d.eval.readers`.
"""

import warnings
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import numpy as np

from cg3d.errors import UsageError
from cg3d.files import file_stand_in, require_regular_file
from cg3d.formats.npy import read_npy

POINT_SUFFIXES = (".npy", ".txt", ".xyz", ".csv", ".pts")
MAX_POINT_FILE_BYTES = 1 << 32  # as for a mesh file (meshio.MAX_MESH_BYTES)


def read_point_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(vertices or points (N, 3), faces (F, 3) or None) of a user's file.

    npy/txt/xyz/csv/pts hold points (xyz in the first three columns, comma or space separated);
    PLY is read with trimesh and gives faces when it has any. Other suffixes are meshes: the
    caller loads them with the pipeline's `load_mesh`. Whatever is wrong with the file (empty,
    truncated, not numbers, a PLY vertex without x, y or z, no points) is one UsageError
    naming it.
    """
    path = Path(path)
    require_regular_file(path, f"no such file {path}")  # a FIFO: named, never opened
    suffix = path.suffix.lower()
    if suffix not in (*POINT_SUFFIXES, ".ply"):
        raise UsageError(f"{path}: not a point file (use one of {', '.join(POINT_SUFFIXES)}, .ply)")
    faces = None
    try:
        if suffix == ".npy":
            array = read_npy(path)
        elif suffix == ".ply":
            array, faces = _read_ply(path)
        else:
            array = _read_text_points(path)
    except KeyError as error:  # trimesh on a PLY vertex element without x, y or z
        raise UsageError(f"{path}: unreadable point file (no vertex property {error})") from None
    except (ValueError, OSError, EOFError, IndexError) as error:  # EOFError: a 0-byte .npy
        # a Git LFS pointer was "no NPY magic at its start" or a float parse error
        reason = file_stand_in(path) or error or type(error).__name__
        raise UsageError(f"{path}: unreadable point file ({reason})") from None
    check_points_array(array, str(path))
    check_float32_points(path, array)
    return np.asarray(array[:, :3], dtype=np.float64), faces


def check_float32_points(path: Path, array: np.ndarray) -> None:
    """UsageError naming `path` when it stores its points as float32 (a float32 .npy, a PLY
    of `float` x, y, z) too far from the origin for their shape (a scan at a UTM offset)."""
    from cg3d.geometry.frame import float32_quantization
    from cg3d.geometry.meshio import float32_file

    suffix = path.suffix.lower()
    if array.dtype == np.float32 or (suffix == ".ply" and float32_file(path, suffix)):
        reason = float32_quantization(array)
        if reason:
            raise UsageError(
                f"{path}: the file stores {reason}; save it in double or nearer the origin"
            )


def _read_text_points(path: Path) -> np.ndarray:
    """The numbers of a text point file, its lines streamed into `np.loadtxt`: memory holds
    the array, not the whole text and its lines as well (bench/bench_pointfile.py). A first
    row that is a count (a Leica `.pts`) or a header of names (`x,y,z,r,g,b`) is read as
    such. ValueError for a file over MAX_POINT_FILE_BYTES, with no points, with fewer or more
    points than its count line says, or naming the first line that is not a row of numbers."""
    size = path.stat().st_size
    if size > MAX_POINT_FILE_BYTES:
        raise ValueError(f"{size} bytes, more than {MAX_POINT_FILE_BYTES} for one point file")
    # utf-8-sig: a spreadsheet's "CSV UTF-8" begins with a byte-order mark ("\ufeff0" is no number)
    with path.open(encoding="utf-8-sig") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data": said below
        lines = (line.replace(",", " ") for line in handle)
        first, declared = _first_row(lines)
        try:
            array = np.loadtxt(chain(first, lines), dtype=np.float64, ndmin=2)
        except ValueError as error:
            if isinstance(error, UnicodeDecodeError):
                raise
            # numpy's row numbers skip comments and blank lines, and its words are its own
            # ("use `usecols`"): the file's own line is found again, on this failure only
            raise ValueError(_bad_line(path) or str(error)) from None
    if array.size == 0:
        raise ValueError("no points in it")
    if declared is not None and len(array) != declared[1]:
        raise ValueError(
            f"line {declared[0]} counts {declared[1]} points, {len(array)} rows follow it"
        )
    return array


def _words(line: str) -> list[str]:
    """A text point line's words, as `np.loadtxt` reads it: `#` starts a comment."""
    return line.partition("#")[0].replace(",", " ").split()


def is_number(word: str) -> bool:
    """Whether a word of a text file is one number as Python reads it (`1e-3`, `nan`, `-inf`);
    point files and MTL texture options alike."""
    try:
        float(word)
    except ValueError:
        return False
    return True


def _count_or_header(words: list[str]) -> str | None:
    """The kind of a first row: "count" for one whole number (a Leica `.pts`: no point has one
    coordinate), "header" for one of names alone (`x y z nx ny nz`, CloudCompare's `//X`),
    None for a row to read as numbers."""
    if len(words) == 1 and words[0].isascii() and words[0].isdigit():
        return "count"
    if not any(is_number(word) for word in words):
        return "header"
    return None


def _first_row(lines: Iterator[str]) -> tuple[list[str], tuple[int, int] | None]:
    """Reads `lines` up to their first row (comments and blank lines before it dropped): ([that
    row] to read as numbers, or [] for a count or header row), and (its line number, the count)
    for a count row."""
    for number, line in enumerate(lines, 1):
        words = _words(line)
        if not words:
            continue
        kind = _count_or_header(words)
        if kind is None:
            return [line], None
        return [], ((number, int(words[0])) if kind == "count" else None)
    return [], None


def _bad_line(path: Path) -> str | None:
    """Where a text point file stops being rows of numbers: its first line holding a word that
    is not a number, or a count of numbers other than the first row's; None if none does."""
    columns, first = None, True
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            words = _words(line)
            if not words:
                continue
            if first:
                first = False
                if _count_or_header(words):
                    continue
            word = next((word for word in words if not is_number(word)), None)
            if word is not None:
                return f"line {number}: {word!r} is not a number"
            if columns is None:
                columns = len(words)
            elif len(words) != columns:
                return f"line {number} holds {len(words)} numbers, the rows before it {columns}"
    return None


def check_points_array(array: np.ndarray, what: str) -> None:
    """UsageError naming `what` unless `array` is (N ≥ 1, 3+) real numbers: the one check of
    a user's points, from a file or handed to the Python API."""
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise UsageError(f"{what}: points must be real numbers, got {array.dtype} values")
    if array.ndim != 2 or array.shape[1] < 3 or len(array) == 0:
        raise UsageError(f"{what}: expected an (N, 3+) array of points, got shape {array.shape}")


def _read_ply(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A PLY's vertices and its faces (None without any), by trimesh."""
    import trimesh

    loaded = trimesh.load(path, process=False)
    vertices = getattr(loaded, "vertices", None)  # a PLY without vertices loads as an empty Scene
    if vertices is None:
        raise ValueError("no vertices in it")
    declared = _declared_vertices(path)
    if declared is not None and len(vertices) != declared:  # trimesh reads a cut ASCII file
        raise ValueError(f"its header declares {declared} vertices, it holds {len(vertices)}")
    faces = getattr(loaded, "faces", None)
    return np.asarray(vertices), (np.asarray(faces) if faces is not None and len(faces) else None)


MAX_PLY_HEADER = 1 << 16  # bytes: a header is a few hundred


def _declared_vertices(path: Path) -> int | None:
    """The count of a PLY header's `element vertex` line (None without one)."""
    with open(path, "rb") as handle:
        header = handle.read(MAX_PLY_HEADER)
    for line in header.partition(b"end_header")[0].decode("ascii", "replace").splitlines():
        words = line.split()
        if words[:2] == ["element", "vertex"] and len(words) > 2 and words[2].isdigit():
            return int(words[2])
    return None


def write_point_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """`points` (N, 3) with their RGBA `colors` (N, 4) as a binary PLY of doubles (scene-query's
    heatmap.ply; `read_point_file` reads it back): trimesh writes float32, which a georeferenced
    scan's coordinates do not fit (at 4,000 km, float32's step is 25 cm: the heat map sat off its
    scan in CloudCompare and open3d). Meshes are written by trimesh (`synthetic.write_ply`)."""
    vertex = np.dtype(
        [(axis, "<f8") for axis in "xyz"] + [(c, "u1") for c in ("red", "green", "blue", "alpha")]
    )
    rows = np.empty(len(points), dtype=vertex)
    for i, axis in enumerate("xyz"):
        rows[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue", "alpha")):
        rows[channel] = colors[:, i]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(rows)}\n"
        + "".join(f"property double {axis}\n" for axis in "xyz")
        + "".join(f"property uchar {c}\n" for c in ("red", "green", "blue", "alpha"))
        + "end_header\n"
    )
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(rows.tobytes())
