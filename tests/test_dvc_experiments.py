"""DVC experiments run the experiment's own code.

`dvc exp run --temp` and `dvc exp run --queue` run the stages in a copy of the project under
`.dvc/tmp/exps/`, whose dvc.lock records the hashes of that copy's code. The `cg3d` script
imports the installed package (an editable install maps `cg3d` to the checkout it was installed
from; PYTHONPATH may name another), so a queued experiment whose code differs from the
workspace's at the time the queue runs would record one code and run another. `python -m cg3d`
imports the package from the working directory first: the copy's.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def launcher(cmd: str) -> tuple[str, ...]:
    """The words of a stage's command up to the `cg3d` package or script."""
    words = shlex.split(cmd)
    return tuple(words[: words.index("cg3d") + 1])


def test_every_stage_runs_the_cg3d_of_its_working_copy(tmp_path):
    copy = tmp_path / "exps" / "tmp1234"  # as DVC's temporary copy of the project
    (copy / "cg3d").mkdir(parents=True)
    (copy / "cg3d" / "__init__.py").write_text("")
    (copy / "cg3d" / "__main__.py").write_text("print('the copy of the code')\n")
    env = os.environ | {
        # `python` and the `cg3d` script of this environment, as an activated venv has them
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),  # the workspace's checkout, as the editable install names it
    }
    for words in sorted({launcher(stage["cmd"]) for stage in STAGES.values()}):
        done = subprocess.run(
            [*words, "--help"], cwd=copy, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.stdout.strip() == "the copy of the code", (words, done.stdout[-300:])
