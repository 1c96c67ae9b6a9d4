"""`.npy` files from outside are bounded by their header before anything is allocated: a
128-byte file claiming (10^12, 3) floats was a 12 TB allocation (a MemoryError traceback from
`cg3d classify` and `search --embedding`), and a FIFO blocked np.load forever."""

import os

import numpy as np
import pytest

from cg3d.errors import UsageError
from cg3d.formats.npy import read_npy
from cg3d.formats.pointfiles import read_point_file
from cg3d.formats.shards import decode_points
from tests.formats.npyfiles import ABSURD, npy_claiming


@pytest.mark.parametrize("descr", ["<f4", "<f8"])  # <f4 (N, 3) is also decode_points' fast path
def test_a_header_claiming_more_than_the_file_holds_is_refused_before_allocating(tmp_path, descr):
    data = npy_claiming(ABSURD, descr)
    (tmp_path / "absurd.npy").write_bytes(data)
    for source in (tmp_path / "absurd.npy", data):
        with pytest.raises(ValueError, match=r"header claims shape \(1000000000000, 3\)"):
            read_npy(source)
    with pytest.raises(ValueError):
        decode_points(data)
    with pytest.raises(UsageError, match="absurd.npy: unreadable point file .*header claims"):
        read_point_file(tmp_path / "absurd.npy")


def test_an_exact_header_reads_as_numpy_wrote_it(tmp_path):
    values = np.arange(12, dtype="<f8").reshape(4, 3)
    data = npy_claiming((4, 3), "<f8", values.tobytes())
    (tmp_path / "exact.npy").write_bytes(data)
    np.testing.assert_array_equal(read_npy(tmp_path / "exact.npy"), values)
    np.testing.assert_array_equal(read_npy(data), values)
    with pytest.raises(ValueError, match=r"\(96 bytes\), but 95 bytes follow"):
        read_npy(data[:-1])


def test_an_object_array_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        read_npy(tmp_path / "objects.npy")


@pytest.mark.timeout(120)  # the bug was a hang: fail, not block the run
def test_a_fifo_or_folder_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "fifo.npy")
    for path in (tmp_path / "fifo.npy", tmp_path):
        with pytest.raises(ValueError, match="not a regular file"):
            read_npy(path)
