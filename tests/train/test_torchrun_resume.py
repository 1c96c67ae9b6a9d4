"""`cg3d train` on two processes (torchrun, gloo), stopped after an epoch and run again with
`--resume auto`: its outputs are, byte for byte, those of a two-process run never stopped.

Before, only rank 0's RNG states and caption cache were saved, and every process restored
them: rank 1, whose RNGs are seeded `train.seed + 1` and whose cache holds its own batches'
captions, went on from rank 0's, and the epoch after the resume trained on other draws
(train_loss 5.50 where the unbroken run had 4.96)."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train.helpers import outputs, params_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STOPPER = Path(__file__).with_name("torchrun_stop.py")


def torchrun(shards, out, params, *script: str, stop_at: int = -1) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "STOP_AT": str(stop_at)}
    # its logs in the test's folder: by default it left a /tmp/torchelastic_* folder for good
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--log-dir", str(out.parent / f"torchrun-logs-{out.name}")]
    command += ["--nproc-per-node", "2", *script, "train", "--shards", str(shards)]
    command += ["--out", str(out), "--params", str(params), "--resume", "auto"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_a_stopped_two_process_run_resumes_to_the_bytes_of_an_unbroken_one(shards, tmp_path):
    # workers=1: each process has a persistent loader process, as a real run does
    params = params_file(tmp_path, epochs=3, workers=1)
    whole = tmp_path / "whole"
    done = torchrun(shards, whole, params, "-m", "cg3d")
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "stopped"
    stopped = torchrun(shards, out, params, str(STOPPER), stop_at=1)
    assert stopped.returncode != 0 and not (out / "last.pt").exists(), stopped.stderr[-3000:]
    saved = torch.load(out / ".resume" / "last.pt", weights_only=True)["training"]
    assert saved["epoch"] == 1
    # each process's own RNG states travel in the one checkpoint rank 0 writes
    (rank1,) = saved["other_ranks"]
    assert not torch.equal(rank1["rng"]["torch"], saved["rng"]["torch"])

    rerun = torchrun(shards, out, params, "-m", "cg3d")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "epoch 1/3" not in rerun.stderr and "epoch 3/3" in rerun.stderr
    assert "training from scratch" not in rerun.stderr
    expected, got = outputs(whole), outputs(out)
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []


def test_the_ranks_stop_cleanly_when_torchrun_dies_of_sigusr1(shards, tmp_path):
    """torchrun starts each rank in a session of its own and dies of a SIGUSR1 (it handles
    none): sent to it alone (a batch script's `trap` forwarding Slurm's `--signal=B:USR1@90`),
    it left both ranks training on, orphaned, until the SIGKILL. Each rank now stops as on
    SIGTERM once torchrun is gone (`distributed.end_with_launcher`), and the run resumes."""
    import signal
    import time

    import psutil

    params = params_file(tmp_path, epochs=100, workers=0)
    out = tmp_path / "run"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--log-dir", str(tmp_path / "torchrun-logs"), "--nproc-per-node", "2"]
    command += ["-m", "cg3d", "train", "--shards", str(shards), "--out", str(out)]
    command += ["--params", str(params)]
    launcher = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    ranks: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        while not (out / ".resume" / "last.pt").exists() and launcher.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint in 300 s"
            time.sleep(0.2)
        ranks = psutil.Process(launcher.pid).children()
        assert len(ranks) == 2
        launcher.send_signal(signal.SIGUSR1)
        stderr = launcher.communicate(timeout=120)[1]
        assert launcher.returncode == -signal.SIGUSR1
        _, alive = psutil.wait_procs(ranks, timeout=60)
        assert alive == []
        assert not (out / "last.pt").exists()  # the ranks trained on to the end, orphaned
        assert stderr.count("error: terminated (SIGTERM)") == 2, stderr[-3000:]
        assert "Traceback" not in stderr
    finally:
        launcher.kill()
        for rank in ranks:  # (in sessions of their own: no group kill reaches them)
            with contextlib.suppress(psutil.NoSuchProcess):
                rank.kill()
        launcher.communicate()
    rerun = subprocess.run(
        [*command, "--resume", "auto"], env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "epoch 100/100" in rerun.stderr and "epoch 1/100" not in rerun.stderr
