import json

import numpy as np
import pytest
import trimesh

from cg3d.errors import UsageError
from cg3d.eval.classify import classify, input_points, parse_labels
from cg3d.eval.scene import SceneConfig, scene_query, split_regions

from .conftest import cube

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_parse_labels(tmp_path):
    assert parse_labels("", ["a", "b"]) == ["a", "b"]
    assert parse_labels("chair, table ,", []) == ["chair", "table"]
    (tmp_path / "labels.txt").write_text("lamp\n\nsofa\n")
    assert parse_labels(str(tmp_path / "labels.txt"), []) == ["lamp", "sofa"]
    with pytest.raises(UsageError, match="--labels"):
        parse_labels("", [])


def test_mesh_input_goes_through_the_sample_stage(tmp_path):
    box = trimesh.creation.box(extents=(4.0, 1.0, 1.0))
    box.apply_translation((10, 0, 0))
    box.export(tmp_path / "box.ply")
    points = input_points(tmp_path / "box.ply", 128)
    assert points.shape == (128, 3)
    assert np.linalg.norm(points, axis=1).max() <= 1.0 + 1e-5
    assert np.ptp(points[:, 0]) > 3 * np.ptp(points[:, 1])  # long along x, centred, unit sphere
    tall = input_points(tmp_path / "box.ply", 64, up_axis="z")
    assert np.ptp(tall[:, 0]) > 3 * np.ptp(tall[:, 2])


def test_mesh_files_use_the_pipeline_loader(tmp_path):
    trimesh.creation.icosphere(subdivisions=2).export(tmp_path / "ball.obj")
    points = input_points(tmp_path / "ball.obj", 100)
    assert points.shape == (100, 3)
    assert np.allclose(np.linalg.norm(points, axis=1), 1.0, atol=0.1)  # on the unit sphere
    (tmp_path / "broken.obj").write_text("v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n")
    with pytest.raises(UsageError, match="broken.obj"):
        input_points(tmp_path / "broken.obj", 100)


def test_classify_point_file_end_to_end(tmp_path, tiny_checkpoint):
    np.save(tmp_path / "shape.npy", cube(300, np.random.default_rng(0)))
    result = classify(tmp_path / "shape.npy", tiny_checkpoint)
    assert {label for label, _ in result} == {"cube", "sphere", "cone"}  # the checkpoint's classes
    assert len(result) == 3 and sum(p for _, p in result) == pytest.approx(1.0, abs=1e-5)
    assert all(a >= b for (_, a), (_, b) in zip(result, result[1:], strict=False))
    custom = classify(
        tmp_path / "shape.npy", tiny_checkpoint, labels="chair,table,lamp,sofa,bed,desk", top=5
    )
    assert len(custom) == 5 and {label for label, _ in custom} <= {
        "chair",
        "table",
        "lamp",
        "sofa",
        "bed",
        "desk",
    }


def test_classify_errors(tmp_path, tiny_checkpoint):
    with pytest.raises(UsageError, match="no such file"):
        classify(tmp_path / "absent.npy", tiny_checkpoint)
    np.save(tmp_path / "bad.npy", np.zeros((4, 2)))
    with pytest.raises(UsageError, match="expected an"):
        classify(tmp_path / "bad.npy", tiny_checkpoint)
    with pytest.raises(UsageError, match="--top"):
        classify(tmp_path / "bad.npy", tiny_checkpoint, top=0)


def test_split_regions_cover_the_scene():
    points = np.random.default_rng(0).uniform(-5, 5, (2000, 3))
    centres, members, nearest = split_regions(points, SceneConfig(regions=8, region_points=300))
    assert centres.shape == (8, 3) and len(members) == 8 and all(len(m) == 300 for m in members)
    # every point's nearest centre is really its nearest
    distances = np.linalg.norm(points[:, None] - centres[None], axis=2)
    assert (nearest == distances.argmin(axis=1)).all()


def test_scene_query_end_to_end(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(1)
    scene = np.concatenate([cube(800, rng, offset=(x, 0, 0)) for x in (-4, 0, 4)])
    np.savetxt(tmp_path / "scene.txt", scene)
    out = tmp_path / "out"
    best = scene_query(
        tmp_path / "scene.txt",
        "a cube",
        tiny_checkpoint,
        out,
        SceneConfig(regions=6, region_points=200, top=3),
    )
    assert len(best) == 3 and best[0]["score"] >= best[1]["score"] >= best[2]["score"]
    saved = json.loads((out / "regions.json").read_text())
    assert len(saved["regions"]) == 6 and sum(r["points"] for r in saved["regions"]) == len(scene)
    cloud = trimesh.load(out / "heatmap.ply")
    assert len(cloud.vertices) == len(scene) and cloud.colors.shape == (len(scene), 4)
    # the best region's points carry the hottest colour, the worst region's the coldest
    order = [r["region"] for r in saved["regions"]]
    _, _, nearest = split_regions(scene, SceneConfig(regions=6, region_points=200))
    hottest, coldest = cloud.colors[nearest == order[0]], cloud.colors[nearest == order[-1]]
    assert (hottest == hottest[0]).all() and hottest[0, 0] > 200 and coldest[0, 0] < 50
    assert (out / "heatmap.png").stat().st_size > 1000
    with pytest.raises(UsageError, match="--text"):
        scene_query(tmp_path / "scene.txt", " ", tiny_checkpoint, out, SceneConfig())
    with pytest.raises(UsageError, match="scene.regions"):
        scene_query(tmp_path / "scene.txt", "a", tiny_checkpoint, out, SceneConfig(regions=0))
