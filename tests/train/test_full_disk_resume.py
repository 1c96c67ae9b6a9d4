"""`cg3d train --resume auto` on a real disk that fills at an epoch's checkpoint (issue t70b):
one line naming the checkpoint, exit 2, the previous epoch's last.pt left whole (the new one
was never renamed over it); moved to a disk with room, the rerun resumes from that epoch and
ends with the bytes of a run that never failed. A small tmpfs (root only; skipped elsewhere);
the simulated full disk at every save is tests/train/test_full_disk.py."""

import shutil
import subprocess
import sys

import pytest

from cg3d.models.checkpoint import read_checkpoint
from tests.pipeline.disks import mounted
from tests.train.helpers import outputs, params_file

pytestmark = pytest.mark.slow  # three training runs


def train(shards, out, params) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cg3d", "train", "--shards", shards, "--out", out]
    command += ["--params", params, "--resume", "auto"]
    return subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=600)


def test_a_full_disk_at_a_checkpoint_then_room_resumes_to_an_unbroken_runs_bytes(shards, tmp_path):
    params = params_file(tmp_path, epochs=2)
    whole = tmp_path / "whole"
    assert train(shards, whole, params).returncode == 0
    size = (whole / "last.pt").stat().st_size
    # room for one checkpoint, not for the next one's temp file beside it
    with mounted(tmp_path / "disk", f"size={size * 3 // 2 // 1024}k") as disk:
        failed = train(shards, disk / "run", params)
        shutil.copytree(disk / "run", tmp_path / "run", symlinks=True)
    last = disk / "run" / ".resume" / "last.pt"
    assert failed.returncode == 2, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {last}: No space left on device (ENOSPC)"], failed.stderr
    assert "Traceback" not in failed.stderr
    left = tmp_path / "run" / ".resume" / "last.pt"
    assert read_checkpoint(left)["training"]["epoch"] == 1  # whole, and the epoch it says
    assert [path.name for path in (tmp_path / "run").rglob("*.tmp")] == []

    resumed = train(shards, tmp_path / "run", params)
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 1/2" not in resumed.stderr  # the saved epoch was not trained again
    expected, got = outputs(whole), outputs(tmp_path / "run")
    assert [name for name in expected if got.get(name) != expected[name]] == []
