"""A paused process is not a hung one: the time a Blender worker, or the whole process group
(Ctrl-Z then `fg`, a Slurm suspend: SIGSTOP to every process, later SIGCONT), spends stopped
does not count against the per-object timeout; a worker that truly hangs still times out.
Driven with real signals on a protocol stand-in (`slow_worker.py`)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.stopping import stopped_for

REPO = Path(__file__).resolve().parents[2]

# One object through a `BlenderWorker` running `slow_worker.py`; prints its reason (null: ok).
DRIVER = """
import json, sys
from pathlib import Path
from cg3d.render.supervisor import BlenderWorker

class SlowWorker(BlenderWorker):
    module = "tests.render.slow_worker"

folder, timeout = Path(sys.argv[1]), float(sys.argv[2])
with SlowWorker({}, timeout_s=timeout, tmp_root=folder / "tmp") as worker:
    _, _, reason = worker.points("a", folder / "a.obj", "y", {}, folder)
    print(json.dumps({"reason": reason}))
"""


def run_one(tmp_path: Path, seconds: float, timeout: float, pause: str | None) -> str | None:
    """The reason of one object that takes `seconds`, under `timeout`; `pause`: stop "group"
    (the driver and its worker), only its "worker" or only the "driver" (SIGSTOP to its pid)
    for 5 s once the object has started."""
    (tmp_path / "a.obj").write_text(str(seconds))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path), str(timeout)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job's
    )
    try:
        started = None
        for _ in range(600):  # the worker has the object
            started = next((tmp_path / "tmp").rglob("*.started"), None)
            if started or driver.poll() is not None:
                break
            time.sleep(0.05)
        assert started, "the object never reached the worker"
        if pause == "group":
            stopped_for(5, driver.pid)
        elif pause == "driver":
            stopped_for(5, driver.pid, driver.pid)
        elif pause == "worker":
            worker = next(int(p.name) for p in Path("/proc").iterdir() if is_child(p, driver.pid))
            stopped_for(5, driver.pid, worker)
        out, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 0
    return json.loads(out)["reason"]


def is_child(proc: Path, parent: int) -> bool:
    try:
        return proc.name.isdigit() and (proc / "stat").read_text().rsplit(")", 1)[1].split()[
            1
        ] == str(parent)
    except OSError:
        return False


@pytest.mark.parametrize("pause", ["group", "worker", "driver"])
def test_a_pause_longer_than_the_timeout_is_no_timeout(tmp_path, pause):
    # 1 s of work under a 3 s timeout, stopped 5 s in the middle ("driver": the worker's
    # reply waits in the pipe, read when the driver goes on, not a timeout judged first)
    assert run_one(tmp_path, seconds=1, timeout=3, pause=pause) is None


@pytest.mark.parametrize("pause", [None, "driver"])
def test_a_hung_worker_still_times_out(tmp_path, pause):
    # "driver": the worker hangs on while the driver alone is stopped; the timeout still ends it
    reason = run_one(tmp_path, seconds=600, timeout=2, pause=pause)
    assert reason.startswith("timeout: object a took longer than 2 s")
