"""dvc.yaml's deps follow the code: every module a stage's command imports inside `cg3d`
(module-level and function-level imports, transitively) is a dep of that stage, so a code change
never leaves an output that `dvc repro` calls up to date."""

import ast
import inspect
import shlex
import textwrap
from pathlib import Path

import pytest
import typer
import yaml

from cg3d.cli import app

ROOT = Path(__file__).resolve().parents[1]
# Package data that modules read at run time.
DATA = {"cg3d.protocol": "cg3d/data/protocol.json", "cg3d.models.clip": "cg3d/data/clip"}


def module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Names of the cg3d modules a syntax tree imports (submodules named in `from` included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in names if name.startswith("cg3d") and module_file(name)}


def closure(start: set[str]) -> set[str]:
    """`start` and every cg3d module they import, their parent packages included; a module that
    imports by name at run time (`importlib.import_module`) brings its whole package."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        name = name.removesuffix(".__init__")
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = module_file(name)
        source = path.read_text()
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        todo += imported_modules(ast.parse(source), package)
        if "importlib.import_module" in source:
            todo += [f"{package}.{p.stem}" for p in path.parent.glob("*.py")]
            todo += [f"{package}.{p.parent.name}" for p in path.parent.glob("*/__init__.py")]
    return seen


def command_callback(words: list[str]):
    group = typer.main.get_command(app)
    for word in words:
        group = group.commands[word]
    return inspect.unwrap(group.callback)


def stage_files(cmd: str) -> set[str]:
    """Files (relative to the repo) that the `cg3d ...` command of a stage runs."""
    words = [w for w in shlex.split(cmd)[1:] if not w.startswith("-")][:2]
    group = typer.main.get_command(app)
    names = words[:2] if isinstance(group.commands[words[0]], typer.core.TyperGroup) else words[:1]
    callback = command_callback(names)
    module = inspect.getmodule(callback)
    start = imported_modules(
        ast.parse(textwrap.dedent(inspect.getsource(callback))), module.__package__
    )
    # the command's own module as imported (module level only), not its sibling commands
    top = ast.parse(inspect.getsource(module))
    top.body = [n for n in top.body if isinstance(n, ast.Import | ast.ImportFrom)]
    start |= imported_modules(top, module.__package__)
    modules = closure(start) | {module.__name__}
    files = {str(module_file(name).relative_to(ROOT)) for name in modules}
    return files | {DATA[name] for name in modules if name in DATA}


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
