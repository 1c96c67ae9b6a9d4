"""What a module runs (`cg3d.pipeline.closure`): the files a chunked stage's .code.json digests
and dvc.yaml's deps must name."""

from pathlib import Path

from cg3d.pipeline.closure import SOURCE_ROOT, closure_files, library_versions, module_closure


def files_of(module: str, root: Path = SOURCE_ROOT) -> set[str]:
    return {
        p.relative_to(root).as_posix() for p in closure_files(module_closure({module}, root), root)
    }


def test_the_render_stage_runs_the_blender_worker_and_not_the_training_code():
    files = files_of("cg3d.render.stage")
    assert "cg3d/render/worker.py" in files  # launched with `python -m`, imported by nobody
    assert "cg3d/render/supervisor.py" in files
    assert "cg3d/formats/manifest.py" in files
    assert not any(f.startswith(("cg3d/train/", "cg3d/models/", "cg3d/eval/")) for f in files)
    # the sample stage reaches the worker through a function-level import of the supervisor
    assert "cg3d/render/worker.py" in files_of("cg3d.pipeline.sample")


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_names_imports_and_data_in_a_made_up_package(tmp_path):
    write(
        tmp_path,
        {
            # the top package's lazy exports: reached only as `cg3d.<name>`, not run by a stage
            "cg3d/__init__.py": "LAZY = {'thing': 'cg3d.lazy'}\n",
            "cg3d/lazy.py": "",
            "cg3d/stage.py": (
                "import cg3d.reader\n"
                "def run():\n"
                "    from .helper import x\n"
                "    launch = ['-m', 'cg3d.worker']\n"
                "    return resources.files('cg3d.data')\n"
            ),
            "cg3d/reader.py": "",
            "cg3d/helper.py": "x = 1\n",
            "cg3d/worker.py": "from cg3d import deep\n",
            "cg3d/deep.py": "",
            "cg3d/unrelated.py": "import cg3d.lazy\n",
            "cg3d/data/__init__.py": "",
            "cg3d/data/table.json": "{}",
            "cg3d/data/more/config.json": "{}",
            "cg3d/registry/__init__.py": (
                "import importlib\n"
                "def get(n):\n"
                "    return importlib.import_module(f'{__name__}.{n}')\n"
            ),
            "cg3d/registry/one.py": "",
            "cg3d/registry/notes.txt": "read by the registry",
            "cg3d/user.py": "from cg3d.registry import get\n",
        },
    )
    assert files_of("cg3d.stage", tmp_path) == {
        "cg3d/__init__.py",
        "cg3d/stage.py",
        "cg3d/reader.py",
        "cg3d/helper.py",
        "cg3d/worker.py",
        "cg3d/deep.py",
        "cg3d/data/__init__.py",
        "cg3d/data/table.json",
        "cg3d/data/more/config.json",
    }
    assert files_of("cg3d.user", tmp_path) == {
        "cg3d/__init__.py",
        "cg3d/user.py",
        "cg3d/registry/__init__.py",
        "cg3d/registry/one.py",
        "cg3d/registry/notes.txt",
    }


def test_an_editable_install_that_maps_no_module_still_counts(tmp_path, monkeypatch):
    """An editable install whose RECORD names only a .pth maps no module in
    `packages_distributions`: `foo` was left out of the digest, its upgrades unseen. A module
    that no distribution bears the name of (mathutils, inside bpy) is still left out."""
    info = tmp_path / "site" / "foo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n")
    (info / "RECORD").write_text("_foo.pth,,\nfoo-1.0.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    stage = tmp_path / "stage.py"
    stage.write_text("import foo\nfrom mathutils import Vector\n")
    assert library_versions([stage]) == {"foo": "1.0"}


def test_the_libraries_of_a_closure_are_read_without_parsing_its_files_again(tmp_path, monkeypatch):
    """`code_digest` parses a stage's files to find its closure, then walked their imports for
    the library versions: each file was parsed twice at every stage start. A file edited since
    is parsed anew (the parse is kept by text, not by path)."""
    import ast

    from cg3d.pipeline import closure

    write(tmp_path, {"cg3d/__init__.py": "", "cg3d/stage.py": "import numpy\nimport cg3d.x\n"})
    write(tmp_path, {"cg3d/x.py": "def f():\n    import scipy.linalg\n"})
    files = closure_files(module_closure({"cg3d.stage"}, tmp_path), tmp_path)
    parses, parse = [], ast.parse

    def counted(source, *args, **kwargs):
        parses.append(source)
        return parse(source, *args, **kwargs)

    monkeypatch.setattr(ast, "parse", counted)
    assert closure.third_party_imports(files) == {"numpy", "scipy"}
    assert parses == []
    monkeypatch.undo()
    write(tmp_path, {"cg3d/x.py": "import yaml\n"})
    assert closure.third_party_imports(files) == {"numpy", "yaml"}
