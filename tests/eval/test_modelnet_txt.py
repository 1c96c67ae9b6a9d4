"""A ModelNet shape file that is not rows of numbers is a skipped shape with its reason
(issue 25 §4), never an `np.loadtxt` traceback: whatever the file holds instead (text, binary
bytes, nothing, too few columns), the other shapes are read and the pass counts it."""

import logging

import numpy as np
import pytest

from cg3d.eval.readers import open_benchmark

from .files import write_modelnet

NOT_POINTS = {
    "text": b"this is not a point cloud\n",
    "a header row": b"x,y,z,nx,ny,nz\n0,0,0,0,0,1\n",
    "binary bytes": bytes(range(256)) * 4,
    "not utf-8": b"\xff\xfe\x00\x01,\x02\n",
    "empty": b"",
    "two columns": b"0.1,0.2\n0.3,0.4\n",
    "ragged rows": b"0,0,0,0,0,1\n0,0\n",
    "numbers and words": b"0,0,0,0,0,1\n1,1,one,0,0,1\n",
}


@pytest.mark.parametrize("content", list(NOT_POINTS))
def test_a_modelnet_txt_that_is_not_points_is_a_skipped_shape(tmp_path, caplog, content):
    ids = write_modelnet(tmp_path / "mn", 40)
    bad = tmp_path / "mn" / "airplane" / f"{ids[0]}.txt"
    bad.write_bytes(NOT_POINTS[content])
    benchmark = open_benchmark("modelnet40", tmp_path / "mn")
    with caplog.at_level(logging.WARNING, logger="cg3d.eval.readers"):
        shapes = list(benchmark.shapes())
    assert [shape.key for shape in shapes] == ids[1:]
    assert benchmark.skipped() == 1 and benchmark.refused() == 0
    (message,) = [r.getMessage() for r in caplog.records if ids[0] in r.getMessage()]
    assert str(bad) in message  # the reason names the file
    assert all(shape.points.shape[1] == 6 and np.isfinite(shape.points).all() for shape in shapes)
    # a second pass counts afresh
    list(benchmark.shapes())
    assert benchmark.skipped() == 1


def test_zeroshot_counts_a_skipped_modelnet_shape(tmp_path, tiny_checkpoint):
    from cg3d.eval.zeroshot import ZeroShotConfig, zeroshot

    ids = write_modelnet(tmp_path / "mn", 40)
    (tmp_path / "mn" / "airplane" / f"{ids[0]}.txt").write_text("hello\n")
    config = ZeroShotConfig(dataset="modelnet40", root=str(tmp_path / "mn"), text_cache="")
    metrics = zeroshot(tiny_checkpoint, tmp_path / "out", config)
    assert metrics["n_shapes"] == len(ids) - 1 and metrics["skipped_samples"] == 1


@pytest.mark.parametrize("name", ["modelnet40_shape_names.txt", "modelnet40_test.txt", "lvis.json"])
def test_a_benchmark_list_file_past_the_list_bound_is_refused_unread(tmp_path, monkeypatch, name):
    """A dataset's own list files (ModelNet's names and splits, OpenShape's lvis.json) are
    bounded as a user's lists are. Before: read whole, however large."""
    import os

    import cg3d.files
    from cg3d.errors import UsageError
    from cg3d.eval.readers import read_lvis_split

    monkeypatch.setattr(cg3d.files, "MAX_LIST_BYTES", 1 << 20)
    write_modelnet(tmp_path / "mn", 40)
    path = tmp_path / "mn" / name
    path.touch()
    os.truncate(path, (1 << 20) + 1)  # sparse: no disk used
    with pytest.raises(UsageError) as caught:
        if name == "lvis.json":
            read_lvis_split(path)
        else:
            open_benchmark("modelnet40", tmp_path / "mn")
    assert str(caught.value) == (
        f"--root: {path} holds {(1 << 20) + 1} bytes, more than the 1 MiB a list or annotation "
        "file may hold"
    )
