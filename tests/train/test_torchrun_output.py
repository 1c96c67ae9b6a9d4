"""The log of a two-process `cg3d train` (torchrun, gloo) whose rank 1 alone meets a user
error: rank 0 speaks for the run's config, and the cause is said once, naming its rank, and
again as the last lines (torchrun's closing summary).

Lines are counted here although two processes write the one stderr: each of our lines is one
write (`cli._labelled_line`) of far less than PIPE_BUF bytes into a pipe, so no line of one
rank tears another's."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.helpers import params_file
from tests.train.torchrun_fail import CAUSE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_a_rank_s_error_is_said_once_naming_it_and_ends_the_log(shards, tmp_path):
    params = params_file(tmp_path, epochs=1, workers=0)
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--log-dir", str(tmp_path / "torchrun-logs"), "--nproc-per-node", "2"]
    command += [str(Path(__file__).with_name("torchrun_fail.py")), "train"]
    command += ["--shards", str(shards), "--out", str(tmp_path / "run"), "--params", str(params)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    log = done.stderr
    assert done.returncode == 1, log[-3000:]  # torchrun's own code for a failed rank
    lines = log.splitlines()
    # the random CLIP is the config's: rank 0 alone says it
    assert sum("RANDOMLY INITIALISED" in line for line in lines) == 1, log[-3000:]
    assert lines.count(f"rank 1: error: {CAUSE}") == 1, log[-3000:]
    # rank 0, whose step found its peer gone, or whom torchrun stopped: one line, no traceback
    assert "[rank0]:" not in log and "Connection closed by peer" not in log, log[-3000:]
    summary = log[log.rindex(" FAILED\n") :]  # torchrun's closing summary
    assert f"rank 1: error: {CAUSE}" in summary, log[-3000:]
