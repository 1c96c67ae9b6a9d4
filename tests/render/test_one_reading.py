"""One reading of each file: the sampled points land on the rendered object, for files a weaker
reader misreads (a skin, a sparse accessor, a point primitive beside triangles, instancing,
Draco), and the fast path's formats read the same in trimesh and Blender."""

import io
import json
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
from tests.render.gltf_files import blender_file, mixed_glb, sparse_glb
from tests.render.helpers import on_object_share

pytestmark = pytest.mark.blender

RESOLUTION = 96


def members_of(folder):
    out = {}
    for part in sorted(folder.glob("part-*.tar")):
        with tarfile.open(part) as tar:
            out.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
    return out


def on_object_shares(points, members, object_id):
    """Per view, the share of points whose pixel is covered by the object (alpha > 0)."""
    cameras = json.loads(members[f"{object_id}.cameras.json"])
    shares = []
    for view in cameras["views"]:
        png = members[f"{object_id}.{view['name']}.png"]
        alpha = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))[:, :, 3]
        shares.append(on_object_share(points, alpha, view))
    return shares


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    files = {
        "skinned": blender_file("skinned", root / "skinned.glb"),
        "instanced": blender_file("instanced", root / "instanced.glb"),
        "draco": blender_file("draco", root / "draco.glb"),
        "sparse": sparse_glb(root / "sparse.glb"),
        "mixed": mixed_glb(root / "mixed.glb"),
    }
    records = [MeshRecord(k, "test", p.name, k, "train") for k, p in files.items()]
    write_manifest(records, root)
    sample_points(root, root / "points", SampleConfig(points=512, workers=1))
    config = RenderConfig(views=4, resolution=RESOLUTION, workers=1, background="transparent")
    render_meshes(root, root / "render", config)
    return root, files


def test_points_land_on_the_object_in_every_view(real_files):
    root, files = real_files
    assert read_failures(root / "points" / "failures.parquet") == []
    assert read_failures(root / "render" / "failures.parquet") == []
    members = members_of(root / "render")
    clouds = dict(iter_points(root / "points"))
    assert sorted(clouds) == sorted(files)
    for object_id, points in clouds.items():
        shares = on_object_shares(points, members, object_id)
        assert min(shares) >= 0.95, (object_id, shares)


def test_the_skin_is_read_in_its_pose_not_at_rest(real_files):
    # The bar is 2 long; the pose bends its top half by 90°: posed, it is not a thin line.
    root, _ = real_files
    points = dict(iter_points(root / "points"))["skinned"]
    extent = points.max(axis=0) - points.min(axis=0)
    assert sorted(extent)[1] > 0.5  # the bent half sticks out sideways


def test_the_sparse_accessor_is_applied(real_files):
    # Without the sparse substitution the box is 1 × 2 × 0.5 (z shortest); with it 1 × 2 × 4.
    root, _ = real_files
    sparse = dict(iter_points(root / "points"))["sparse"]
    extent = sparse.max(axis=0) - sparse.min(axis=0)
    assert np.argmax(extent) == 2
    np.testing.assert_allclose(extent / extent[2], [0.25, 0.5, 1.0], atol=0.03)


def test_fast_path_formats_read_alike_in_trimesh_and_blender(tmp_path):
    """The formats sampled without Blender (meshio.FAST_SUFFIXES) give the same surface in
    both readings: the same bounding box and area once normalised, so the same frame."""
    mesh = trimesh.creation.annulus(r_min=0.3, r_max=1.0, height=0.5).apply_translation([2, 1, 0])
    for suffix in (".obj", ".ply", ".stl", ".off"):
        mesh.export(tmp_path / f"ring{suffix}")
    for up_axis in ("y", "z"):
        fast = PointsReader(SampleConfig(points=2048))
        with PointsReader(SampleConfig(points=2048, colors=True)) as blender:
            for suffix in (".obj", ".ply", ".stl", ".off"):
                path = tmp_path / f"ring{suffix}"
                a, _ = fast(path, up_axis, "ring")
                b, _ = blender(path, up_axis, "ring")
                assert fast.worker is None and blender.worker is not None
                np.testing.assert_allclose(a.min(0), b.min(0)[:3], atol=0.02)
                np.testing.assert_allclose(a.max(0), b.max(0)[:3], atol=0.02)
                np.testing.assert_allclose(a.mean(0), b.mean(0)[:3], atol=0.03)


@pytest.mark.parametrize("fps", ["exact", "bucket"])
def test_blender_reading_samples_with_the_configured_fps(tmp_path, fps):
    """`sample.fps` reaches the worker: a triangle OBJ gives Blender and trimesh the same
    candidates, so Blender's points (colours asked: its reading) are the fast path's picks with
    the same method. The worker used to fall back to bucket whatever was configured."""
    mesh = trimesh.creation.annulus(r_min=0.3, r_max=1.0, height=0.5).apply_translation([2, 1, 0])
    mesh.export(tmp_path / "ring.obj")
    fast, _ = PointsReader(SampleConfig(points=512, fps=fps))(tmp_path / "ring.obj", "y", "ring")
    with PointsReader(SampleConfig(points=512, fps=fps, colors=True)) as blender:
        read, _ = blender(tmp_path / "ring.obj", "y", "ring")
    np.testing.assert_allclose(read[:, :3], fast, atol=1e-5)
