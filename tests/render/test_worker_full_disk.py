"""A full disk under a Blender worker stops the stage (issue t70b): the worker's write refused
for want of room is carried back to the supervisor as that OSError, naming the file, not turned
into a failure row of the object (and of every object after it). Driven through the worker's
own `serve` loop, with Blender's renderer stood in (`full_disk_worker.py`)."""

import errno

import pytest

from cg3d.render.supervisor import BlenderWorker


class FullDiskWorker(BlenderWorker):
    module = "tests.render.full_disk_worker"


def test_a_full_disk_in_the_worker_is_the_stages_error_not_a_failure_row(tmp_path):
    for name in ("good", "full"):
        (tmp_path / f"{name}.obj").write_text("v 0 0 0\n")
    with FullDiskWorker({}, timeout_s=60, tmp_root=tmp_path / "scratch") as worker:
        cloud, _, reason = worker.points("a", tmp_path / "good.obj", "y", {}, tmp_path)
        assert reason is None and cloud.shape == (1, 3)
        with pytest.raises(OSError) as raised:
            worker.points("b", tmp_path / "full.obj", "y", {}, tmp_path)
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename.endswith("b.points.npy")
    assert raised.value.strerror == "No space left on device"


def test_a_network_disks_stale_file_in_the_worker_stops_the_stage_not_a_failure_row(tmp_path):
    (tmp_path / "stale.obj").write_text("v 0 0 0\n")
    scratch = tmp_path / "scratch"
    with (
        FullDiskWorker({}, timeout_s=60, tmp_root=scratch) as worker,
        pytest.raises(OSError) as raised,
    ):
        worker.points("c", tmp_path / "stale.obj", "y", {}, tmp_path)
    assert raised.value.errno == errno.ESTALE  # the worker's RenderFailure, from its cause
    assert raised.value.filename == str(tmp_path / "stale.obj")
