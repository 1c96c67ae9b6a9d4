"""`dvc` run in a temporary project, for the tests of the pipeline's DVC behaviour."""

import subprocess
import sys
from pathlib import Path


def dvc(project: Path, *args: str) -> str:
    """`dvc *args` in `project` (this interpreter's DVC); its output, once it succeeded."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
