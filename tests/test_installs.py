"""cg3d as a researcher installs it: a wheel (`pip install .`, not `-e`), run from a folder that
is no checkout. Everything it reads must be package data, found through the installed package,
never through the source tree.

The venv holds only the wheel; its dependencies are this Python's (a `.pth` file naming this
Python's site-packages: a folder added so runs no `.pth` of its own, so not the checkout's
editable finder), so that no test downloads or copies gigabytes."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def checkout_files() -> list[str]:
    """The checkout's files as git sees them: tracked, or new and not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    return [name for name in os.fsdecode(listed).split("\0") if (REPO / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the checkout, built from a copy (a build leaves build/ and egg-info behind)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for name in checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((REPO / name).read_bytes())
    build = (
        "import sys\nfrom setuptools import build_meta\nprint(build_meta.build_wheel(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", build, str(root / "dist")],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "dist" / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict[str, str]:
    """The environment of a shell in a venv that holds the wheel: PATH leads to its `cg3d`."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*install, "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return environment | {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def run(environment: dict[str, str], cwd: Path, *words: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        list(words), cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (words, done.stderr[-2000:])
    return done


def test_the_wheel_holds_every_file_of_the_package(wheel):
    """A file under cg3d/ that is no Python file ships only where pyproject's package-data
    names it: protocol.json, the CLIP configs."""
    shipped = set(zipfile.ZipFile(wheel).namelist())
    package = [name for name in checkout_files() if name.startswith("cg3d/")]
    assert "cg3d/data/protocol.json" in package
    assert sorted(set(package) - shipped) == []


def test_the_installed_cg3d_runs_from_a_folder_that_is_no_checkout(installed, tmp_path):
    where = run(installed, tmp_path, "python", "-c", "import cg3d; print(cg3d.__file__)")
    assert "site-packages" in where.stdout and not where.stdout.startswith(str(REPO))
    assert "meshes" in run(installed, tmp_path, "cg3d", "--help").stdout
    run(installed, tmp_path, "cg3d", "meshes", "--per-class", "1", "--out", "meshes")
    words = ["cg3d", "sample", "--meshes", "meshes", "--out", "points", "--points", "64"]
    run(installed, tmp_path, *words, "--workers", "1")
    shown = run(installed, tmp_path, "cg3d", "inspect", "points").stdout
    assert shown.startswith("points: points, 10 ids, 0 failures")
    # the package data: the protocol's class lists and templates, CLIP's shipped configs
    data = (
        "from cg3d.protocol import class_names\n"
        "from cg3d.models.clip import load_clip\n"
        "print(len(class_names('modelnet40')))\n"
        "print(type(load_clip('CG3D-ViT-Micro-32', 'none').model).__name__)\n"
    )
    assert run(installed, tmp_path, "python", "-c", data).stdout.split() == ["40", "CLIP"]
    # -OO: the help of each command is read from the installed source
    helped = run(installed, tmp_path, "python", "-OO", "-m", "cg3d", "sample", "--help")
    assert "Sample point clouds from meshes" in helped.stdout


def other_cg3d(folder: Path, mark: Path) -> Path:
    """`folder` holding another cg3d/ package, whose Blender worker leaves `mark` when run."""
    (folder / "cg3d" / "render").mkdir(parents=True)
    for name in ("__init__.py", "render/__init__.py"):
        (folder / "cg3d" / name).write_text("")
    (folder / "cg3d" / "render" / "worker.py").write_text(f"open({str(mark)!r}, 'w')\n")
    return folder


@pytest.mark.blender
def test_the_installed_cg3d_renders_with_its_own_worker(installed, tmp_path):
    """Not the working folder's cg3d/ (`python -m` puts it first), nor, under `python -I`,
    one on the PYTHONPATH that the command itself ignored."""
    mark = tmp_path / "other-worker-ran"
    other = other_cg3d(tmp_path / "other", mark)
    run(installed, tmp_path, "cg3d", "meshes", "--per-class", "1", "--out", "meshes")
    words = ["render", "--meshes", str(tmp_path / "meshes"), "--views", "1", "--resolution", "16"]
    run(installed, other, "cg3d", *words, "--out", str(tmp_path / "views"), "--workers", "1")
    assert not mark.exists()
    assert (tmp_path / "views" / "part-00000.tar").is_file()
    isolated = installed | {"PYTHONPATH": str(other)}
    command = ["python", "-I", "-m", "cg3d", *words, "--out", str(tmp_path / "isolated")]
    run(isolated, tmp_path, *command, "--workers", "1")
    assert not mark.exists()
    assert (tmp_path / "isolated" / "part-00000.tar").is_file()
