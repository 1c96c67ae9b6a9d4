"""A partial install (`pip install cg3d` that skipped a package, a conda env with other pins, an
HPC module's torch): a command that needs a package this Python lacks says so in one line
naming the package, the command and the pip command, exit 2; commands that do not need it run.

A package is made absent, never uninstalled: a `sitecustomize.py` on PYTHONPATH adds an import
finder that raises ModuleNotFoundError for it, in the command and in every process it starts
(the Blender workers, a sample stage's pool)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

_BLOCKER = """
import os, sys

class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in os.environ["CG3D_TEST_ABSENT"].split(","):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Absent())
"""


def _without(tmp_path: Path, *packages: str) -> dict[str, str]:
    """An environment whose Pythons cannot import `packages`."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_BLOCKER)
    path = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "CG3D_TEST_ABSENT": ",".join(packages)}


def _cg3d(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cg3d", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_render_without_bpy_is_one_line_before_any_work(tmp_path):
    """Only the Blender workers import bpy: their start-up crash came back as a WorkerDied
    traceback."""
    out = tmp_path / "render"
    done = _cg3d(_without(tmp_path, "bpy"), "render", "--meshes", str(tmp_path), "--out", str(out))
    assert done.returncode == 2, done.stderr[-500:]
    assert done.stderr.startswith("error: `python -m cg3d render` needs the package 'bpy'")
    assert "pip install 'bpy==" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not out.exists()


def test_sample_without_fpsample_is_one_line_not_a_failure_row_per_object(tmp_path):
    """sample.fps: bucket imports fpsample per object in the stage's workers: every object
    became a failure row (`ModuleNotFoundError: ...`) and the stage exited 0."""
    params = tmp_path / "params.yaml"
    params.write_text(
        "meshes:\n  source: synthetic\n  per_class: 1\n  workers: 1\ntrain:\n  batch_size: 2\n"
    )
    meshes = tmp_path / "meshes"
    made = _cg3d(dict(os.environ), "meshes", "--out", str(meshes), "--params", str(params))
    assert made.returncode == 0, made.stderr[-500:]
    out = tmp_path / "points"
    env = _without(tmp_path, "fpsample")
    done = _cg3d(
        env, "sample", "--meshes", str(meshes), "--out", str(out), "--set", "sample.fps=bucket"
    )
    assert done.returncode == 2, done.stderr[-500:]
    assert done.stderr.startswith("error: `python -m cg3d sample` needs the package 'fpsample'")
    assert "pip install 'fpsample>=" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not out.exists()


def test_a_blender_worker_without_bpy_refuses_to_start_in_one_line(tmp_path):
    """The demo's views and glTF reading start the same worker: its start-up crash was a
    WorkerDied whose message was Blender's log tail."""
    code = (
        "from cg3d.errors import UsageError\n"
        "from cg3d.render.supervisor import BlenderWorker\n"
        "worker = BlenderWorker({'role': 'points'}, 60)\n"
        "try:\n"
        "    worker.start()\n"
        "except UsageError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=_without(tmp_path, "bpy"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.startswith("Blender: this Python (")
    assert "has no bpy: pip install 'bpy==" in done.stdout


def test_bpy_beside_numpy_2_says_to_install_numpy_1(monkeypatch):
    """bpy 5.0.1 is built against numpy 1: where its import fails beside numpy 2, the line
    says which numpy to install."""
    from cg3d.render import worker

    monkeypatch.setattr(np, "__version__", "2.1.3")
    error = ImportError("numpy.core.multiarray failed to import")
    line = worker.bpy_import_line(error)
    assert "numpy.core.multiarray failed to import" in line
    assert "this Python has numpy 2.1.3" in line
    assert "pip install 'numpy<2" in line or "pip install 'numpy>=1.26,<2" in line


@pytest.mark.parametrize(
    ("module", "starts"),
    [("open_clip", "pip install 'open_clip_torch"), ("yaml", "pip install 'pyyaml")],
)
def test_the_pip_command_names_what_pip_installs(module, starts):
    from cg3d.errors import install_command

    assert install_command(module).startswith(starts)


@pytest.mark.parametrize("absent", ["bpy", "ray", "gradio", "torch"])
def test_help_and_inspect_run_without_the_heavy_packages(tmp_path, absent):
    env = _without(tmp_path, absent)
    assert _cg3d(env, "--help").returncode == 0
    done = _cg3d(env, "inspect", str(tmp_path))
    assert done.returncode == 2 and "is not a stage output" in done.stderr


def test_help_imports_no_heavy_package():
    code = (
        "import sys\n"
        "sys.argv = ['cg3d', '--help']\n"
        "from cg3d.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ['bpy', 'ray', 'gradio', 'torch', 'open_clip', 'pyarrow', 'h5py', 'webdataset']\n"
        "print(sorted(name for name in heavy if name in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_the_cg3d_script_without_typer_is_one_line_as_python_m_cg3d(tmp_path):
    """The script pyproject installs (`module:function`) and `python -m cg3d` agree: the
    script pointed at `cg3d.cli:main`, whose import (typer) failed as a traceback."""
    import tomllib

    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["cg3d"]
    module, _, function = target.partition(":")
    script = f"import sys; from {module} import {function}; sys.argv[0] = 'cg3d'; {function}()"
    env = _without(tmp_path, "typer")
    for command in ([sys.executable, "-c", script], [sys.executable, "-m", "cg3d"]):
        done = subprocess.run(
            [*command, "--help"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, (command, done.stderr[-500:])
        assert done.stderr.startswith("error: `cg3d` needs the package 'typer'"), command
        assert done.stderr.count("\n") == 1 and done.stdout == ""


@pytest.mark.parametrize(
    ("absent", "words"),
    [
        ("ray", "meshes --out {out} --set meshes.executor=ray"),
        ("trimesh", "meshes --out {out}"),
        ("ray", "sample --meshes {tmp} --out {out} --set sample.executor=ray"),
        ("dvclive", "train --shards {tmp} --out {out}"),
        ("webdataset", "train --shards {tmp} --out {out}"),
        ("torchcodec", "train --shards {tmp} --out {out}"),
        ("scipy", "train --shards {tmp} --out {out}"),
    ],
)
def test_a_stage_missing_a_package_refuses_before_making_its_out(tmp_path, absent, words):
    """Imported mid-stage (a ray executor, dvclive's logger once the run was open), a missing
    package was one line after --out was made: a run folder, a plan, a failures folder."""
    out = tmp_path / "out"
    args = words.format(out=out, tmp=tmp_path).split()
    done = _cg3d(_without(tmp_path, absent), *args)
    assert done.returncode == 2, done.stderr[-500:]
    command = args[0]
    assert done.stderr.startswith(f"error: `python -m cg3d {command}` needs the package '{absent}'")
    assert done.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "init, reason",
    [
        (
            'raise ImportError("libGL.so.1: cannot open shared object file")',
            "ImportError: libGL.so.1: cannot open shared object file",
        ),
        ("import trimesh._C", "ModuleNotFoundError: No module named 'trimesh._C'"),
    ],
)
def test_a_package_there_but_broken_is_named_as_broken_not_absent(tmp_path, init, reason):
    """A package that is installed but fails to import (a system library its wheel links is
    missing, a wheel built for another Python): a traceback (exit 1), or "lacks the package"
    with `pip install` of what the user has."""
    site = tmp_path / "site"
    (site / "trimesh").mkdir(parents=True)
    (site / "trimesh" / "__init__.py").write_text(init + "\n")
    path = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    out = tmp_path / "meshes"
    done = _cg3d(env, "meshes", "--out", str(out), "--source", "synthetic", "--per-class", "1")
    assert done.returncode == 2, done.stderr[-500:]
    line = done.stderr.splitlines()[-1]
    assert line.startswith("error: `python -m cg3d meshes` needs the package 'trimesh'")
    assert f"has ({site / 'trimesh'}) but cannot import ({reason})" in line
    assert "pip install --force-reinstall 'trimesh>=" in line
    assert "Traceback" not in done.stderr
    assert not out.exists()  # was made first: the check before work only looked for trimesh


def test_a_broken_bpy_is_named_before_render_makes_its_out(tmp_path):
    """bpy is imported by the Blender workers only: a bpy there but failing was found once the
    first worker started, --out made; it is import-checked in a child Python first."""
    site = tmp_path / "site"
    (site / "bpy").mkdir(parents=True)
    (site / "bpy" / "__init__.py").write_text('raise ImportError("libXi.so.6: cannot open")\n')
    path = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    out = tmp_path / "render"
    done = _cg3d(
        {**os.environ, "PYTHONPATH": path}, "render", "--meshes", str(tmp_path), "--out", str(out)
    )
    assert done.returncode == 2, done.stderr[-500:]
    assert done.stderr.startswith("error: `python -m cg3d render` needs the package 'bpy'")
    assert f"has ({site / 'bpy'}) but cannot import (ImportError: libXi.so.6" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("files", "colors", "refused"),
    [(["box.glb", "box.off"], False, True), (["box.off"], True, True), (["box.off"], False, False)],
)
def test_sample_needing_blender_without_bpy_is_one_line_before_its_out(
    tmp_path, files, colors, refused
):
    """A glTF's points (or any object's, with colours) come from a Blender worker, started on
    the first such object: without bpy the stage stopped there, its --out made. An OFF alone
    is trimesh's reading: sampled without bpy."""
    import trimesh

    source = tmp_path / "source" / "cube"
    source.mkdir(parents=True)
    for name in files:
        trimesh.creation.box().export(source / name)
    meshes = tmp_path / "meshes"
    settings = ["--set", "meshes.source=folder", "--set", f"meshes.root={source.parent}"]
    made = _cg3d(dict(os.environ), "meshes", "--out", str(meshes), *settings)
    assert made.returncode == 0, made.stderr[-500:]
    out = tmp_path / "points"
    words = ["--set", "sample.colors=true"] if colors else []
    env = _without(tmp_path, "bpy")
    done = _cg3d(env, "sample", "--meshes", str(meshes), "--out", str(out), *words)
    if not refused:
        assert done.returncode == 0, done.stderr[-500:]
        return
    assert done.returncode == 2, done.stderr[-500:]
    assert done.stderr.startswith("error: `python -m cg3d sample` needs the package 'bpy'")
    assert "pip install 'bpy==" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.blender
def test_a_resumed_sample_asks_for_bpy_only_when_blender_work_is_left(tmp_path):
    """A sample whose glTF objects were all done was refused on a node without bpy, though
    nothing left needs Blender; with such a chunk left to compute, it is still refused."""
    import trimesh

    source = tmp_path / "source" / "cube"
    source.mkdir(parents=True)
    for name in ("box.glb", "box.off"):
        trimesh.creation.box().export(source / name)
    meshes, out = tmp_path / "meshes", tmp_path / "points"
    settings = ["--set", "meshes.source=folder", "--set", f"meshes.root={source.parent}"]
    made = _cg3d(dict(os.environ), "meshes", "--out", str(meshes), *settings)
    assert made.returncode == 0, made.stderr[-500:]
    done = _cg3d(dict(os.environ), "sample", "--meshes", str(meshes), "--out", str(out))
    assert done.returncode == 0, done.stderr[-500:]
    parts = sorted(out.glob("part-*.parquet"))
    env = _without(tmp_path, "bpy")
    resumed = _cg3d(env, "sample", "--meshes", str(meshes), "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-500:]
    assert sorted(out.glob("part-*.parquet")) == parts
    for part in parts:  # the glTF's chunk left to compute
        part.unlink()
    refused = _cg3d(env, "sample", "--meshes", str(meshes), "--out", str(out))
    assert refused.returncode == 2, refused.stderr[-500:]
    assert refused.stderr.startswith("error: `python -m cg3d sample` needs the package 'bpy'")


def test_a_sample_refused_for_bpy_keeps_the_parts_of_another_plan(tmp_path):
    """Colours asked for over a finished sample, on a node without bpy: the run's check came
    after the parts of the earlier plan (no colours) were removed, and the refusal left the
    folder empty of them; it is made before, as for a fresh run."""
    import trimesh

    source = tmp_path / "source" / "cube"
    source.mkdir(parents=True)
    trimesh.creation.box().export(source / "box.off")
    meshes, out = tmp_path / "meshes", tmp_path / "points"
    settings = ["--set", "meshes.source=folder", "--set", f"meshes.root={source.parent}"]
    made = _cg3d(dict(os.environ), "meshes", "--out", str(meshes), *settings)
    assert made.returncode == 0, made.stderr[-500:]
    env = _without(tmp_path, "bpy")
    done = _cg3d(env, "sample", "--meshes", str(meshes), "--out", str(out))
    assert done.returncode == 0, done.stderr[-500:]
    before = {path.name: path.read_bytes() for path in out.glob("*.parquet")}
    assert any(name.startswith("part-") for name in before)

    words = ["--set", "sample.colors=true"]
    refused = _cg3d(env, "sample", "--meshes", str(meshes), "--out", str(out), *words)
    assert refused.returncode == 2, refused.stderr[-500:]
    assert refused.stderr.startswith("error: `python -m cg3d sample` needs the package 'bpy'")
    assert {path.name: path.read_bytes() for path in out.glob("*.parquet")} == before


@pytest.mark.parametrize("checkout", ["wheel", "checkout"])
def test_the_venv_is_named_only_from_a_checkout_that_has_one(tmp_path, monkeypatch, checkout):
    """A wheel install was told to `. .venv/bin/activate`, a venv it does not have."""
    from cg3d import errors

    if checkout == "checkout":
        (tmp_path / "pyproject.toml").write_text("")
        (tmp_path / ".venv" / "bin").mkdir(parents=True)
        (tmp_path / ".venv" / "bin" / "activate").write_text("")
    monkeypatch.setattr(errors, "CHECKOUT", tmp_path)  # else: site-packages, no pyproject
    missing = ModuleNotFoundError("No module named 'nosuchpkg'", name="nosuchpkg")
    line = errors.missing_dependency_line(missing, "cg3d sample")
    assert line is not None and "pip install" in line, line
    named = f". {tmp_path}/.venv/bin/activate" in line
    assert named == (checkout == "checkout"), line
    assert ("activate" in line) == named, line
