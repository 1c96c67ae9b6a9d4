"""What Blender may read: the OBJ/MTL reference forms Blender's importer accepts (found by trying
Blender 5: indented or tab-separated `mtllib`, a backslash-continued line, a quoted name,
texture options before the file name, an indented map) never bring a file from outside the
source root into the points; and a file checked when listed is checked again when opened
(`changed_since_listed`), in the sample and the render stage alike."""

import os
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from cg3d.formats.failures import read_failures
from cg3d.formats.manifest import read_manifest
from cg3d.formats.points import iter_points
from cg3d.geometry.meshio import MeshError, validate_file
from cg3d.params import MeshesConfig, RenderConfig, SampleConfig
from cg3d.pipeline.sample import PointsReader, sample_points
from cg3d.pipeline.sources import build_manifest
from cg3d.render.stage import render_meshes

pytestmark = pytest.mark.blender

# A textured triangle pair: every point gets the texture's colour when the map is read.
GEOMETRY = (
    "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
    "usemtl m\nf 1/1 2/2 3/3\nf 1/1 3/3 4/4\n"
)
RED = (255, 0, 0)
GREEN_KD = "0.1 0.9 0.1"
INSIDE_KD = "0.2 0.2 0.9"

# `mtllib` forms Blender reads, each naming ../outside/evil.mtl (green, with a red texture).
MTLLIB_FORMS = {
    "spaces": "   mtllib ../outside/evil.mtl\n",
    "tab": "\tmtllib ../outside/evil.mtl\n",
    "tab_separated": "mtllib\t../outside/evil.mtl\n",
    "continued": "mtllib \\\n../outside/evil.mtl\n",
    "continued_crlf": "mtllib \\\r\n../outside/evil.mtl\r\n",
    "quoted": 'mtllib "../outside/evil.mtl"\n',
}
# Texture map forms in an MTL inside the root, each naming ../outside/red.png.
MAP_FORMS = {
    "options_after": "map_Kd ../outside/red.png -bm 1",
    "options_before": "map_Kd -bm 1 ../outside/red.png",
    "offset_before": "map_Kd -o 0.1 0.2 -s 1 1 1 ../outside/red.png",
    "indented": "\t  map_Kd ../outside/red.png",
    "quoted": 'map_Kd "../outside/red.png"',
}


def outside_files(tmp_path: Path) -> Path:
    """`tmp_path/root` (returned) next to `tmp_path/outside` with a green MTL and a red PNG."""
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (8, 8), RED).save(outside / "red.png")
    (outside / "evil.mtl").write_text(f"newmtl m\nKd {GREEN_KD}\nmap_Kd red.png\n")
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture(scope="module")
def read():
    """Blender's reading of a lone file (its folder is its root, as for `cg3d classify`), one
    worker for the module."""
    with PointsReader(SampleConfig(points=64, colors=True)) as reader:
        yield lambda path: reader(path, "y", "tri")


def refused_when_read(read, path: Path) -> None:
    """Read anyway (a manifest made before the fix, a file given to classify): the reading is
    refused, naming the reference, before anything from outside colours a point."""
    with pytest.raises(ValueError, match=r"^outside_root: \.\./outside/"):
        read(path)


def near(rgb: np.ndarray, colour) -> np.ndarray:
    return np.abs(rgb - np.asarray(colour, dtype=float)).max(axis=1) < 0.05


@pytest.mark.parametrize("form", sorted(MTLLIB_FORMS))
def test_mtllib_forms_blender_reads_are_refused_and_never_read(tmp_path, read, form):
    root = outside_files(tmp_path)
    obj = root / "tri.obj"
    obj.write_text(MTLLIB_FORMS[form] + GEOMETRY)
    with pytest.raises(MeshError, match="outside_root"):
        validate_file(obj, root)
    refused_when_read(read, obj)


@pytest.mark.parametrize("form", sorted(MAP_FORMS))
def test_texture_map_forms_blender_reads_are_refused_and_never_read(tmp_path, read, form):
    root = outside_files(tmp_path)
    (root / "in.mtl").write_text(f"newmtl m\nKd {INSIDE_KD}\n{MAP_FORMS[form]}\n")
    obj = root / "tri.obj"
    obj.write_text("mtllib in.mtl\n" + GEOMETRY)
    with pytest.raises(MeshError, match="outside_root"):
        validate_file(obj, root)
    refused_when_read(read, obj)


def test_references_inside_the_root_are_read_in_every_form(tmp_path, read):
    """The confined copy keeps what lies inside: a continued `mtllib`, options before the map."""
    root = outside_files(tmp_path)
    Image.new("RGB", (8, 8), RED).save(root / "red.png")
    (root / "in.mtl").write_text(f"newmtl m\nKd {INSIDE_KD}\nmap_Kd -bm 1 red.png\n")
    obj = root / "tri.obj"
    obj.write_text("  mtllib \\\nin.mtl\n" + GEOMETRY)
    validate_file(obj, root)
    cloud, has_color = read(obj)
    assert has_color and near(cloud[:, 3:6], [1.0, 0.0, 0.0]).all()


def test_a_texture_swapped_for_a_link_to_the_outside_is_not_read(tmp_path, read):
    root = outside_files(tmp_path)
    Image.new("RGB", (8, 8), (0, 0, 255)).save(root / "tex.png")
    (root / "in.mtl").write_text("newmtl m\nmap_Kd tex.png\n")
    obj = root / "tri.obj"
    obj.write_text("mtllib in.mtl\n" + GEOMETRY)
    validate_file(obj, root)
    (root / "tex.png").unlink()
    os.symlink(tmp_path / "outside" / "red.png", root / "tex.png")
    with pytest.raises(ValueError, match="^outside_root: tex.png resolves outside"):
        read(obj)


def listed_source(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A folder source (class `c`: a box OBJ, a box GLB) listed by the meshes stage, and an
    outside folder holding a different shape under the same names; (root, meshes, outside)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "c").mkdir(parents=True)
    outside.mkdir()
    box = trimesh.creation.box([1.0, 0.2, 0.2])
    box.export(root / "c" / "a.obj")
    box.export(root / "c" / "b.glb")
    sphere = trimesh.creation.icosphere(subdivisions=2)
    sphere.export(outside / "a.obj")
    sphere.export(outside / "b.glb")
    meshes = tmp_path / "meshes"
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), meshes)
    assert [r.status for r in read_manifest(meshes)] == ["ok", "ok"]
    return root, meshes, outside


def failure_reasons(folder: Path) -> dict[str, str]:
    return {row["id"]: row["reason"] for row in read_failures(folder / "failures.parquet")}


@pytest.mark.parametrize("change", ["symlink", "rewritten"])
def test_a_file_changed_after_listing_is_a_failure_in_sample_and_render(tmp_path, change):
    root, meshes, outside = listed_source(tmp_path)
    for name in ("a.obj", "b.glb"):  # the fast path (OBJ) and Blender's reading (GLB)
        listed = root / "c" / name
        listed.unlink()
        if change == "symlink":
            os.symlink(outside / name, listed)
        else:
            listed.write_bytes((outside / name).read_bytes())
    sample_points(meshes, tmp_path / "points", SampleConfig(points=64, workers=1))
    render_meshes(meshes, tmp_path / "render", RenderConfig(views=1, resolution=32, workers=1))
    assert list(iter_points(tmp_path / "points")) == []
    for stage in ("points", "render"):
        reasons = failure_reasons(tmp_path / stage)
        assert len(reasons) == 2, (stage, reasons)
        for reason in reasons.values():
            assert reason.startswith("changed_since_listed: ") and "\n" not in reason


def test_an_unchanged_source_samples_and_renders(tmp_path):
    _, meshes, _ = listed_source(tmp_path)
    summary = sample_points(meshes, tmp_path / "points", SampleConfig(points=64, workers=1))
    rendered = render_meshes(
        meshes, tmp_path / "render", RenderConfig(views=1, resolution=32, workers=1)
    )
    assert summary.failures == [] and rendered.failures == []
