"""`--executor ray` run from a folder holding another cg3d package (another checkout's root):
Ray puts the driver's working folder first on every worker's sys.path, so its tasks imported
that code, a RaySystemError traceback or another version's stage. Refused in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cg3d.errors import UsageError
from cg3d.pipeline.chunks import connect_ray

REPO = Path(__file__).resolve().parents[2]
ray = pytest.importorskip("ray")


def other_checkout(folder: Path) -> Path:
    (folder / "cg3d").mkdir(parents=True)
    (folder / "cg3d" / "__init__.py").write_text("")
    return folder


@pytest.mark.parametrize("stage", ["meshes", "sample", "render"])
def test_a_ray_stage_run_beside_another_cg3d_is_refused_before_its_out(tmp_path, stage):
    here = other_checkout(tmp_path / "other")
    out = tmp_path / "out"
    inputs = [] if stage == "meshes" else ["--meshes", str(tmp_path / "meshes")]
    command = [sys.executable, "-P", "-m", "cg3d", stage, *inputs, "--out", str(out)]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}  # -P: this cg3d, not the folder's
    run = subprocess.run(
        [*command, "--executor", "ray"], cwd=here, env=environment, capture_output=True, text=True
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert f"the working folder {here} holds another cg3d" in run.stderr
    assert not out.exists()


def test_ray_is_not_started_beside_another_cg3d(tmp_path, monkeypatch):
    monkeypatch.chdir(other_checkout(tmp_path / "other"))
    try:
        with pytest.raises(UsageError, match="holds another cg3d"):
            connect_ray(1)
    finally:
        if ray.is_initialized():  # the check failed: the Ray it started goes
            ray.shutdown()
