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


def test_text_points_stream_with_commas_comments_and_blank_lines(tmp_path):
    text = tmp_path / "scan.xyz"
    text.write_text("# x y z r g b\n1,2,3,0,0,0\n\n4 5 6 1 1 1\r\n  7.5 , 8 , 9 , 0 , 1 , 0\n")
    loaded, _ = read_point_file(text)
    np.testing.assert_array_equal(loaded, [[1, 2, 3], [4, 5, 6], [7.5, 8, 9]])


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\n \n# only a comment\n", "no points in it"), (b"\xff\xfe1 2 3\n", "can't decode byte")],
)
def test_a_text_point_file_without_points_is_one_line(tmp_path, content, message):
    path = tmp_path / "nothing.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=f"nothing.txt: unreadable point file .*{message}"):
        read_point_file(path)


def test_a_text_point_file_over_the_bound_is_refused_unread(tmp_path):
    path = tmp_path / "sparse.txt"
    with path.open("wb") as handle:  # sparse: no disk taken, and read whole it would take 5 GB
        handle.write(b"1 2 3\n")
        handle.truncate(5 << 30)
    with pytest.raises(UsageError, match=r"5368709120 bytes, more than 4294967296"):
        read_point_file(path)


def test_a_point_csv_saved_by_a_spreadsheet_reads(tmp_path):
    # Excel's "CSV UTF-8": a byte-order mark, then CRLF lines; "\ufeff0" was "could not convert"
    path = tmp_path / "scan.csv"
    path.write_bytes("0,0,0\r\n1,2,3\r\n0.5,-1,2\r\n".encode("utf-8-sig"))
    points, faces = read_point_file(path)
    assert points.tolist() == [[0, 0, 0], [1, 2, 3], [0.5, -1, 2]] and faces is None


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("leica.pts", "# scan\n3\n1 2 3 -5 10 20 30\n4 5 6 -5 10 20 30\n7 8 9 -5 10 20 30\n"),
        (
            "table.csv",
            "x,y,z,nx,ny,nz,r,g,b\n1,2,3,0,0,1,9,9,9\n4,5,6,0,0,1,9,9,9\n7,8,9,0,0,1,9,9,9\n",
        ),
        ("cloudcompare.txt", "//X,Y,Z,R,G,B\n1,2,3,9,9,9\n4,5,6,9,9,9\n7,8,9,9,9,9\n"),
    ],
)
def test_a_count_line_or_a_header_of_names_is_read_as_such(tmp_path, name, text):
    # numpy said "the number of columns changed from 1 to 7 at row 2; use `usecols`" and
    # "could not convert string 'x' to float64 at row 0, column 1."
    path = tmp_path / name
    path.write_text(text)
    points, _ = read_point_file(path)
    assert points.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5\n1 2 3\n4 5 6\n", "line 1 counts 5 points, 2 rows follow it"),
        ("# x y z\n\n1 2 3\n4 5 6\nx y z\n7 8 9\n", "line 5: 'x' is not a number"),
        ("1 2 3\n\n# a gap\n4 5 6\n7 8\n", "line 5 holds 2 numbers, the rows before it 3"),
        ("1,2,3\n4,5,six\n", "line 2: 'six' is not a number"),
    ],
)
def test_a_text_point_file_that_stops_being_rows_names_its_line(tmp_path, text, message):
    path = tmp_path / "scan.pts"
    path.write_text(text)
    with pytest.raises(UsageError) as raised:
        read_point_file(path)
    assert str(raised.value) == f"{path}: unreadable point file ({message})"


def test_point_files_and_mtl_options_share_one_number_test():
    # one reading of "is this word a number" for a point row and an MTL option's values
    from cg3d.formats import pointfiles
    from cg3d.geometry import meshio

    assert meshio.is_number is pointfiles.is_number
