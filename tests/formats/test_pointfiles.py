import numpy as np
import pytest

from cg3d.errors import UsageError
from cg3d.formats.pointfiles import read_point_file


def test_read_point_file_formats(tmp_path):
    points = np.arange(12, dtype=float).reshape(4, 3)
    np.save(tmp_path / "a.npy", points)
    np.savetxt(tmp_path / "b.txt", points, delimiter=",")
    np.savetxt(tmp_path / "c.xyz", points)
    for name in ("a.npy", "b.txt", "c.xyz"):
        loaded, faces = read_point_file(tmp_path / name)
        assert faces is None and np.allclose(loaded, points)
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(UsageError, match="expected an"):
        read_point_file(tmp_path / "flat.npy")
