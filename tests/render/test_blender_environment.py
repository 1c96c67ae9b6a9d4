"""Blender never auto-runs scripts: not from the folders a user's environment names for it
(BLENDER_USER_SCRIPTS, BLENDER_SYSTEM_SCRIPTS, BLENDER_USER_RESOURCES, ~/.config/blender),
neither startup scripts nor add-ons a saved userpref.blend enables (a glTF importer user
extension among them), nor modules there named like Blender's own importers."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cg3d.params import RenderConfig
from cg3d.render.stage import render_meshes
from tests.render.helpers import write_meshes

pytestmark = pytest.mark.blender

# Enable the planted add-on and save the preferences, as a user's Blender would have.
SAVE_PREFERENCES = """
import bpy
assert bpy.ops.preferences.addon_enable(module="planted_addon") == {"FINISHED"}
bpy.context.preferences.filepaths.use_scripts_auto_execute = True
bpy.ops.wm.save_userpref()
"""


def marker(marks: Path, name: str, indent: str = "") -> str:
    """A line of Python that leaves the file `marks/name` behind when it runs."""
    return f"{indent}open({str(marks / name)!r}, 'a').write('ran')\n"


def plant_scripts(scripts: Path, marks: Path, tag: str) -> None:
    """A Blender scripts folder whose every piece of code writes a marker when it runs."""
    (scripts / "startup").mkdir(parents=True)
    (scripts / "startup" / "planted_startup.py").write_text(
        marker(marks, f"{tag}-startup")
        + "def register():\n"
        + marker(marks, f"{tag}-startup-register", "    ")
        + "def unregister():\n    pass\n"
    )
    addon = scripts / "addons" / "planted_addon"
    addon.mkdir(parents=True)
    (addon / "__init__.py").write_text(
        "bl_info = {'name': 'planted', 'blender': (2, 80, 0), 'category': 'Import-Export'}\n"
        + marker(marks, f"{tag}-addon")
        # the glTF importer calls the user extensions of enabled add-ons on every import
        + "class glTF2ImportUserExtension:\n    def __init__(self):\n"
        + marker(marks, f"{tag}-gltf-extension", "        ")
        + "def register():\n"
        + marker(marks, f"{tag}-addon-register", "    ")
        + "def unregister():\n    pass\n"
    )
    for shadow in ["io_scene_gltf2", "io_import_scene_ply", "io_scene_obj"]:
        (scripts / "addons" / f"{shadow}.py").write_text(marker(marks, f"{tag}-{shadow}"))
    (scripts / "modules").mkdir()
    (scripts / "modules" / "planted_module.py").write_text(marker(marks, f"{tag}-module"))


def save_preferences(env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SAVE_PREFERENCES], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(the environment naming the planted folders, the marker folder)."""
    root = tmp_path_factory.mktemp("planted")
    marks = root / "marks"
    marks.mkdir()
    home = root / "home"
    resources = home / ".config" / "blender" / "5.0"
    plant_scripts(resources / "scripts", marks, "home")
    plant_scripts(root / "user", marks, "user")
    plant_scripts(root / "system" / "scripts", marks, "system")
    base = {k: v for k, v in os.environ.items() if not k.startswith("BLENDER_")}
    # userpref.blend in ~/.config/blender/5.0/config and in BLENDER_USER_CONFIG, each enabling
    # the planted add-on
    save_preferences({**base, "HOME": str(home)}, root)
    save_preferences(
        {
            **base,
            "BLENDER_USER_SCRIPTS": str(root / "user"),
            "BLENDER_USER_CONFIG": str(root / "config"),
        },
        root,
    )
    assert (resources / "config" / "userpref.blend").is_file()
    assert (root / "config" / "userpref.blend").is_file()
    for mark in marks.iterdir():  # enabling the add-on ran it: the marks start from here
        mark.unlink()
    env = {
        "HOME": str(home),
        "BLENDER_USER_SCRIPTS": str(root / "user"),
        "BLENDER_USER_CONFIG": str(root / "config"),
        "BLENDER_USER_RESOURCES": str(resources),
        "BLENDER_SYSTEM_SCRIPTS": str(root / "system" / "scripts"),
        "BLENDER_SYSTEM_RESOURCES": str(root / "system"),
    }
    return env, marks


def test_no_script_a_users_blender_folders_hold_runs_in_a_render(planted, tmp_path, monkeypatch):
    env, marks = planted
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    write_meshes(tmp_path / "meshes")  # OBJ, glTF (GLB), PLY and OFF
    config = RenderConfig(views=1, resolution=32, background="transparent", workers=1)
    # BLENDER_SYSTEM_RESOURCES of another install crashed every worker at start-up
    summary = render_meshes(tmp_path / "meshes", tmp_path / "out", config)
    assert summary.rendered == 4, summary
    (part,) = (tmp_path / "out").glob("part-*.tar")
    with tarfile.open(part) as tar:
        names = set(tar.getnames())
    assert {f"{i}.view_00.png" for i in ["lshape", "cylinder", "box", "cone"]} <= names
    # BLENDER_SYSTEM_SCRIPTS' startup script ran in every worker
    assert sorted(p.name for p in marks.iterdir()) == []


# A user's own colour management (a Filmic or ACES config installed into Blender's user
# datafiles, or the OCIO variable a VFX shell sets): the "Standard" view of the sRGB display
# here goes to Display P3, as another config's Standard may.
def user_colour_config(folder: Path) -> Path:
    package = Path(importlib.util.find_spec("bpy").origin).parent  # not imported: all Blender
    bundled = package / "5.0" / "datafiles" / "colormanagement"
    shutil.copytree(bundled, folder)
    config = folder / "config.ocio"
    text = config.read_text()
    standard = "{name: Standard, view_transform: Standard, display_colorspace: sRGB}"
    assert standard in text
    config.write_text(text.replace(standard, standard.replace("sRGB}", "Display P3}"), 1))
    return config


def rendered_views(meshes: Path, out: Path) -> dict[str, bytes]:
    config = RenderConfig(views=1, resolution=32, background="transparent", workers=1)
    summary = render_meshes(meshes, out, config)
    assert summary.rendered == 4, summary
    (part,) = out.glob("part-*.tar")
    with tarfile.open(part) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.name.endswith(".png")}


def test_a_users_colour_management_does_not_change_the_views(tmp_path, monkeypatch):
    """Blender takes its colour configuration from the user's datafiles folder
    (~/.config/blender/5.0/datafiles/colormanagement, BLENDER_USER_RESOURCES/datafiles) and
    from the OCIO variable before its own: a researcher's Filmic/ACES install changed every
    rendered pixel, silently (the data, the shards and training then differ by machine)."""
    for name in [n for n in os.environ if n.startswith("BLENDER_") or n == "OCIO"]:
        monkeypatch.delenv(name)
    write_meshes(tmp_path / "meshes")
    monkeypatch.setenv("HOME", str(tmp_path / "plain"))
    plain = rendered_views(tmp_path / "meshes", tmp_path / "plain-out")
    datafiles = tmp_path / "home" / ".config" / "blender" / "5.0" / "datafiles"
    config = user_colour_config(datafiles / "colormanagement")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert rendered_views(tmp_path / "meshes", tmp_path / "home-out") == plain
    monkeypatch.setenv("HOME", str(tmp_path / "plain"))
    monkeypatch.setenv("OCIO", str(config))
    assert rendered_views(tmp_path / "meshes", tmp_path / "ocio-out") == plain


def test_the_workers_run_the_commands_cg3d_not_the_working_folders(tmp_path, monkeypatch):
    """`python -m cg3d.render.worker` puts the working folder first on the worker's path: run
    from another checkout's root (an older clone beside an installed cg3d, a worktree beside
    PYTHONPATH's), every Blender ran that folder's worker, not the command's."""
    checkout = tmp_path / "checkout"
    (checkout / "cg3d" / "render").mkdir(parents=True)
    for name in ("__init__.py", "render/__init__.py"):
        (checkout / "cg3d" / name).write_text("")
    (checkout / "cg3d" / "render" / "worker.py").write_text(marker(tmp_path, "other-worker"))
    write_meshes(tmp_path / "meshes")
    monkeypatch.chdir(checkout)
    config = RenderConfig(views=1, resolution=16, workers=1)
    summary = render_meshes(tmp_path / "meshes", tmp_path / "out", config)
    assert summary.rendered == 4, summary
    assert not (tmp_path / "other-worker").exists()


def test_the_workers_run_the_commands_cg3d_from_a_folder_named_with_a_colon(tmp_path, monkeypatch):
    """A cg3d run from a folder whose name holds ':' (`cd 'run:2' && python -m cg3d render`):
    the worker had that folder on its PYTHONPATH, which ':' splits in two, and so imported
    another cg3d (an editable install's, or the next PYTHONPATH folder's, as here)."""
    from cg3d.render import supervisor

    checkout = tmp_path / "checkout"
    (checkout / "cg3d" / "render").mkdir(parents=True)
    for name in ("__init__.py", "render/__init__.py"):
        (checkout / "cg3d" / name).write_text("")
    (checkout / "cg3d" / "render" / "worker.py").write_text(marker(tmp_path, "other-worker"))
    named = tmp_path / "run:2"
    named.symlink_to(Path(supervisor.__file__).parents[2])  # this cg3d, under a ':' name
    monkeypatch.setattr(supervisor, "own_code_folder", lambda: str(named))
    monkeypatch.setenv("PYTHONPATH", str(checkout))  # the user's, kept after the command's
    write_meshes(tmp_path / "meshes")
    config = RenderConfig(views=1, resolution=16, workers=1)
    summary = render_meshes(tmp_path / "meshes", tmp_path / "out", config)
    assert summary.rendered == 4, summary
    assert not (tmp_path / "other-worker").exists()
