"""A hand-edited points part is one line naming it and the sample stage, never a reshape
traceback in pack or show: each row's values must be `n_points` rows of 3, 6 or 9 channels,
and the columns must hold the part's types."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cg3d.errors import UsageError
from cg3d.formats.points import PointsLookup, find_points, read_points_part, write_points_part


def part_with(tmp_path: Path, edit) -> Path:
    part = tmp_path / "points" / "part-00000.parquet"
    part.parent.mkdir()
    write_points_part(part, ["a", "b"], [np.zeros((4, 3)), np.ones((4, 3))])
    table = pq.read_table(part)
    pq.write_table(edit(table), part)
    return part


def n_points(*values) -> callable:
    return lambda t: t.set_column(2, "n_points", pa.array(values, pa.int32()))


EDITS = {
    "n_points far beyond the values": (n_points(10**9, 4), "holds 12 values, not 1000000000"),
    "a negative n_points": (n_points(-1, 4), "holds 12 values, not -1 points"),
    "n_points zero": (n_points(0, 4), "holds 12 values, not 0 points"),
    "values of 2 channels": (n_points(6, 4), "holds 12 values, not 6 points of 3, 6 or 9"),
    "a null cloud": (
        lambda t: t.set_column(1, "points", pa.array([None, [1.0] * 12], pa.list_(pa.float32()))),
        "holds 0 values, not 4 points",
    ),
    "integer points": (
        lambda t: t.set_column(1, "points", pa.array([[1] * 12] * 2, pa.list_(pa.int64()))),
        "its points column holds list<element: int64>, not list<item: float>",
    ),
    "no n_points column": (lambda t: t.drop_columns(["n_points"]), "(no n_points column)"),
    # bool("no") is True: read as it was, this edit would give both objects colours
    "has_color as text": (
        lambda t: t.set_column(3, "has_color", pa.array(["no", "no"])),
        "its has_color column holds string, not bool",
    ),
}


@pytest.mark.parametrize("case", sorted(EDITS))
@pytest.mark.parametrize("reader", ["pack's lookup", "show's find_points", "read_points_part"])
def test_a_hand_edited_points_part_is_one_line_naming_it(tmp_path, case, reader):
    edit, problem = EDITS[case]
    part = part_with(tmp_path, edit)
    read = {
        "pack's lookup": lambda: PointsLookup(part.parent).get_many(["a", "b"]),
        "show's find_points": lambda: find_points(part.parent, "a"),
        "read_points_part": lambda: list(read_points_part(part)),
    }[reader]
    with pytest.raises(UsageError) as caught:
        read()
    message = str(caught.value)
    assert message.startswith(f"{part} is damaged (") and problem in message, message
    assert message.endswith("rerun `cg3d sample` to rebuild it")


def test_whole_parts_of_every_width_still_read(tmp_path):
    for channels in (3, 6, 9):
        part = tmp_path / f"part-{channels:05d}.parquet"
        cloud = np.arange(8 * channels, dtype=np.float32).reshape(8, channels)
        write_points_part(part, ["a"], [cloud], [f"c{i}" for i in range(channels)])
        ((key, read),) = list(read_points_part(part))
        assert key == "a" and np.array_equal(read, cloud)


def test_a_part_from_before_the_has_color_column_still_reads_as_without_colour(tmp_path):
    part = part_with(tmp_path, lambda t: t.drop_columns(["has_color"]))
    found = PointsLookup(part.parent).get_many(["a", "b"])
    assert {key: stored.has_color for key, stored in found.items()} == {"a": False, "b": False}
    assert np.array_equal(found["b"].points, np.ones((4, 3), np.float32))
