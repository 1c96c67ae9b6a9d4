"""The package's layering (docs/design.md): the trainer is imported by nobody else, Blender code
never imports torch, the pipeline never imports torch or Blender."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cg3d"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def modules_importing(prefix: str, under: str) -> list[str]:
    return sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in (PACKAGE / under).rglob("*.py")
        if any(name == prefix or name.startswith(prefix + ".") for name in imports_of(path))
    )


def test_nothing_outside_the_trainer_imports_it():
    # cli.py only registers the `cg3d train` command, whose module is the trainer's own
    importers = [
        m
        for m in modules_importing("cg3d.train", ".")
        if not m.startswith("cg3d/train/") and m != "cg3d/cli.py"
    ]
    assert importers == []


@pytest.mark.parametrize(
    "folder,forbidden", [("render", "torch"), ("pipeline", "torch"), ("pipeline", "bpy")]
)
def test_layers_keep_their_heavy_imports_out(folder, forbidden):
    assert modules_importing(forbidden, folder) == []


def test_the_model_library_reads_no_shards_or_meshes():
    for forbidden in ("cg3d.pipeline.sources", "cg3d.formats", "webdataset"):
        assert modules_importing(forbidden, "models") == []
