"""A Blender worker ends with the stage that started it: after a `kill -9` of `cg3d render`
the worker (its stdin never read again while it renders) rendered on to the end of its object."""

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

STAGE = """
import sys
from pathlib import Path
from cg3d.render.supervisor import MIN_WORKER_MEMORY, BlenderWorker

class FakeWorker(BlenderWorker):
    module = "tests.render.fake_worker"

folder = Path(sys.argv[1])
(folder / "a.obj").write_text("hang")
with FakeWorker({}, timeout_s=3000, memory_bytes=MIN_WORKER_MEMORY) as worker:
    worker.start()
    print(worker.process.pid, flush=True)
    worker.points("a", folder / "a.obj", "y", {}, folder)
"""


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie not yet reaped by whoever adopted it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_the_worker_ends_when_the_stage_is_killed(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    stage = subprocess.Popen(
        [sys.executable, "-c", STAGE, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env=env,
    )
    worker = int(stage.stdout.readline())
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "a.obj.busy").exists():  # the worker is "rendering"
            assert time.monotonic() < deadline and stage.poll() is None
            time.sleep(0.1)
        stage.kill()
        stage.wait()
        deadline = time.monotonic() + 60
        while not gone(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone(worker)
    finally:
        stage.kill()
        stage.stdout.close()
        if not gone(worker):
            os.kill(worker, 9)


def test_a_worker_started_from_a_passing_thread_outlives_that_thread(tmp_path):
    """The kernel signals a child when the *thread* that started it ends. The demo starts its
    Blender from a web handler's pool thread, which ends when idle: Blender was killed
    between, or during, requests. Only the main thread, or a thread that closes the worker
    before it ends (the render stage's), asks for it now."""
    from cg3d.render.supervisor import MIN_WORKER_MEMORY, BlenderWorker

    class FakeWorker(BlenderWorker):
        module = "tests.render.fake_worker"

    (tmp_path / "a.obj").write_text("1")
    with FakeWorker({}, timeout_s=300, memory_bytes=MIN_WORKER_MEMORY) as worker:
        starter = threading.Thread(target=worker.start)
        starter.start()
        starter.join()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(timeout=5)  # killed at once, had it asked
        assert worker.process.poll() is None
        worker.points("a", tmp_path / "a.obj", "y", {}, tmp_path)
        assert worker.restarts == 0
