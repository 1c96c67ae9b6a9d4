"""Blender opens no path of 1024 bytes or more (its FILE_MAX), far less than the system's 4095:
a PLY nested past it failed "Invalid PLY header", every OBJ and glTF of a stage whose folder
was deep failed "File name too long" or "holds no faces" (Blender's scratch copies and views
live in the stage's `.workers/`), and a texture nested past it was left out without a word.
Blender is handed short paths: links beside its copies, a short alias of a deep temp folder."""

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cg3d.files import remove_live_folder
from cg3d.geometry.meshio import BLENDER_FILE_MAX, blender_input
from cg3d.params import RenderConfig, SampleConfig
from cg3d.pipeline.sample import PointsReader
from cg3d.render.supervisor import TMP_ROOM, BlenderWorker, blender_tmp_dir
from tests.render.helpers import cameras_of, render_views

RED = (200, 30, 30)
PLY = (
    "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
    "property float z\nelement face 4\nproperty list uchar int vertex_indices\nend_header\n"
    "0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"
)


def deep_folder(base: Path, size: int) -> Path:
    """A folder under `base` whose path is at least `size` bytes (names of 200 bytes)."""
    folder = base
    while len(os.fsencode(str(folder))) < size:
        folder = folder / ("d" * 200)
    folder.mkdir(parents=True)
    return folder


def textured_obj(folder: Path) -> Path:
    """A textured tetrahedron: OBJ, MTL and a one-colour PNG, beside each other."""
    Image.new("RGB", (4, 4), RED).save(folder / "skin.png")
    (folder / "skin.mtl").write_text("newmtl skin\nmap_Kd skin.png\n")
    (folder / "shape.obj").write_text(
        "mtllib skin.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nvt 0 0\nvt 1 0\nvt 0 1\n"
        "usemtl skin\nf 1/1 2/2 3/3\nf 1/1 2/2 4/3\nf 1/1 3/2 4/3\nf 2/1 3/2 4/3\n"
    )
    return folder / "shape.obj"


def textured_gltf(folder: Path) -> Path:
    """A textured tetrahedron as .gltf + .bin + .png."""
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    uvs = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
    indices = np.array([0, 1, 2, 0, 1, 3, 0, 2, 3, 1, 2, 3], np.uint16)
    blob = positions.tobytes() + uvs.tobytes() + indices.tobytes()
    (folder / "shape.bin").write_bytes(blob)
    Image.new("RGB", (4, 4), RED).save(folder / "skin.png")
    views = [(0, 48), (48, 32), (80, 24)]
    document = {
        "asset": {"version": "2.0"},
        "buffers": [{"uri": "shape.bin", "byteLength": len(blob)}],
        "bufferViews": [{"buffer": 0, "byteOffset": o, "byteLength": n} for o, n in views],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3",
             "min": [0, 0, 0], "max": [1, 1, 1]},
            {"bufferView": 1, "componentType": 5126, "count": 4, "type": "VEC2"},
            {"bufferView": 2, "componentType": 5123, "count": 12, "type": "SCALAR"},
        ],
        "images": [{"uri": "skin.png"}],
        "textures": [{"source": 0}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        "meshes": [{"primitives": [
            {"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0}
        ]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
    }  # fmt: skip
    (folder / "shape.gltf").write_text(json.dumps(document))
    return folder / "shape.gltf"


def test_a_ply_nested_past_blenders_limit_is_handed_over_by_a_short_link(tmp_path):
    folder = deep_folder(tmp_path / "root", 1100)
    (folder / "shape.ply").write_text(PLY)
    given = blender_input(folder / "shape.ply", tmp_path / "root", "", tmp_path / "copy")
    assert len(os.fsencode(str(given))) < BLENDER_FILE_MAX
    assert given.resolve() == (folder / "shape.ply").resolve()


@pytest.mark.parametrize("make", [textured_obj, textured_gltf])
def test_a_deep_texture_is_named_in_the_copy_by_a_short_link(tmp_path, make):
    """The OBJ's MTL copy and the glTF copy name a texture past the limit by a link beside
    them (they named its whole path, which Blender did not open)."""
    folder = deep_folder(tmp_path / "root", 1100)
    copy = blender_input(make(folder), tmp_path / "root", "", tmp_path / "copy")
    if copy.suffix == ".gltf":
        names = [item["uri"] for item in json.loads(copy.read_text())["images"]]
    else:
        names = [line.split()[-1] for line in (tmp_path / "copy" / "material-0.mtl").open()]
        names = [name for name in names if name.endswith(".png")]
    (name,) = names
    named = copy.parent / name
    assert len(os.fsencode(str(named))) < BLENDER_FILE_MAX
    assert named.resolve() == (folder / "skin.png").resolve()


@pytest.mark.blender
@pytest.mark.parametrize("make", [textured_obj, textured_gltf])
def test_a_deep_texture_colours_the_points(tmp_path, make):
    path = make(deep_folder(tmp_path, 1100))
    with PointsReader(SampleConfig(points=256, colors=True)) as read:
        points, has_color = read(path, "y", "shape", path.parent)
    assert has_color  # it was False: the texture was not read
    assert np.abs(points[:, 3:6] - np.array(RED) / 255).max() < 0.01


@pytest.mark.blender
def test_a_ply_nested_past_blenders_limit_is_rendered(tmp_path):
    path = deep_folder(tmp_path, 1100) / "shape.ply"
    path.write_text(PLY)
    config = RenderConfig(views=1, resolution=64, background="transparent")
    views, _ = render_views(path, "y", config)  # it failed: "Invalid PLY header"
    (image,) = views.values()
    assert (image[:, :, 3] == 255).sum() > 100


@pytest.mark.blender
def test_a_worker_whose_temp_folder_is_deep_renders_a_255_byte_name(tmp_path):
    """A stage's folder of ~3,000 bytes (check_out_dir allows up to 3,839): its worker's copy
    `source/<the 255-byte name>` and its views are past Blender's limit but for the alias."""
    source = tmp_path / "source"
    source.mkdir()
    path = source / ("a" * 251 + ".obj")
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    config = RenderConfig(views=1, resolution=64, background="transparent")
    cameras = cameras_of(config, "object")
    scratch = deep_folder(tmp_path / "out", 3000) / ".workers"
    with BlenderWorker(config.worker_settings(), 120.0, tmp_root=scratch) as worker:
        assert worker.render("object", path, "y", cameras["views"]) is None
        (view,) = cameras["views"]
        image = np.asarray(Image.open(worker.out_dir / f"object.{view['name']}.png"))
        alias = worker.alias
    assert (image[:, :, 3] == 255).sum() > 100
    assert not alias.exists()  # the alias in the system's temp folder is removed with it


def test_an_alias_is_removed_once_its_maker_is_killed_and_never_while_it_lives(
    tmp_path, monkeypatch
):
    """A SIGKILLed stage cannot remove its alias in /tmp: the next worker that makes one removes
    those of this user whose maker is gone (its lock is free). A live alias is kept even when
    its worker folder is out of sight (a run on another machine sharing /tmp: before, a link
    to a missing folder was taken for a dead alias); a symlink named like an alias is not
    followed, and a worker temp folder of a command that owns no folder is kept."""
    system = tmp_path / "system"
    system.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system))
    killed = deep_folder(tmp_path / "killed", 900)
    maker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; "
            "from cg3d.render.supervisor import blender_tmp_dir; "
            "print(blender_tmp_dir(Path(sys.argv[1]))[1], flush=True); sys.stdin.read()",
            str(killed),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(system)},
    )
    killed_alias = Path(maker.stdout.readline().strip())
    maker.kill()
    maker.wait()
    assert killed_alias.parent == system and killed_alias.is_dir()
    _, live_alias, _ = blender_tmp_dir(deep_folder(tmp_path / "live", 900))
    shutil.rmtree(tmp_path / "live")  # its worker folder is on another machine
    worker_folder = system / "cg3d-render-own"  # a command that owns no folder
    (worker_folder / "tmp").mkdir(parents=True)
    victim = tmp_path / "victim"  # what a symlink planted in /tmp points to
    victim.mkdir()
    (victim / "tmp").symlink_to(tmp_path / "gone")
    (victim / "lock").write_bytes(b"")
    (system / "cg3d-render-planted").symlink_to(victim)
    _, alias, _ = blender_tmp_dir(deep_folder(tmp_path / "next", 900))
    assert not os.path.lexists(killed_alias)
    assert live_alias.is_dir() and alias.is_dir() and worker_folder.is_dir()
    assert sorted(os.listdir(victim)) == ["lock", "tmp"]


def test_an_alias_is_short_even_when_the_system_temp_folder_is_deep(tmp_path, monkeypatch):
    """A TMPDIR nested deep (a cluster job's folder): the alias went in it, as deep, and every
    path built in it was past Blender's limit again. It goes in /tmp then."""
    monkeypatch.setattr(tempfile, "tempdir", str(deep_folder(tmp_path / "system", 900)))
    told, alias, lock = blender_tmp_dir(deep_folder(tmp_path / "worker", 900))
    try:
        assert alias.parent == Path("/tmp") and told == str(alias / "tmp")
        assert len(os.fsencode(told)) + TMP_ROOM < BLENDER_FILE_MAX
    finally:
        remove_live_folder(alias, lock)


def test_a_worker_dropped_before_close_leaves_no_alias(tmp_path):
    """A worker made and never closed (a start that raised in a caller without `with`, a Ray
    actor dropped): its alias goes with it, as its temp folder does."""
    scratch = deep_folder(tmp_path / "out", 1000) / ".workers"
    worker = BlenderWorker({"role": "points"}, 60.0, tmp_root=scratch)
    alias = worker.alias
    assert alias.is_dir()
    del worker
    gc.collect()
    assert not os.path.lexists(alias)


@pytest.mark.blender
def test_blender_makes_its_temp_folder_in_a_deep_worker_folder(tmp_path):
    """Blender's TMPDIR goes through the alias too: from a deep one it made no temp folder
    ("Could not generate a temp session subdirectory") and worked from a cut path."""
    scratch = deep_folder(tmp_path / "out", 1000) / ".workers"
    with BlenderWorker({"role": "points"}, 120.0, tmp_root=scratch) as worker:
        worker.start()
        made = list(worker.blender_tmp.glob("blender_*"))
        log = worker.log_path.read_text(errors="replace")
    assert "Could not generate a temp" not in log
    assert len(made) == 1


def test_a_deep_texture_with_a_long_suffix_is_linked_by_a_name_within_name_max(tmp_path):
    """`skin.<246 bytes>` is a name the system allows: its link's name (`linked-<digest>` and the
    suffix) was over NAME_MAX, an OSError of the object's copy naming our link."""
    folder = deep_folder(tmp_path / "root", 1100)
    path = textured_obj(folder)
    texture = "skin." + "p" * 246
    (folder / "skin.png").rename(folder / texture)
    (folder / "skin.mtl").write_text(f"newmtl skin\nmap_Kd {texture}\n")
    blender_input(path, tmp_path / "root", "", tmp_path / "copy")
    (line,) = [x for x in (tmp_path / "copy" / "material-0.mtl").open() if x.startswith("map_Kd")]
    named = tmp_path / "copy" / line.split()[-1]
    assert named.resolve() == (folder / texture).resolve()
