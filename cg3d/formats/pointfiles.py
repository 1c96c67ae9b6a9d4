"""A user's point files (the app's and `cg3d classify`/`scene`'s inputs): npy, text, PLY.

Meshes go through the pipeline's `load_mesh`; benchmark files through `cg3d.eval.readers`.
"""

from pathlib import Path

import numpy as np

from cg3d.errors import UsageError

POINT_SUFFIXES = (".npy", ".txt", ".xyz", ".csv", ".pts")


def read_point_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(vertices or points (N, 3), faces (F, 3) or None) of a user's file.

    npy/txt/xyz/csv/pts hold points (xyz in the first three columns, comma or space separated);
    PLY is read with trimesh and gives faces when it has any. Other suffixes are meshes: the
    caller loads them with the pipeline's `load_mesh`.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix in POINT_SUFFIXES:
            text = path.read_text()
            array = np.loadtxt(text.replace(",", " ").splitlines(), dtype=np.float64, ndmin=2)
        elif suffix == ".ply":
            import trimesh

            loaded = trimesh.load(path, process=False)
            faces = getattr(loaded, "faces", None)
            has_faces = faces is not None and len(faces) > 0
            return np.asarray(loaded.vertices, dtype=np.float64), (
                np.asarray(faces) if has_faces else None
            )
        else:
            raise UsageError(
                f"{path}: not a point file (use one of {', '.join(POINT_SUFFIXES)}, .ply)"
            )
    except (ValueError, OSError) as error:
        raise UsageError(f"{path}: unreadable point file ({error})") from None
    if array.ndim != 2 or array.shape[1] < 3 or len(array) == 0:
        raise UsageError(f"{path}: expected an (N, 3+) array of points, got shape {array.shape}")
    return np.asarray(array[:, :3], dtype=np.float64), None
