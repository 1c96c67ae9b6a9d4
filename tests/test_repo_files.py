"""The repository's own files: what git ignores, and no file named that is not there."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_outputs_are_ignored_by_git():
    # `dvc plots show` writes dvc_plots/; the README's `cg3d index --out runs/index`
    generated = ["dvc_plots/index.html", "runs/index/points.npy", "runs/index/index.json"]
    run = subprocess.run(["git", "check-ignore", *generated], cwd=ROOT, capture_output=True)
    assert run.stdout.decode().split() == generated


def test_files_named_in_pyproject_exist():
    text = (ROOT / "pyproject.toml").read_text()
    named = set(re.findall(r"\b[\w./-]+\.(?:md|txt|yaml|cfg)\b", text))
    assert named, "pyproject names no file at all (readme?)"
    assert [name for name in sorted(named) if not (ROOT / name).exists()] == []
