"""A Blender worker ends with the stage that started it: after a `kill -9` of `cg3d render`
the worker (its stdin never read again while it renders) rendered on to the end of its object."""

import os
import subprocess
import sys
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
