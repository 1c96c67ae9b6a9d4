"""The code a module runs: the `cg3d` modules it imports, transitively, and the package data they
read. Found statically (`ast`), without importing anything, so that it costs a parse per module.

Two users, one rule: a chunked stage's `.code.json` (`cg3d.pipeline.chunks.code_digest`: chunks
are reused only by the code that wrote them, and only that code) and the check that dvc.yaml's
deps name every file a stage runs (tests/test_dvc_deps.py).

What counts, conservatively (a file too many costs a recompute; a file too few, stale outputs):
- every import, module-level or inside a function, and the parent packages of each module;
- a module that imports by name at run time (calls `import_module`) brings its whole package;
- a string that is exactly a `cg3d` module's name: a module run as `python -m <name>` (the
  Blender worker, `cg3d.render.worker`, is launched so: a script is not an import) or a data
  package opened with `importlib.resources.files(<name>)` (`cg3d.data`). Neither rule applies to
  the top package's `__init__`, whose names are its lazy exports (`cg3d.load`: reached only by
  that attribute, which no stage asks for);
- every file that is not Python under a package in the closure (its own folder and the plain
  folders below it: `cg3d/data/clip/*.json` belongs to `cg3d.data`).

And the libraries it runs (`library_versions`): Blender, trimesh, numpy make the points and
views as much as our code does.
"""

import ast
import functools
import importlib.metadata
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "cg3d"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds cg3d/


def module_file(name: str, root: Path = SOURCE_ROOT) -> Path | None:
    """The file of module `name` under `root` (a package's `__init__.py`); None: no such module."""
    path = root / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(
    tree: ast.AST, package: str, root: Path = SOURCE_ROOT, names_run: bool = True
) -> set[str]:
    """Names of the `cg3d` modules a syntax tree imports (submodules named in `from` included),
    and, with `names_run`, those it names in a string (run with `-m`, or opened as data)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
        elif names_run and isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return {
        name
        for name in names
        if (name == PACKAGE or name.startswith(PACKAGE + ".")) and module_file(name, root)
    }


def imports_by_name(tree: ast.AST) -> bool:
    """Whether a syntax tree calls `importlib.import_module` (or `import_module`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called == "import_module":
                return True
    return False


@functools.cache
def parsed(source: bytes) -> ast.AST:
    """`ast.parse(source)`, once per text: `third_party_imports` walks the very files
    `module_closure` parsed (a second parse of each took a third of a stage's start in
    `code_digest`). Keyed by the text, not the path: a file edited in this process is new. Bytes,
    not text in the locale's encoding: Python reads its source as UTF-8 (or its coding line),
    and under a locale that is not UTF-8 every stage failed here on the `×` of a message."""
    return ast.parse(source)


def module_closure(start: Iterable[str], root: Path = SOURCE_ROOT) -> set[str]:
    """`start` and every `cg3d` module they run (the module docstring's rules), parent packages
    included."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop().removesuffix(".__init__")
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = module_file(name, root)
        if path is None:
            raise ValueError(f"{name} is not a module under {root}")
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        tree = parsed(path.read_bytes())
        # the top package's names and `import_module` are its lazy exports (module docstring)
        todo += imported_modules(tree, package, root, names_run=name != PACKAGE)
        if name != PACKAGE and imports_by_name(tree):
            todo += [f"{package}.{p.stem}" for p in path.parent.glob("*.py")]
            todo += [f"{package}.{p.parent.name}" for p in path.parent.glob("*/__init__.py")]
    return seen


def closure_files(modules: Iterable[str], root: Path = SOURCE_ROOT) -> list[Path]:
    """The files of `modules` (a `module_closure`) and the data files of its packages, sorted."""
    modules = set(modules)
    files = {module_file(name, root) for name in modules}
    for path in (root / PACKAGE).rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        if _owning_package(path, root) in modules:
            files.add(path)
    return sorted(f for f in files if f is not None)


def _owning_package(path: Path, root: Path) -> str:
    """The package a data file belongs to: that of the nearest folder above it with an
    `__init__.py`."""
    folder = path.parent
    while not (folder / "__init__.py").is_file() and folder != root:
        folder = folder.parent
    return ".".join(folder.relative_to(root).parts)


# Libraries that only show progress, parse the command line or schedule work: no output byte
# depends on their version, and `ray`, installed to resume a stage on a cluster, must not make
# it recompute every chunk.
NOT_IN_OUTPUTS = frozenset({"rich", "typer", "ray"})


def third_party_imports(files: Iterable[Path]) -> set[str]:
    """Top-level names of the modules outside `cg3d` and the standard library that the Python
    files among `files` import (module level or inside a function)."""
    names: set[str] = set()
    for path in files:
        if path.suffix != ".py":
            continue
        for node in ast.walk(parsed(path.read_bytes())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return {name for name in names if name != PACKAGE and name not in sys.stdlib_module_names}


def library_versions(files: Iterable[Path]) -> dict[str, str]:
    """{distribution: installed version} of each library that `files` import, but those of
    `NOT_IN_OUTPUTS`. A module that no installed distribution provides (not installed, or
    shipped inside another, as `mathutils` inside bpy) is left out."""
    provided = importlib.metadata.packages_distributions()
    versions: dict[str, str] = {}
    for name in sorted(third_party_imports(files) - NOT_IN_OUTPUTS):
        for distribution in provided.get(name) or _named_like(name):
            versions[distribution] = importlib.metadata.version(distribution)
    return dict(sorted(versions.items()))


def _named_like(module: str) -> list[str]:
    """[the installed distribution named as `module`], or []. An editable install whose RECORD
    lists only a .pth file maps no module (`packages_distributions`): its upgrades went unseen."""
    try:
        return [importlib.metadata.distribution(module).metadata["Name"]]
    except importlib.metadata.PackageNotFoundError:
        return []
