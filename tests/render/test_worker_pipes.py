"""A Blender worker's pipes are closed with its process: a render under `PYTHONDEVMODE=1` or
`-W error` printed "ResourceWarning: unclosed file <_io.TextIOWrapper name=11>" for each one,
a worker killed after a crash, one that ended, one closed at the end of the stage."""

import gc
import warnings

import pytest

from cg3d.errors import UsageError
from cg3d.render.supervisor import MIN_WORKER_MEMORY, BlenderWorker


class FakeWorker(BlenderWorker):
    module = "tests.render.fake_worker"  # the protocol without Blender


def needing(folder, name: str, mib: int):
    """A file the stand-in reads as the MiB to allocate for it."""
    path = folder / f"{name}.obj"
    path.write_text(str(mib))
    return path


def test_no_pipe_of_a_worker_is_left_open(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with FakeWorker({}, timeout_s=60, memory_bytes=MIN_WORKER_MEMORY) as worker:
            _, _, reason = worker.points("a", needing(tmp_path, "a", 16), "y", {}, tmp_path)
            assert reason is None
            # past its memory limit the stand-in dies: killed, and a fresh one started
            _, _, reason = worker.points("big", needing(tmp_path, "big", 4096), "y", {}, tmp_path)
            assert reason is not None
            _, _, reason = worker.points("b", needing(tmp_path, "b", 16), "y", {}, tmp_path)
            assert reason is None
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []


class SilentWorker(BlenderWorker):
    module = "tests.render.silent_worker"  # exits 0 without its ready line


@pytest.mark.parametrize("say_on", ["stderr", "stdout"])
def test_a_worker_that_exits_without_its_ready_line_is_one_line(tmp_path, say_on):
    """It was a WorkerDied traceback (stderr) or a JSONDecodeError one (stdout): now a
    UsageError, one line for the command, naming the worker and what it printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with (
            SilentWorker({"say_on": say_on}, timeout_s=60) as worker,
            pytest.raises(UsageError) as raised,
        ):
            worker.points("a", needing(tmp_path, "a", 16), "y", {}, tmp_path)
        gc.collect()
    line = str(raised.value)
    assert "\n" not in line
    assert "tests.render.silent_worker" in line and "did not start" in line, line
    assert "hello from another cg3d" in line, line
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_worker_that_hangs_at_start_up_is_one_line(tmp_path, monkeypatch):
    """It was an AttributeError traceback: the timed-out worker, killed and forgotten, was
    asked its exit code."""
    from cg3d.render import supervisor

    monkeypatch.setattr(supervisor, "STARTUP_TIMEOUT_S", 1.0)
    with (
        SilentWorker({"say_on": "hang"}, timeout_s=60) as worker,
        pytest.raises(UsageError, match=r"silent_worker.* did not start: timeout: start-up"),
    ):
        worker.points("a", needing(tmp_path, "a", 16), "y", {}, tmp_path)
