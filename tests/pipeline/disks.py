"""Small real disks for full-disk and read-only tests, and `cg3d` run as a user runs it."""

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest


def no_disk(reason: str) -> None:
    """Skip a test that needs a real small disk where none can be made; in CI (which runs as
    root, `.ci/run` sets CI) fail instead, so that the full-disk tests never pass by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the full-disk tests: {reason}")
    pytest.skip(reason)


@contextmanager
def mounted(folder: Path, options: str):
    """A tmpfs at `folder` (root only, where mounts are allowed); skips the test otherwise."""
    folder.mkdir()
    if os.geteuid() != 0:
        no_disk("mounting a tmpfs needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if made.returncode:
        no_disk(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        unmount(folder)


def unmount(folder: Path) -> None:
    """Take every tmpfs off `folder`, lazily (a process the test left, a Ray worker, may still
    hold a file there), and fail the test naming it if one stays. One unchecked `umount -l`
    left the lower of two mounts, or any that umount refused, under /tmp/pytest-of-root for
    good: pytest's pruning of old folders then fails on it ("Device or resource busy")."""
    for _ in range(8):  # bounded: a mount that umount says it took off but stays is a failure
        if not os.path.ismount(folder):
            return
        done = subprocess.run(["umount", "-l", str(folder)], capture_output=True, text=True)
        if done.returncode:
            pytest.fail(f"{folder} stays mounted: {done.stderr.strip()}")
    pytest.fail(f"{folder} stays mounted after 8 unmounts")


def cg3d(*args: str) -> subprocess.CompletedProcess:
    """The `cg3d` command as a user runs it (its error handler included)."""
    return subprocess.run(
        [sys.executable, "-m", "cg3d", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def stage_files(folder: Path) -> dict[str, bytes]:
    """The stage's outputs by name (its marks of code and owner aside, which name no object)."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }
