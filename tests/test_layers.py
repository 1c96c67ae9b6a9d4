"""The package's layering (docs/design.md): the trainer is imported by nobody else, Blender code
never imports torch, the pipeline never imports torch or Blender; data flow one way between the
sample stage and the Blender workers (both import `cg3d.geometry`, below them); the file formats
never import a stage and the evaluation never imports the app."""

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
            # `from cg3d.pipeline import sample` imports the module cg3d.pipeline.sample
            names |= {
                f"{node.module}.{alias.name}"
                for alias in node.names
                if is_module(f"{node.module}.{alias.name}")
            }
    return names


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


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


# What the model library may take from formats/: the owner rule, which reads a folder's marker
# files only (`cg3d export --format hub` asks it before writing into a folder); the one check of
# a format tag (checkpoints and hub configs of another cg3d), which imports nothing; and the
# tables' Markdown escaping (`markdown_text`), which the hub's model card writes names through
# (a model, dataset or path with `|`, `<script>` or a newline). tables imports only the
# standard library, cg3d.errors and cg3d.files: no shard or mesh reader comes with it.
MODELS_MAY_IMPORT_FROM_FORMATS = {
    "cg3d.formats.owner",
    "cg3d.formats.tables",
    "cg3d.formats.versions",
}


def test_the_model_library_reads_no_shards_or_meshes():
    for forbidden in ("cg3d.pipeline.sources", "webdataset"):
        assert modules_importing(forbidden, "models") == []
    offenders = {
        module: names - MODELS_MAY_IMPORT_FROM_FORMATS
        for module, names in imports_under("cg3d.formats", "models").items()
    }
    assert {module: names for module, names in offenders.items() if names} == {}


# What the render package may take from the pipeline package: the chunked-output machinery that
# every stage runs on, no stage module (the sample stage, the sources, pack, captions...).
RENDER_MAY_IMPORT_FROM_PIPELINE = {"cg3d.pipeline", "cg3d.pipeline.chunks"}
# The one door from the pipeline into Blender: the supervisor's worker (`BlenderWorker`).
PIPELINE_MAY_IMPORT_FROM_RENDER = {"cg3d.render", "cg3d.render.supervisor"}
# Offenders the lead empties after merging the `structure` branch (formats moved into formats/).
FORMATS_IMPORTING_PIPELINE_ALLOWED: set[str] = set()


def imports_under(prefix: str, under: str) -> dict[str, set[str]]:
    """{module path: the names it imports that are `prefix` or below it}, for modules that do."""
    found = {}
    for path in (PACKAGE / under).rglob("*.py"):
        names = {
            name for name in imports_of(path) if name == prefix or name.startswith(prefix + ".")
        }
        if names:
            found[str(path.relative_to(PACKAGE.parent))] = names
    return found


def test_render_imports_no_pipeline_stage_module():
    offenders = {
        module: names - RENDER_MAY_IMPORT_FROM_PIPELINE
        for module, names in imports_under("cg3d.pipeline", "render").items()
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_pipeline_reaches_blender_only_through_the_supervisor():
    offenders = {
        module: names - PIPELINE_MAY_IMPORT_FROM_RENDER
        for module, names in imports_under("cg3d.render", "pipeline").items()
    }
    assert {module: names for module, names in offenders.items() if names} == {}


@pytest.mark.parametrize(
    "stage", ["cg3d.pipeline", "cg3d.render", "cg3d.train", "cg3d.eval", "cg3d.app", "cg3d.models"]
)
def test_geometry_sits_below_every_stage(stage):
    assert modules_importing(stage, "geometry") == []


@pytest.mark.parametrize("forbidden", ["torch", "bpy"])
def test_geometry_imports_neither_torch_nor_blender(forbidden):
    assert modules_importing(forbidden, "geometry") == []


def test_formats_import_no_stage():
    assert set(modules_importing("cg3d.pipeline", "formats")) <= FORMATS_IMPORTING_PIPELINE_ALLOWED


def test_eval_does_not_import_the_app():
    assert modules_importing("cg3d.app", "eval") == []
