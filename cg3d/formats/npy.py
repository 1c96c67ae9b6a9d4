""".npy arrays from outside (a user's points or vector, a benchmark's clouds, a sample in a
shard): the header is read and bounded before anything is allocated, and pickle never runs.

np.load trusts the header: a 128-byte file claiming shape (10^12, 3) makes it allocate 12 TB
(a MemoryError traceback), and a FIFO blocks it forever. `read_npy` raises ValueError (what
callers already turn into their one line) for either, naming the real cause.

`write_npy` is the one writer of the arrays we write (`cg3d embed`, text features, a Blender
worker's points).
"""

import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cg3d.files import atomic_path


@dataclass
class NpyFile:
    """An .npy file opened once: what its header declares, its size, and the open handle
    (positioned just after the header)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    size: int  # bytes of the whole file
    handle: BinaryIO

    def array(self) -> np.ndarray:
        """The array, refused with a ValueError when it holds objects (pickle) or its header
        claims more bytes than follow it."""
        if self.dtype.hasobject:
            raise ValueError("it holds Python objects, which need pickle (never loaded)")
        claimed = int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize
        follows = self.size - self.handle.tell()
        if claimed > follows:
            raise ValueError(
                f"its header claims shape {self.shape} of {self.dtype} ({claimed} bytes), "
                f"but {follows} bytes follow it"
            )
        self.handle.seek(0)
        return np.load(self.handle, allow_pickle=False)


@contextmanager
def open_npy(path: Path) -> Iterator[NpyFile]:
    """The .npy file at `path`, stat'ed and opened once and its header read: for a reader that
    decides how to load it (an array, or a pickled object it allows) by what the header says.
    ValueError when `path` is not a regular file or not .npy; a missing file is
    FileNotFoundError, as np.load's."""
    status = os.stat(path)
    if not stat.S_ISREG(status.st_mode):  # opening a FIFO waits for a writer forever
        raise ValueError("not a regular file (a folder, FIFO or device)")
    with open(path, "rb") as handle:
        yield NpyFile(*_header(handle), status.st_size, handle)


def read_npy(source: Path | bytes) -> np.ndarray:
    """The array of .npy file `source` (a path or its bytes), refused with a ValueError when
    the file is not a regular file, is not .npy, holds objects (pickle), or its header claims
    more bytes than follow it. A missing file is FileNotFoundError, as np.load's."""
    if isinstance(source, bytes | bytearray | memoryview):
        handle = io.BytesIO(source)
        return NpyFile(*_header(handle), len(source), handle).array()
    with open_npy(source) as npy:
        return npy.array()


def _header(handle: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the .npy header at the start of `handle`, which is left after it."""
    try:
        version = np.lib.format.read_magic(handle)
    except ValueError:
        raise ValueError("not an .npy file (no NPY magic at its start)") from None
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"unknown .npy format version {version}")
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    return shape, dtype


class _PythonWrites:
    """A binary handle seen through its `write` alone: numpy then writes the data with it, not
    with `ndarray.tofile` (C's fwrite), whose short write on a full disk is an OSError with no
    errno ("1280 requested and 992 written")."""

    def __init__(self, handle: BinaryIO) -> None:
        self.write = handle.write


def write_npy(path: Path, array: np.ndarray) -> None:
    """`array` as an .npy file at `path`, atomically (`atomic_path`): a failed write leaves no
    file and is an OSError naming `path` with the file system's cause (ENOSPC, EROFS...)."""
    with atomic_path(Path(path)) as tmp, tmp.open("wb") as handle:
        np.save(_PythonWrites(handle), array, allow_pickle=False)
