"""`cg3d train --resume auto` (the DVC stage's command) killed after an epoch, then run again:
the rerun continues from the epoch the checkpoint holds and its outputs are, byte for byte,
those of a run that was never stopped (what `dvc repro` after a Ctrl-C relies on: dvc.lock's
hashes stay those of an unbroken run)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.stopping import still_running, stop_command
from tests.train.helpers import outputs, params_file

pytestmark = pytest.mark.slow


def train_command(shards, out, params) -> list[str]:
    return [sys.executable, "-m", "cg3d", "train", "--shards", str(shards), "--out", str(out)] + [
        "--params",
        str(params),
        "--resume",
        "auto",
    ]


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_a_killed_training_resumes_to_the_bytes_of_an_unbroken_run(shards, tmp_path, how):
    # workers=1: a persistent loader process, which draws from torch's RNG when it starts
    params = params_file(tmp_path, epochs=3, workers=1)
    whole = tmp_path / "whole"
    subprocess.run(train_command(shards, whole, params), check=True, capture_output=True)

    out = tmp_path / "killed"
    # its own process group, killed whole as a terminal's Ctrl-C or `kill -9 -PGID` does
    run = subprocess.Popen(
        train_command(shards, out, params), stderr=subprocess.DEVNULL, start_new_session=True
    )
    checkpoint = out / ".resume" / "last.pt"
    while run.poll() is None and not checkpoint.exists():
        time.sleep(0.05)
    os.killpg(run.pid, how)
    assert run.wait() != 0, "the run finished before it was killed"
    assert checkpoint.exists() and not (out / "last.pt").exists()

    rerun = subprocess.run(train_command(shards, out, params), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    # nothing finished was redone: the rerun trained from epoch 2 on (epoch 1 was saved)
    trained = [line for line in rerun.stderr.splitlines() if line.startswith("epoch ")]
    assert (
        trained and "epoch 1/3" not in rerun.stderr and "training from scratch" not in rerun.stderr
    )
    assert not (out / ".resume").exists() and not (out / ".cg3d.lock").exists()
    expected, got = outputs(whole), outputs(out)
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []


@pytest.mark.parametrize(
    "signum,whom",
    [
        (signal.SIGTERM, "process"),
        (signal.SIGTERM, "group"),
        (signal.SIGHUP, "group"),
        (signal.SIGUSR1, "group"),  # `sbatch --signal=USR1@90`: was -10, the lock left
    ],
    ids=["kill", "scancel", "ssh", "sbatch-signal"],
)
def test_a_terminated_training_says_so_and_resumes_to_the_bytes_of_an_unbroken_run(
    shards, tmp_path, signum, whom
):
    """SIGTERM (`kill`, `scancel`, a SLURM time limit), SIGHUP (a dropped ssh session) and
    SIGUSR1 (`sbatch --signal`, ahead of the time limit) stop it as Ctrl-C does: the last epoch's checkpoint kept whole, one line, exit 128 + signum, its
    loader worker stopped. Before: it died where it stood (-15), the output lock left behind,
    and SIGTERM to the group made torch report its loader worker's death as a traceback."""
    params = params_file(tmp_path, epochs=3, workers=1)
    whole = tmp_path / "whole"
    subprocess.run(train_command(shards, whole, params), check=True, capture_output=True)

    out = tmp_path / "stopped"
    command = train_command(shards, out, params)[3:]  # after `python -m cg3d`
    stopped = stop_command(command, out / ".resume" / "last.pt", signum, whom)
    assert stopped.signalled, f"it ended before the signal:\n{stopped.stderr[-2000:]}"
    assert stopped.code == 128 + signum, stopped.stderr[-2000:]
    assert stopped.last_line == f"error: terminated ({signal.Signals(signum).name})"
    assert "Traceback" not in stopped.stderr and "Exception ignored" not in stopped.stderr
    # neither the loader worker nor multiprocessing's resource tracker (which outlived even
    # an unbroken run, a zombie under the subreaper) is left
    assert stopped.left == []
    assert (out / ".resume" / "last.pt").exists() and not (out / ".cg3d.lock").exists()

    rerun = subprocess.run(train_command(shards, out, params), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "epoch 1/3" not in rerun.stderr and "training from scratch" not in rerun.stderr
    expected, got = outputs(whole), outputs(out)
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []


def test_the_loader_workers_exit_when_the_training_alone_is_killed_with_9(shards, tmp_path):
    """`kill -9 PID` of `cg3d train` (the process alone: its loader workers get no signal):
    the workers end by themselves, as the pools' do (`exit_with_parent`). On Linux the kernel
    ends them at once (`end_with_parent`); elsewhere torch's own watchdog does it (a worker
    checks its parent between batches, every 5 s), and one waiting for a batch buffer gives up
    after `BatchSlots.WAIT_SECONDS`."""
    import psutil

    params = params_file(tmp_path, epochs=50, workers=2)
    out = tmp_path / "killed"
    run = subprocess.Popen(
        train_command(shards, out, params), stderr=subprocess.DEVNULL, start_new_session=True
    )
    children: list[psutil.Process] = []
    try:
        while run.poll() is None and not (out / ".resume" / "last.pt").exists():
            time.sleep(0.05)
        children = psutil.Process(run.pid).children(recursive=True)
        assert len(children) >= 2  # the loader workers (and the resource tracker)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
        deadline = time.monotonic() + 90
        while (left := [c for c in children if still_running(c)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == []
    finally:
        for child in children:
            if still_running(child):
                child.kill()
        run.kill()
        run.wait()
