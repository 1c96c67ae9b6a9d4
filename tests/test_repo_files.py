"""The repository's own files: what git ignores, no file named that is not there, and no runtime
dependency that cg3d does not use."""

import ast
import re
import subprocess
import tomllib
from importlib.metadata import packages_distributions
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


def distribution_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503's normal form


def test_each_runtime_dependency_is_imported_by_cg3d():
    # psutil was declared for every install, but only the tests import it: it is in [dev].
    # dvc is the command the README runs the stages with (`dvc repro`), imported by nobody.
    imported: set[str] = set()
    for path in (ROOT / "cg3d").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    installed = packages_distributions()  # an import name → the distributions that hold it
    used = {distribution_name(d) for name in imported for d in installed.get(name, [])}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [distribution_name(re.match(r"[\w.-]+", d)[0]) for d in project["dependencies"]]
    assert [name for name in declared if name not in used] == ["dvc"]
