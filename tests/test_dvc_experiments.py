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


def test_a_python_without_the_projects_install_says_so_in_one_line():
    """`dvc repro` outside the project's venv runs the `python` on PATH: it finds `cg3d` in the
    project root (`-m` imports from there) but not typer, a ModuleNotFoundError traceback.
    `python -S` stands for such a Python: no site-packages."""
    for words in sorted({launcher(stage["cmd"]) for stage in STAGES.values()}):
        python = [sys.executable, "-S", *words[1:]]
        done = subprocess.run(
            [*python, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, (words, done.stderr[-300:])
        assert done.stderr.startswith("error: `cg3d` needs the package 'typer'")
        # cg3d is not installed in that Python: the checkout's own install brings everything
        assert f"pip install -e '{ROOT}'" in done.stderr
        assert done.stderr.count("\n") == 1 and done.stdout == ""


# A command whose own import (torch, bpy, inside the command) this Python lacks.
_IMPORTS_WHAT_IS_MISSING = """
from cg3d import cli

@cli.app.command("needs")
def needs() -> None:
    import cg3d_test_absent_package  # noqa: F401

cli.main(whole_process=True)
"""


def test_a_commands_own_import_that_this_python_lacks_is_one_line():
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_WHAT_IS_MISSING, "needs"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    # the package, the command that needs it (typer runs a lone command as the app) and pip's
    assert done.stderr.startswith("error: `cg3d` needs the package 'cg3d_test_absent_package'")
    assert "pip install 'cg3d_test_absent_package'" in done.stderr
    assert done.stderr.count("\n") == 1
