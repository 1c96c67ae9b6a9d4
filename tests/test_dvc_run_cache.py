"""Issue 26: DVC's run cache works for the real train stage, and a repro leaves git clean.

A temporary git + DVC project holds a copy of the package, the real `train` stage of dvc.yaml
(its command, outputs, metrics and plots; its code deps) and tiny shards written by the fake
pipeline. `dvc repro`, a param change and `dvc repro`, the change reverted and `dvc repro`: the
third run is restored from the run cache (DVC says so; the stage does not run) and git, the
lock file included, is as committed after the first run.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.pipeline.fakes import fake_pipeline
from tests.train.helpers import params_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(project: Path, *args: str) -> str:
    env = os.environ | {
        "PYTHONPATH": str(project),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    done = subprocess.run(args, cwd=project, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def dvc(project: Path, *args: str) -> str:
    return run(project, sys.executable, "-m", "dvc", *args)


def train_stage() -> dict:
    """The real train stage with the deps that exist in the temporary project."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    stage["deps"] = [d for d in stage["deps"] if d.startswith("cg3d/") or d == "data/shards"]
    return stage


def test_no_stage_output_turns_the_run_cache_off():
    """DVC skips its run cache for a stage with a `persist: true` output, or with a
    `cache: false` output that is neither a metric nor a plot (dvc/stage/__init__.py)."""
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                options = (next(iter(out.values())) if isinstance(out, dict) else {}) or {}
                assert not options.get("persist"), (name, out)
                if kind == "outs":
                    assert options.get("cache", True), (name, out)


def test_a_reverted_param_is_restored_from_the_run_cache_and_git_stays_clean(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(
        ROOT / "cg3d", project / "cg3d", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for name in (".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, project / name)
    fake_pipeline(project / "data", per_class=4, shard_size=3, views=2, n=64)
    for other in (project / "data").iterdir():  # the train stage reads the shards only
        if other.name != "shards":
            shutil.rmtree(other) if other.is_dir() else other.unlink()
    params = params_file(project, epochs=1)
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": train_stage()}}))
    run(project, "git", "init", "-q")
    dvc(project, "init", "-q")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-q", "-m", "a fresh clone")
    dvc(project, "repro", "train")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-q", "-m", "first run")
    lock = (project / "dvc.lock").read_text()

    params.write_text(params.read_text().replace("epochs: 1", "epochs: 2"))
    changed = dvc(project, "repro", "train")
    assert "epoch 2/2" in changed  # the changed stage really trained

    run(project, "git", "checkout", "params.yaml")
    reverted = dvc(project, "repro", "train")
    assert "Stage 'train' is cached - skipping run" in reverted
    assert "epoch 1/1" not in reverted  # restored, not retrained
    assert run(project, "git", "status", "--porcelain") == ""
    assert (project / "dvc.lock").read_text() == lock
