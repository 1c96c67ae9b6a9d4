""".npy arrays from outside (a user's points or vector, a benchmark's clouds, a sample in a
shard): the header is read and bounded before anything is allocated, and pickle never runs.

np.load trusts the header: a 128-byte file claiming shape (10^12, 3) makes it allocate 12 TB
(a MemoryError traceback), and a FIFO blocks it forever. `read_npy` raises ValueError (what
callers already turn into their one line) for either, naming the real cause.
"""

import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np


def read_npy(source: Path | bytes) -> np.ndarray:
    """The array of .npy file `source` (a path or its bytes), refused with a ValueError when
    the file is not a regular file, is not .npy, holds objects (pickle), or its header claims
    more bytes than follow it. A missing file is FileNotFoundError, as np.load's."""
    if isinstance(source, bytes | bytearray | memoryview):
        return _read_header_bounded(io.BytesIO(source), len(source))
    if not stat.S_ISREG(os.stat(source).st_mode):  # opening a FIFO waits for a writer forever
        raise ValueError("not a regular file (a folder, FIFO or device)")
    with open(source, "rb") as handle:
        return _read_header_bounded(handle, os.fstat(handle.fileno()).st_size)


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) that the header of .npy file `path` declares, nothing else read: for a
    reader that decides how to load the file (a pickled object or an array) before it does.
    ValueError when `path` is not a regular file or not .npy."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError("not a regular file (a folder, FIFO or device)")
    with open(path, "rb") as handle:
        shape, dtype = _header(handle)
    return shape, dtype


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


def _read_header_bounded(handle: BinaryIO, size: int) -> np.ndarray:
    """The array of the .npy in `handle` (`size` bytes long), its header checked first."""
    shape, dtype = _header(handle)
    if dtype.hasobject:
        raise ValueError("it holds Python objects, which need pickle (never loaded)")
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    follows = size - handle.tell()
    if claimed > follows:
        raise ValueError(
            f"its header claims shape {shape} of {dtype} ({claimed} bytes), "
            f"but {follows} bytes follow it"
        )
    handle.seek(0)
    return np.load(handle, allow_pickle=False)
