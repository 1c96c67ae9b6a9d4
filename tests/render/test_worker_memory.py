"""Every Blender worker runs under a memory limit (issue 25 §2): an object that needs more is
that object's failure row, and the next object gets a fresh worker. The supervisor is driven
here with a protocol stand-in (`fake_worker.py`) whose allocations are sized by the test;
the real Blender worker's limit is checked in /proc."""

import re
from pathlib import Path

import pytest

from cg3d.render.supervisor import MIN_WORKER_MEMORY, BlenderWorker, worker_memory_bytes


class FakeWorker(BlenderWorker):
    module = "tests.render.fake_worker"


def data_limit(pid: int) -> int:
    """The process's RLIMIT_DATA as the kernel reports it."""
    text = Path(f"/proc/{pid}/limits").read_text()
    return int(re.search(r"Max data size\s+(\d+)", text)[1])


def needing(tmp_path: Path, name: str, mib: int) -> Path:
    path = tmp_path / f"{name}.obj"
    path.write_text(str(mib))
    return path


def test_an_object_past_the_limit_fails_alone_and_the_next_gets_a_fresh_worker(tmp_path):
    limit = MIN_WORKER_MEMORY  # 1 GiB
    with FakeWorker({}, timeout_s=60, memory_bytes=limit) as worker:
        cloud, _, reason = worker.points("a", needing(tmp_path, "a", 16), "y", {}, tmp_path)
        assert reason is None and cloud.shape == (1, 3)
        first = worker.process.pid
        assert data_limit(first) == limit
        _, _, reason = worker.points("big", needing(tmp_path, "big", 4096), "y", {}, tmp_path)
        assert reason is not None and "memory limit: 1024 MiB" in reason
        _, _, reason = worker.points("b", needing(tmp_path, "b", 16), "y", {}, tmp_path)
        assert reason is None
        assert worker.process.pid != first and data_limit(worker.process.pid) == limit


def test_the_same_object_passes_under_a_larger_limit(tmp_path):
    with FakeWorker({}, timeout_s=60, memory_bytes=6 << 30) as worker:
        _, _, reason = worker.points("big", needing(tmp_path, "big", 4096), "y", {}, tmp_path)
        assert reason is None


def physical_memory() -> int:
    kib = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())[1]
    return int(kib) * 1024


@pytest.mark.parametrize("workers", [1, 2, 7, 10_000])
def test_the_default_limit_shares_three_quarters_of_the_machine(workers):
    expected = max(physical_memory() * 3 // 4 // workers, 1 << 30)
    assert abs(worker_memory_bytes(0, workers) - expected) <= 4096 * workers
    assert worker_memory_bytes(2.5, workers) == int(2.5 * 2**30)


@pytest.mark.blender
def test_the_blender_worker_runs_under_its_limit(tmp_path):
    from dataclasses import asdict

    from cg3d.params import SampleConfig
    from tests.render.helpers import write_meshes

    write_meshes(tmp_path / "meshes")
    limit = 3 << 30
    sample = asdict(SampleConfig(points=64))
    with BlenderWorker({"role": "points"}, timeout_s=300, memory_bytes=limit) as worker:
        cloud, _, reason = worker.points(
            "box", tmp_path / "meshes" / "box.ply", "y", sample, tmp_path / "meshes"
        )
        assert reason is None and cloud.shape == (64, 3)
        assert data_limit(worker.process.pid) == limit


def test_the_render_threads_work_out_the_limit_once_and_share_it(monkeypatch, tmp_path):
    """`render.workers` threads each start a Blender under the same limit, read once (it reads
    /proc/meminfo), not once per thread."""
    from cg3d.params import RenderConfig
    from cg3d.render import stage

    asked, limits, threads, outliving = [], [], [], []

    class Recorded:
        def __init__(
            self, settings, timeout_s, memory_bytes, tmp_root, share, thread_outlives_it=False
        ) -> None:
            limits.append(memory_bytes)
            threads.append(share)
            outliving.append(thread_outlives_it)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

    def memory(gib: float, workers: int) -> int:
        asked.append((gib, workers))
        return (3 << 30) + len(asked)  # a second call would give another limit

    monkeypatch.setattr(stage, "worker_memory_bytes", memory)
    monkeypatch.setattr(stage, "BlenderWorker", Recorded)
    monkeypatch.setattr(stage, "render_chunk", lambda worker, views, on_object: views)
    monkeypatch.setattr(stage, "cpu_count", lambda: 7)  # a container's quota, say
    jobs = iter([(2,), (3,), (5,), (7,), (11,)])
    views = stage._run_threads(jobs, 3, RenderConfig(worker_memory=0), None, tmp_path)
    assert views == 28  # every job ran once
    assert asked == [(0, 3)]
    assert limits == [(3 << 30) + 1] * 3
    assert threads == [2] * 3  # each Blender's share of the 7 CPUs: not a thread per CPU each
    assert outliving == [True] * 3  # each thread closes its Blender: it may end with the stage
