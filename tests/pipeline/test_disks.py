"""The tests' small real disks (tests/pipeline/disks.py) leave no mount behind them."""

import os
import subprocess

from tests.pipeline.disks import mounted


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
