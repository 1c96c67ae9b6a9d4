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


ASCII_HEADER = (
    "ply\nformat ascii 1.0\nelement vertex {}\nproperty float x\nproperty float y\n"
    "property float z\nend_header\n"
)


def test_an_ascii_ply_cut_short_of_its_vertex_count_is_refused(tmp_path):
    # trimesh read the two rows there were: classified as a 2-point cloud, exit 0
    cut = tmp_path / "cut.ply"
    cut.write_text(ASCII_HEADER.format(1000000000) + "0 0 0\n1 1 1\n")
    with pytest.raises(
        UsageError, match="cut.ply: .*header declares 1000000000 vertices, it holds 2"
    ):
        read_point_file(cut)
    whole = tmp_path / "whole.ply"
    whole.write_text(ASCII_HEADER.format(3) + "0 0 0\n1 1 1\n2 0 1\n")
    np.testing.assert_array_equal(read_point_file(whole)[0], [[0, 0, 0], [1, 1, 1], [2, 0, 1]])
