"""DVC sees source files only: importing the code (as pytest does, writing `__pycache__/*.pyc`
beside it) leaves every stage's code deps unchanged.

The check runs in a temporary DVC project holding a copy of the package, `.dvcignore` and a
`dvc.yaml` with the real stages' code deps and params (their data deps and outputs dropped, their
commands a no-op), so it holds whatever state the real dvc.lock is in.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from cg3d.pipeline.chunks import mark_code
from tests.dvc_runs import dvc

ROOT = Path(__file__).resolve().parents[1]


def code_stages() -> dict:
    """The real stages with only their deps inside the package, their params, and no outputs."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {
        name: {
            "cmd": "true",
            "deps": [dep for dep in stage["deps"] if dep.startswith("cg3d/")],
            "params": stage.get("params", []),
        }
        for name, stage in stages.items()
    }


def test_importing_the_code_leaves_dvc_status_clean(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(
        ROOT / "cg3d", project / "cg3d", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for name in ("params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": code_stages()}))
    dvc(project, "init", "--no-scm", "-q")
    dvc(project, "repro", "-q")  # records the code deps' hashes in this project's dvc.lock
    assert json.loads(dvc(project, "status", "--json")) == {}

    # What running the tests does to the tree: bytecode beside every module.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(project / "cg3d")], check=True)
    assert list((project / "cg3d" / "models" / "__pycache__").glob("*.pyc"))

    assert json.loads(dvc(project, "status", "--json")) == {}


def test_a_chunked_stage_rerun_by_hand_into_its_output_leaves_dvc_status_clean(tmp_path):
    """`cg3d render --out data/render` by hand, same settings: every part the same bytes, and
    the run's mark of its code (`chunks.CODE_NAME`, which dvc.yaml's command removes) made
    `dvc status` say the output changed."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / ".dvcignore", project / ".dvcignore")
    stage = {"cmd": "mkdir -p out && echo part > out/part-00000.tar", "outs": ["out"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"render": stage}}))
    dvc(project, "init", "--no-scm", "-q")
    dvc(project, "repro", "-q")
    mark_code(project / "out", "0" * 64)  # what the rerun writes beside the same parts
    assert json.loads(dvc(project, "status", "--json")) == {}
