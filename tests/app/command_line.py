"""`cg3d` run as a user runs it, for the app tests that read its real output."""

import os
import subprocess
import sys


def cg3d(*words: str, cwd) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it (its own warnings and logging set-up)."""
    return subprocess.run(
        [sys.executable, "-m", "cg3d", *map(str, words)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONWARNINGS": ""},
    )
