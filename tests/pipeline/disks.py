"""Small real disks for full-disk and read-only tests, and `cg3d` run as a user runs it."""

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted(folder: Path, options: str):
    """A tmpfs at `folder` (root only, where mounts are allowed); skips the test otherwise."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def cg3d(*args: str) -> subprocess.CompletedProcess:
    """The `cg3d` command as a user runs it (its error handler included)."""
    return subprocess.run(
        [sys.executable, "-m", "cg3d", *map(str, args)], capture_output=True, text=True, timeout=600
    )
