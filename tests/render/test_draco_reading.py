"""One reading, every time: a Draco glTF with application-specific vertex attributes and
EXT_mesh_features (as Cesium writes them) read by Blender 5.0's importer, which paired those
attributes with their data in a set's order, different in each process (its hash seed): the file
was read in some workers and failed in others. Now every worker reads it, whatever ran before it
and in which order, and the sample and render stages agree."""

import io
import tarfile

import numpy as np
import pytest
import trimesh
from PIL import Image

from cg3d.formats.failures import read_failures
from cg3d.formats.manifest import MeshRecord, write_manifest
from cg3d.formats.points import iter_points
from cg3d.params import RenderConfig, SampleConfig
from cg3d.pipeline.sample import PointsReader, sample_points
from cg3d.render.stage import render_meshes
from cg3d.render.worker import importer_reason
from tests.render.gltf_files import blender_file

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def features_file(tmp_path_factory):
    return blender_file("draco_features", tmp_path_factory.mktemp("draco") / "features.glb")


def test_every_fresh_worker_reads_it_alike(features_file):
    """Four workers, four processes: on Blender's own hash seeds about one in three read it."""
    clouds = []
    for _ in range(4):
        with PointsReader(SampleConfig(points=256)) as read:
            clouds.append(read(features_file, "y", "features")[0])
    for cloud in clouds[1:]:
        np.testing.assert_array_equal(cloud, clouds[0])
    # The cube scaled 0.5 × 1 × 2 in Blender (Z up) is 0.5 wide, 2 tall, 1 deep in glTF's Y up.
    extent = clouds[0].max(0) - clouds[0].min(0)
    np.testing.assert_allclose(extent / extent.max(), [0.25, 1.0, 0.5], atol=0.03)


def stage_outputs(folder, features_file, others_first: bool):
    """Points and views of `features` from the sample and render stages, with two other objects
    read before it in the same worker (ids sorting first) or after it."""
    folder.mkdir()
    (folder / "features.glb").write_bytes(features_file.read_bytes())
    trimesh.creation.icosphere(subdivisions=2).export(folder / "ball.glb")
    trimesh.creation.box([1.0, 0.3, 0.2]).export(folder / "bar.glb")
    prefix = "a" if others_first else "z"
    records = [
        MeshRecord("m_features", "test", "features.glb", "x", "train"),
        MeshRecord(f"{prefix}_ball", "test", "ball.glb", "x", "train"),
        MeshRecord(f"{prefix}_bar", "test", "bar.glb", "x", "train"),
    ]
    write_manifest(records, folder)
    sample_points(folder, folder / "points", SampleConfig(points=256, workers=1))
    render_meshes(folder, folder / "render", RenderConfig(views=2, resolution=48, workers=1))
    for stage in ("points", "render"):
        assert read_failures(folder / stage / "failures.parquet") == []
    views = {}
    for part in sorted((folder / "render").glob("part-*.tar")):
        with tarfile.open(part) as tar:
            for member in tar.getmembers():
                if member.name.startswith("m_features.") and member.name.endswith(".png"):
                    png = tar.extractfile(member).read()
                    views[member.name] = np.asarray(Image.open(io.BytesIO(png)))
    return dict(iter_points(folder / "points"))["m_features"], views


def test_the_same_points_and_views_in_either_order(tmp_path, features_file):
    points_a, views_a = stage_outputs(tmp_path / "first", features_file, others_first=True)
    points_b, views_b = stage_outputs(tmp_path / "last", features_file, others_first=False)
    np.testing.assert_array_equal(points_a, points_b)
    assert sorted(views_a) == sorted(views_b) and len(views_a) == 2
    for name, pixels in views_a.items():
        np.testing.assert_array_equal(pixels, views_b[name])


def test_an_importer_traceback_is_one_line_naming_its_exception(tmp_path):
    """Blender's report of an importer error is a whole traceback; the reason is its last line,
    and a Draco file is `undecodable` only when the Draco decoder is where it raised."""
    report = (
        "Error: Python: Traceback (most recent call last):\n"
        '  File "/x/io_scene_gltf2/blender/imp/mesh.py", line 273, in do_primitives\n'
        "    attribute_data[idx] = np.concatenate((attribute_data[idx], attr_data))\n"
        "                          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "ValueError: all the input array dimensions except for the concatenation axis must "
        "match exactly\n"
        "Location: /x/bpy/ops.py:109\n"
    )
    path = tmp_path / "x.gltf"
    path.write_text(
        '{"asset": {"version": "2.0"}, "extensionsUsed": ["KHR_draco_mesh_compression"]}'
    )
    reason = importer_reason(report, path)
    assert reason == (
        "unreadable: Blender's importer failed: ValueError: all the input array dimensions "
        "except for the concatenation axis must match exactly"
    )
    in_decoder = report.replace("blender/imp/mesh.py", "blender/imp/draco_compression_extension.py")
    assert importer_reason(in_decoder, path).startswith(
        "undecodable: the KHR_draco_mesh_compression payload: ValueError: "
    )
