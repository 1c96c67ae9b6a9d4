"""The stop-signal handler of a pool worker (`cg3d.stopping`): a signal interrupts the task it
runs, as Ctrl-C does, and an idle worker ignores it. Before: an idle pool worker of `cg3d pack`
hit by a group's SIGHUP (or Ctrl-C) raised KeyboardInterrupt where it waited for work, and
printed a traceback; SIGTERM and SIGHUP killed a busy one mid-part."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import os, signal, sys, time
from cg3d.stopping import run_task, stop_tasks_as_interrupt

signum = signal.Signals[sys.argv[1]]
stop_tasks_as_interrupt()


def signalled() -> str:
    os.kill(os.getpid(), signum)
    time.sleep(0.2)  # the handler runs between bytecodes: here
    return "not interrupted"


print("idle:", signalled())
try:
    print("task:", run_task(signalled))
except KeyboardInterrupt:
    print("task: interrupted")
print("idle again:", signalled())
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_pool_worker_is_interrupted_in_a_task_only(name):
    result = subprocess.run(
        [sys.executable, "-c", WORKER, name],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "idle: not interrupted",
        "task: interrupted",
        "idle again: not interrupted",
    ]


NOHUP = """
import os, signal, time
from cg3d.stopping import Interrupt

signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts a command
Interrupt().install()
os.kill(os.getpid(), signal.SIGHUP)
time.sleep(0.2)
print("still running")
"""


def test_a_command_started_under_nohup_keeps_ignoring_sighup():
    """`nohup cg3d train ...` must outlive the ssh session: a SIGHUP it was started ignoring
    stays ignored, not turned into a stop."""
    result = subprocess.run(
        [sys.executable, "-c", NOHUP],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "still running"
