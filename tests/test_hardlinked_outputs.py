"""Outputs that DVC checked out as hardlinks into its cache are replaced, never written through.

With `cache.type` hardlink (.dvc/config lists it: the first that works on ext4, XFS without
reflink, NFS) each checked-out output file is a read-only (0444) link to the cache's own file.
A rerun of a stage into that folder must put a new file in its place: a write through the link
(an open for writing, an append, a truncate) changes the cache, and root, whom 0444 does not
stop, would do it in silence. So every writer of an output file goes through `atomic_path` or
`atomic_files` (a temporary file renamed over the old name).
"""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cg3d.files import atomic_files, write_json
from cg3d.formats.npy import write_npy
from cg3d.formats.tables import write_csv
from cg3d.formats.tar import write_tar
from cg3d.models.checkpoint import write_payload

CACHED = b"the bytes DVC's cache holds\n"


def write_with_atomic_files(path: Path) -> None:
    with atomic_files(path.parent, [path.name]) as paths:
        paths[path.name].write_bytes(b"new")


WRITERS: dict[str, Callable[[Path], None]] = {
    "write_json": lambda path: write_json(path, {"new": 1}),
    "write_npy": lambda path: write_npy(path, np.zeros(3, dtype=np.float32)),
    "write_csv": lambda path: write_csv(path, [{"new": 1}]),
    "write_tar": lambda path: write_tar(path, {"a.txt": b"new"}),
    "write_payload": lambda path: write_payload(path, {"format": "new"}),
    "atomic_files": write_with_atomic_files,
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_rewrite_of_a_checked_out_output_leaves_the_cache_file(tmp_path, writer):
    cache = tmp_path / "cache" / "3f" / "a9c0"
    output = tmp_path / "out" / "file"
    cache.parent.mkdir(parents=True)
    output.parent.mkdir()
    cache.write_bytes(CACHED)
    os.link(cache, output)
    cache.chmod(0o444)

    WRITERS[writer](output)

    assert cache.read_bytes() == CACHED
    assert output.read_bytes() != CACHED
    assert output.stat().st_nlink == 1  # a file of its own, no longer the cache's
