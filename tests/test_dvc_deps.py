"""dvc.yaml's deps follow the code: every module a stage's command imports inside `cg3d`
(module-level and function-level imports, transitively; the rules of `cg3d.pipeline.closure`,
which a chunked stage's .code.json follows too) is a dep of that stage, so a code change never
leaves an output that `dvc repro` calls up to date."""

import ast
import inspect
import shlex
import textwrap
from pathlib import Path

import pytest
import typer
import yaml

from cg3d.cli import app
from cg3d.pipeline.closure import closure_files, imported_modules, module_closure

ROOT = Path(__file__).resolve().parents[1]


def command_callback(words: list[str]):
    group = typer.main.get_command(app)
    for word in words:
        group = group.commands[word]
    return inspect.unwrap(group.callback)


def stage_files(cmd: str) -> set[str]:
    """Files (relative to the repo) that the `[python -m] cg3d ...` command of a stage runs."""
    words = shlex.split(cmd)
    words = [w for w in words[words.index("cg3d") + 1 :] if not w.startswith("-")][:2]
    group = typer.main.get_command(app)
    names = words[:2] if isinstance(group.commands[words[0]], typer.core.TyperGroup) else words[:1]
    callback = command_callback(names)
    module = inspect.getmodule(callback)
    start = imported_modules(
        ast.parse(textwrap.dedent(inspect.getsource(callback))), module.__package__, ROOT
    )
    # the command's own module as imported (module level only), not its sibling commands
    top = ast.parse(inspect.getsource(module))
    top.body = [n for n in top.body if isinstance(n, ast.Import | ast.ImportFrom)]
    start |= imported_modules(top, module.__package__, ROOT)
    # the command's module as a file, not its closure: it holds the other commands too
    modules = module_closure(start, ROOT) | {module.__name__}
    return {str(path.relative_to(ROOT)) for path in closure_files(modules, ROOT)}


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_runs_is_a_dep(stage):
    deps = [str(d) for d in STAGES[stage]["deps"]]
    missing = sorted(
        path
        for path in stage_files(STAGES[stage]["cmd"])
        if not any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)
    )
    assert not missing, f"dvc.yaml stage {stage} misses deps: {missing}"


def test_the_closure_follows_function_level_and_registry_imports():
    files = stage_files("cg3d meshes --out x")
    # imported inside the command function, then by the stage module
    assert "cg3d/pipeline/sources/__init__.py" in files
    assert "cg3d/formats/manifest.py" in files
    # the sources registry imports its modules by name
    assert "cg3d/pipeline/sources/synthetic.py" in files
    # other commands of the same module are not part of this stage
    assert "cg3d/pipeline/pack.py" not in stage_files("cg3d caption --meshes m --out x")
