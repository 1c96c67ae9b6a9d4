import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cg3d.errors import UsageError
from cg3d.eval.scene import SceneConfig, scene_query, split_regions
from tests.eval.files import cube

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


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


def _torn_write(path, data) -> None:
    """A write cut short by a full disk (or a kill): half the bytes, then the error."""
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize("output", ["regions.json", "heatmap.ply"])
def test_a_write_cut_short_leaves_the_previous_output_whole(
    tmp_path, tiny_checkpoint, monkeypatch, output
):
    rng = np.random.default_rng(2)
    np.savetxt(
        tmp_path / "scene.txt", np.concatenate([cube(300, rng, offset=(x, 0, 0)) for x in (-3, 3)])
    )
    out, config = tmp_path / "out", SceneConfig(regions=4, region_points=100)
    scene_query(tmp_path / "scene.txt", "a cube", tiny_checkpoint, out, config)
    before = (out / output).read_bytes()
    if output == "regions.json":
        real = Path.write_text

        def write_text(self, text, *args, **kwargs):
            if "regions.json" not in self.name:
                return real(self, text, *args, **kwargs)
            _torn_write(self, text.encode())

        monkeypatch.setattr(Path, "write_text", write_text)
    else:
        monkeypatch.setattr(
            trimesh.PointCloud, "export", lambda self, path, **kw: _torn_write(path, before)
        )
    with pytest.raises(OSError) as caught:  # a query for another text would rewrite both
        scene_query(tmp_path / "scene.txt", "a sphere", tiny_checkpoint, out, config)
    assert caught.value.filename == str(out / output)  # the file the user asked for
    assert (out / output).read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["heatmap.ply", "heatmap.png", "regions.json"]
