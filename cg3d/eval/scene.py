"""Open-scene query: where in a scene point cloud is "a chair"?

Regions: `regions` centres picked by farthest point sampling over the scene, each region the
`region_points` scene points nearest to its centre (a kNN ball, so regions overlap and adapt
to density). Every region is normalised into the unit sphere and sampled to the model's
n_points like any object, embedded, and scored by cosine similarity with the text (the 64
prompt templates are not applied: the query is free text). Each scene point takes the score
of the region whose centre is nearest to it, which gives the heat map.
Outputs: OUT/heatmap.ply (points coloured by score, inferno colours), OUT/heatmap.png and
OUT/regions.json (score, centre and size of every region, best first); the PLY's points and the
centres in the scene file's own axes, whatever --up-axis; replaced together (a
query whose writing fails part way leaves the previous query's three files).
"""

from pathlib import Path

import numpy as np
import torch

from cg3d.errors import UsageError
from cg3d.eval.readers import prepare_points
from cg3d.files import atomic_files, atomic_path, locks_folder, write_json
from cg3d.formats.owner import check_owner
from cg3d.formats.pointfiles import read_point_file, write_point_ply
from cg3d.params import SceneConfig

OUTPUTS = ("heatmap.ply", "heatmap.png", "regions.json")  # written together, one set a query
SCENE_HARM = "would write its heat map and regions.json there"


def split_regions(
    points: np.ndarray, config: SceneConfig
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(centres (R, 3), member indices per region, nearest region of every point (N,))."""
    from scipy.spatial import cKDTree

    from cg3d.geometry.fps import farthest_point_sample

    count = min(config.regions, len(points))
    # FPS measures in float32: about the scene's own centre (in float64), not about a UTM
    # origin 4e6 m away, where float32's step is 0.25 m and a room's points fall on a grid
    local = points - (points.min(axis=0) + points.max(axis=0)) / 2.0
    centres = points[farthest_point_sample(local, count, 0)]
    k = min(config.region_points, len(points))
    _, members = cKDTree(points).query(centres, k=k)
    members = members.reshape(count, k)
    _, nearest = cKDTree(centres).query(points, k=1)
    return centres, list(members), np.asarray(nearest)


def region_points(
    points: np.ndarray, members: np.ndarray, n_points: int, seed: int, channels: int, scene: Path
) -> np.ndarray:
    """The model input of one region (`prepare_points`); a region whose points all coincide
    (a cluster of at least region_points copies of one point) is one line naming the param."""
    try:
        return prepare_points(points[members], n_points, seed=seed, point_channels=channels)
    except ValueError as error:
        raise UsageError(
            f"{scene}: the region around {np.round(points[members[0]], 4).tolist()} "
            f"({error}): its {len(members)} nearest points are one point repeated; raise "
            "scene.region_points past the copies"
        ) from None


def heat_colors(scores: np.ndarray) -> np.ndarray:
    """(N, 4) uint8 RGBA: min-max normalised scores through matplotlib's inferno map."""
    from matplotlib import colormaps

    span = float(scores.max() - scores.min())
    unit = (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)
    return (colormaps["inferno"](unit) * 255).astype(np.uint8)


@torch.no_grad()
@locks_folder("out")  # one query at a time into OUT: two would interleave their files
def scene_query(
    scene: Path, text: str, checkpoint: Path, out: Path, config: SceneConfig
) -> list[dict]:
    """Score the scene's regions against `text`; write the heat map; the regions, best first."""
    from cg3d.eval.plots import heatmap_plot
    from cg3d.geometry.frame import from_canonical_axes, to_canonical_axes
    from cg3d.models.checkpoint import load_model

    config.validate()
    if not text.strip():
        raise UsageError("--text must not be empty")
    check_owner(Path(out), "scene-query", SCENE_HARM)  # before the scene and model are read
    points, _ = read_point_file(Path(scene))
    points = points[np.isfinite(points).all(axis=1)]
    rng = np.random.default_rng(config.seed)
    if len(points) > config.max_points:
        points = points[np.sort(rng.choice(len(points), config.max_points, replace=False))]
    # distinct points: a region of copies of one point has no shape to normalise (this was a
    # ValueError traceback for a scene of one repeated point, or --max-points 1)
    distinct = len(np.unique(points, axis=0))
    if distinct < 4:
        where = (
            f" (of --max-points {config.max_points})" if len(points) == config.max_points else ""
        )
        raise UsageError(
            f"{scene}: a scene needs at least 4 distinct finite points, got {distinct}{where}"
        )
    # The model sees the scene Y-up; heatmap.ply and the region centres stay in the scene's own
    # axes, so they overlay the scene file in a viewer (open3d, MeshLab): with --up-axis z they
    # were written Y-up, the heat map a quarter turn off the scan it colours.
    scene_points = points
    points = to_canonical_axes(points, config.up_axis)
    model = load_model(Path(checkpoint), clip_pretrained=config.clip_pretrained or None)
    n_points = int(model.config["n_points"])
    # a colour model gets the constant colour: scene files are read as xyz
    channels = int(model.config["point_channels"])
    centres, members, nearest = split_regions(points, config)
    scene_centres = from_canonical_axes(centres, config.up_axis)
    query = model.encode_text([text])[0]
    scores = []
    for start in range(0, len(members), config.batch_size):
        batch = [
            region_points(points, m, n_points, start + i, channels, scene)
            for i, m in enumerate(members[start : start + config.batch_size])
        ]
        features = model.encode_points(torch.from_numpy(np.stack(batch)).to(model.device()))
        scores.append((features @ query).cpu().numpy())
    region_scores = np.concatenate(scores)
    point_scores = region_scores[nearest]

    order = np.argsort(-region_scores, kind="stable")
    regions = [
        {
            "region": int(r),
            "score": float(region_scores[r]),
            "centre": [round(float(v), 4) for v in scene_centres[r]],
            "points": int((nearest == r).sum()),
        }
        for r in order
    ]
    shown = rng.choice(len(points), min(len(points), 30_000), replace=False)
    # The three outputs together (`atomic_files`): a write that fails part way leaves the
    # previous query's set whole, never its regions beside this query's heat map.
    Path(out).mkdir(parents=True, exist_ok=True)
    with atomic_files(out, OUTPUTS) as paths:
        with atomic_path(paths["heatmap.ply"]) as tmp:
            write_point_ply(tmp, scene_points, heat_colors(point_scores))
        heatmap_plot(points[shown], point_scores[shown], paths["heatmap.png"], f"“{text}”")
        write_json(paths["regions.json"], {"text": text, "scene": str(scene), "regions": regions})
    return regions[: config.top]
