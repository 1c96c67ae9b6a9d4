"""The tests' small real disks (tests/pipeline/disks.py) leave no mount behind them."""

import os
import subprocess
import sys
from pathlib import Path

from tests.pipeline.disks import mounted, no_disk

ROOT = Path(__file__).resolve().parents[2]


def test_a_disk_mounted_over_again_inside_the_block_is_all_taken_off(tmp_path):
    """Two tmpfs on one folder: one `umount -l` took the upper only, and the lower stayed
    mounted under /tmp/pytest-of-root after the run."""
    with mounted(tmp_path / "disk", "size=4k") as disk:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(disk)], check=True)
    assert not os.path.ismount(tmp_path / "disk")


def test_a_disk_with_a_file_still_open_on_it_is_taken_off(tmp_path):
    """As a process that the test left behind holds one: the unmount is lazy, never "busy"."""
    with mounted(tmp_path / "disk", "size=4k") as disk:
        held = open(disk / "held", "w")  # noqa: SIM115 (open past the block on purpose)
    try:
        assert not os.path.ismount(tmp_path / "disk")
    finally:
        held.close()


LEAVES_A_MOUNT = """
import subprocess

def test_that_leaves_its_disk_mounted(tmp_path):
    (tmp_path / "disk").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(tmp_path / "disk")],
                   check=True)
"""


def test_a_test_that_leaves_a_mount_fails_and_its_mount_is_taken_off(tmp_path):
    """tests/conftest.py's guard, on a test that mounts without `mounted`."""
    if os.geteuid() != 0:
        no_disk("mounting a tmpfs needs root")
    (tmp_path / "test_leaves.py").write_text(LEAVES_A_MOUNT)
    base = tmp_path / "base"
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest"]
    run += [f"--basetemp={base}", f"--rootdir={tmp_path}", str(tmp_path / "test_leaves.py")]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-2000:]
    (disk,) = base.glob("test_that_leaves*0/disk")
    assert f"Failed: the test left mounted: {disk}\n" in result.stdout, result.stdout[-2000:]
    assert not os.path.ismount(disk)
