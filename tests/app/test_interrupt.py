"""Ctrl-C in a command (`cg3d index` here): one line, exit 130, its cleanup run to the end,
however many times it is pressed; SIGTERM and SIGHUP alike, exit 143 and 129. Each signal is
sent by the command's own process at a fixed point (a patched function), so the test does not
depend on timing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The command, with a first Ctrl-C while it embeds the first shard and more during its cleanup
# (`WHERE` says where): the second Ctrl-C of a user who presses it twice.
CHILD = """
import atexit, os, signal, sys, time
import cg3d.app.index as index
import cg3d.files as files
import cg3d.cli

WHERE = sys.argv[1]
# the first signal, then the one(s) sent during the cleanup it starts
SIGNALS = iter([signal.Signals[sys.argv[2]]])
LATER = signal.Signals[sys.argv[3]]


def ctrl_c(times=1):
    for _ in range(times):
        os.kill(os.getpid(), next(SIGNALS, LATER))
        time.sleep(0.05)  # a handler runs between bytecodes: let it


def embedding(*args, **kwargs):
    ctrl_c()
    raise AssertionError("the first Ctrl-C did not stop the command")


index.embed_shard = embedding
if WHERE == "releasing the lock":
    release = files._release

    def releasing(*args):
        ctrl_c()
        release(*args)

    files._release = releasing
elif WHERE == "exiting":
    atexit.register(ctrl_c)
elif WHERE == "a cleanup that hangs":

    def hanging():
        ctrl_c(2)
        while True:
            time.sleep(0.05)

    atexit.register(hanging)
sys.argv = ["cg3d", "index", *sys.argv[4:]]
cg3d.cli.main(whole_process=True)
"""


def run_interrupted(
    where: str,
    checkpoint: Path,
    shards: Path,
    out: Path,
    tmp_path: Path,
    first: str = "SIGINT",
    later: str = "SIGINT",
):
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    arguments = ["--checkpoint", str(checkpoint), "--shards", str(shards), "--out", str(out)]
    return subprocess.run(
        [sys.executable, str(child), where, first, later, *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )


@pytest.mark.parametrize("where", ["nowhere", "releasing the lock", "exiting"])
def test_a_second_ctrl_c_during_the_cleanup_is_one_line_and_the_cleanup_ends(
    tiny_checkpoint, tiny_shards, tmp_path, where
):
    """Before: a second SIGINT in the interpreter's exit handlers printed a KeyboardInterrupt
    traceback; one while the output lock was released left .cg3d.lock in the folder. A
    single Ctrl-C exited 130 saying nothing."""
    out = tmp_path / "index"
    result = run_interrupted(where, tiny_checkpoint, tiny_shards, out, tmp_path)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: interrupted"
    left = {path.name for path in out.iterdir()}
    assert ".cg3d.lock" not in left and not [name for name in left if name.endswith(".tmp")]


def test_a_third_ctrl_c_stops_a_cleanup_that_hangs(tiny_checkpoint, tiny_shards, tmp_path):
    """The second Ctrl-C is ignored so that the cleanup ends; one that never ends (a stuck
    server or worker pool) still stops at the third."""
    result = run_interrupted(
        "a cleanup that hangs", tiny_checkpoint, tiny_shards, tmp_path / "o", tmp_path
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: interrupted three times: stopped before its cleanup ended"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "first,later,code,line",
    [
        ("SIGTERM", "SIGTERM", 143, "error: terminated (SIGTERM)"),
        ("SIGHUP", "SIGHUP", 129, "error: terminated (SIGHUP)"),
        ("SIGTERM", "SIGINT", 143, "error: terminated (SIGTERM)"),  # a Ctrl-C while it cleans up
    ],
)
def test_sigterm_and_sighup_stop_as_ctrl_c_does_and_say_which(
    tiny_checkpoint, tiny_shards, tmp_path, first, later, code, line
):
    """Before: Python's default action, the process died where it stood (exit -15 or -1),
    printing nothing, and the folder kept its .cg3d.lock. A second signal while the lock is
    released is ignored as a second Ctrl-C is; the first names the exit."""
    out = tmp_path / "index"
    result = run_interrupted(
        "releasing the lock", tiny_checkpoint, tiny_shards, out, tmp_path, first, later
    )
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == line
    left = {path.name for path in out.iterdir()}
    assert ".cg3d.lock" not in left and not [name for name in left if name.endswith(".tmp")]


def test_a_third_sigterm_stops_a_cleanup_that_hangs(tiny_checkpoint, tiny_shards, tmp_path):
    result = run_interrupted(
        "a cleanup that hangs",
        tiny_checkpoint,
        tiny_shards,
        tmp_path / "o",
        tmp_path,
        "SIGTERM",
        "SIGTERM",
    )
    assert result.returncode == 143, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: terminated (SIGTERM) three times: stopped before its cleanup ended"
    )
