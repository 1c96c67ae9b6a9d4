import errno
import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cg3d.errors import UsageError
from cg3d.eval.scene import SceneConfig, scene_query, split_regions
from cg3d.files import LOCK_NAME
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


OUTPUTS = ["heatmap.ply", "heatmap.png", "regions.json"]  # in the order they are written


def _cut_short_at(monkeypatch, output: str) -> None:
    """Make the writer of `output` fail part way, as a full disk does (the others still work)."""
    if output == "heatmap.ply":
        monkeypatch.setattr(
            "cg3d.eval.scene.write_point_ply",
            lambda path, points, colors: _torn_write(path, b"ply\n" * 99),
        )
    elif output == "heatmap.png":
        monkeypatch.setattr(
            "cg3d.eval.plots.heatmap_plot",
            lambda points, scores, path, title: _torn_write(path, b"\x89PNG" * 99),
        )
    else:
        real = Path.write_text

        def write_text(self, text, *args, **kwargs):
            if "regions.json" not in self.name:
                return real(self, text, *args, **kwargs)
            _torn_write(self, text.encode())

        monkeypatch.setattr(Path, "write_text", write_text)


def _outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


@pytest.mark.parametrize("output", OUTPUTS)
def test_a_write_cut_short_leaves_the_previous_outputs_whole_together(
    tmp_path, tiny_checkpoint, monkeypatch, output
):
    """A query whose writing fails at any of its three files leaves all three of the previous
    query (never its regions beside the new heat map); a query that succeeds replaces all."""
    rng = np.random.default_rng(2)
    np.savetxt(
        tmp_path / "scene.txt", np.concatenate([cube(300, rng, offset=(x, 0, 0)) for x in (-3, 3)])
    )
    out, config = tmp_path / "out", SceneConfig(regions=4, region_points=100)
    scene_query(tmp_path / "scene.txt", "a cube", tiny_checkpoint, out, config)
    before = _outputs(out)
    inodes = {name: (out / name).stat().st_ino for name in OUTPUTS}
    with monkeypatch.context() as patched:
        _cut_short_at(patched, output)
        with pytest.raises(OSError) as caught:
            scene_query(tmp_path / "scene.txt", "a sphere", tiny_checkpoint, out, config)
    assert caught.value.filename == str(out / output)  # the file the user asked for
    assert _outputs(out) == before  # all three: the writes before the failing one too
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS  # no staged file left
    scene_query(tmp_path / "scene.txt", "a sphere", tiny_checkpoint, out, config)
    assert json.loads((out / "regions.json").read_text())["text"] == "a sphere"
    assert all((out / name).stat().st_ino != inodes[name] for name in OUTPUTS)  # all replaced
    assert (out / "heatmap.png").read_bytes() != before["heatmap.png"]  # the title is the text
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS


def test_a_kill_between_the_renames_is_finished_by_the_next_query(
    tmp_path, tiny_checkpoint, monkeypatch
):
    """Killed after the first of its three renames, a query left one new file beside two old
    ones: the next query into the folder completes that set before it writes anything, so even
    when its own writing then fails the folder holds one query's outputs."""
    rng = np.random.default_rng(3)
    np.savetxt(tmp_path / "scene.txt", cube(600, rng))
    out, config = tmp_path / "out", SceneConfig(regions=4, region_points=100)
    scene_query(tmp_path / "scene.txt", "a cube", tiny_checkpoint, out, config)
    real_replace, renamed = os.replace, []

    def killed_after_one(source, target):
        if Path(target).parent == out:  # the commit's renames (not a staged file's own)
            if renamed:
                raise KeyboardInterrupt  # a kill: no handler runs, the commit stays half done
            renamed.append(target)
        real_replace(source, target)

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", killed_after_one)
        with pytest.raises(KeyboardInterrupt):
            scene_query(tmp_path / "scene.txt", "a sphere", tiny_checkpoint, out, config)
    assert len(renamed) == 1  # mixed for now: one file of "a sphere", two of "a cube"
    with monkeypatch.context() as patched:
        _cut_short_at(patched, "heatmap.ply")
        with pytest.raises(OSError):
            scene_query(tmp_path / "scene.txt", "a lamp", tiny_checkpoint, out, config)
    finished = _outputs(out)
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    scene_query(tmp_path / "scene.txt", "a sphere", tiny_checkpoint, out, config)
    assert _outputs(out) == finished  # all three were the killed query's, "a sphere"


def test_a_second_query_into_a_folder_in_use_is_refused(tmp_path, tiny_checkpoint):
    """Two queries into one folder would interleave their files: the second is refused at once,
    and the first's outputs stay as they were."""
    rng = np.random.default_rng(4)
    np.savetxt(tmp_path / "scene.txt", cube(600, rng))
    out, config = tmp_path / "out", SceneConfig(regions=4, region_points=100)
    scene_query(tmp_path / "scene.txt", "a cube", tiny_checkpoint, out, config)
    before = _outputs(out)
    with open(out / LOCK_NAME, "a") as held:  # another process's run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UsageError, match="another run is writing into"):
            scene_query(tmp_path / "scene.txt", "a sphere", tiny_checkpoint, out, config)
    assert _outputs(out) == before


@pytest.mark.parametrize(
    ("scene", "config", "message"),
    [
        (np.zeros((500, 3)), SceneConfig(), "at least 4 distinct finite points, got 1"),
        (  # three distinct points, each copied many times
            np.repeat(np.eye(3), 100, axis=0),
            SceneConfig(),
            "at least 4 distinct finite points, got 3",
        ),
        (None, SceneConfig(max_points=2), r"got 2 \(of --max-points 2\)"),
    ],
    ids=["one point repeated", "three points repeated", "max points 2"],
)
def test_a_scene_of_too_few_distinct_points_is_one_line(
    tmp_path, tiny_checkpoint, scene, config, message
):
    points = cube(300, np.random.default_rng(0)) if scene is None else scene
    np.save(tmp_path / "scene.npy", points.astype(np.float32))
    with pytest.raises(UsageError, match=message):
        scene_query(tmp_path / "scene.npy", "a cube", tiny_checkpoint, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_region_of_one_repeated_point_names_the_param(tmp_path, tiny_checkpoint):
    """A cluster of 500 copies of one point: a region of its 100 nearest has no shape."""
    points = np.vstack([cube(300, np.random.default_rng(0)), np.full((500, 3), 9.0)])
    np.save(tmp_path / "scene.npy", points.astype(np.float32))
    config = SceneConfig(region_points=100)
    with pytest.raises(UsageError, match=r"region around \[9.0, 9.0, 9.0\].*scene.region_points"):
        scene_query(tmp_path / "scene.npy", "a cube", tiny_checkpoint, tmp_path / "out", config)
    # past the copies, every region has a shape: the query runs
    config = SceneConfig(region_points=600)
    assert scene_query(tmp_path / "scene.npy", "a cube", tiny_checkpoint, tmp_path / "out", config)


def test_a_z_up_scene_keeps_its_own_axes_in_the_heat_map_and_centres(tmp_path, tiny_checkpoint):
    """The heat map and the region centres overlay the scene file in a viewer (open3d, MeshLab):
    a Z-up scan (ScanNet's) was written back Y-up, a quarter turn off the scan it colours."""
    rng = np.random.default_rng(2)
    # a tall pillar along +z beside a cube: the two frames differ in every point
    scene = np.vstack([cube(400, rng) * [1, 1, 4], cube(400, rng, offset=(5, 0, 0))])
    np.savetxt(tmp_path / "scene.txt", scene)
    out = tmp_path / "out"
    config = SceneConfig(regions=4, region_points=150, up_axis="z")
    scene_query(tmp_path / "scene.txt", "a pillar", tiny_checkpoint, out, config)
    cloud = trimesh.load(out / "heatmap.ply")
    np.testing.assert_allclose(cloud.vertices, scene, atol=1e-5)  # the file's own points
    for region in json.loads((out / "regions.json").read_text())["regions"]:
        # a centre is a point of the scene file (written to 4 decimals)
        assert np.abs(scene - region["centre"]).max(axis=1).min() < 1e-4


def test_the_heat_map_keeps_a_georeferenced_scans_coordinates(tmp_path, tiny_checkpoint):
    """A scan in UTM metres (x 500 km, y 4,000 km): float32 holds y to 25 cm (trimesh's PLY was
    float32, the heat map off its scan); the PLY's doubles give back the file's numbers."""
    rng = np.random.default_rng(3)
    scene = np.vstack([cube(300, rng), cube(300, rng, offset=(4, 0, 0))]) + [500_000.0, 4e6, 0.0]
    np.savetxt(tmp_path / "scene.txt", scene, fmt="%.6f")
    out = tmp_path / "out"
    scene_query(tmp_path / "scene.txt", "a cube", tiny_checkpoint, out, SceneConfig(regions=4))
    cloud = trimesh.load(out / "heatmap.ply")
    assert np.abs(cloud.vertices - scene).max() < 1e-5
    assert cloud.colors.shape == (len(scene), 4)
