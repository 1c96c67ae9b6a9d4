"""A Blender worker's pipes are closed with its process: a render under `PYTHONDEVMODE=1` or
`-W error` printed "ResourceWarning: unclosed file <_io.TextIOWrapper name=11>" for each one,
a worker killed after a crash, one that ended, one closed at the end of the stage."""

import gc
import warnings

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
