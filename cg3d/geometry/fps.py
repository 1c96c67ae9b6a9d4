"""Per-object farthest point sampling for data preparation.

Two methods (`sample.fps`): `bucket`, fpsample's bucket FPS (QuickFPS: a KD-tree whose buckets
keep their farthest point, compiled), the default because it covers the cloud as well as exact
FPS (same coverage radius, bench/bench_fps.py --bucket) several times faster; and `exact`, the
numpy/scipy implementation below, whose picks are the Point-BERT loop's, index for index.

Exact FPS: each step picks the point farthest from all points picked so far. The textbook loop
updates every point's distance to the picked set at every step (N steps × M points). Here,
once the farthest remaining distance is smaller than the distance from the new pick to its
K-th nearest neighbour, only those K neighbours can get closer to the picked set: a point q
changes only if |q - p|² < d(q) ≤ d_max, so it lies strictly inside p's K-neighbour ball.
The neighbour lists come from one KD-tree query (made once the picks are dense enough for it
to pay), so those late steps cost a few tiny numpy calls instead of a pass over all M points.

Distances are float32 and computed as the textbook loop computes them on float32 points
((x - p)² summed over x, y, z in that order), so the picks are the same indices; the tests
and `bench/bench_fps.py` check it. numpy rather than torch: FPS is one small op after another,
and on a CPU a torch op costs several times more per call (bench_fps.py, BENCHMARKS.md).
"""

import numpy as np
from scipy.spatial import cKDTree

NEIGHBOURS = 16  # K: 12-16 is the sweet spot between the KD-tree query and full updates
# The neighbour test compares float32 distances with the KD-tree's float64 ones: keep a margin
# so that a point on the K-th neighbour's sphere, rounded inwards, is never missed.
REACH_MARGIN = 1.0 - 1e-5
BUCKET_HEIGHT = 5  # fpsample's KD-tree height (buckets of 2^5 points): fastest for 10k points


def fps_indices(points: np.ndarray, n: int, start: int = 0, method: str = "bucket") -> np.ndarray:
    """Indices (int64) of `n` farthest-point samples of `points[:, :3]` by `method`."""
    if method == "exact":
        return farthest_point_sample(points, n, start)
    if method != "bucket":
        raise ValueError(f"unknown FPS method {method!r}")
    import fpsample

    xyz = np.ascontiguousarray(np.asarray(points)[:, :3], dtype=np.float32)
    if not 1 <= n <= len(xyz):
        raise ValueError(f"cannot pick {n} of {len(xyz)} points")
    height = min(BUCKET_HEIGHT, max(1, int(np.log2(len(xyz))) - 1))
    picked = fpsample.bucket_fps_kdline_sampling(xyz, n, h=height, start_idx=int(start))
    return picked.astype(np.int64)


def coverage_radius(points: np.ndarray, picked: np.ndarray) -> float:
    """How well picks cover a cloud: the largest distance from a point to its nearest pick."""
    xyz = np.asarray(points)[:, :3]
    distance, _ = cKDTree(xyz[picked]).query(xyz, k=1)
    return float(distance.max())


def farthest_point_sample(points: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Indices (int64, length `n`) of `n` farthest-point samples of `points[:, :3]`, from `start`."""
    xyz = np.ascontiguousarray(np.asarray(points)[:, :3], dtype=np.float32)
    m = len(xyz)
    if not 1 <= n <= m:
        raise ValueError(f"cannot pick {n} of {m} points")
    if not 0 <= start < m:
        raise ValueError(f"start index {start} outside 0..{m - 1}")

    # Neighbour updates only start to pay once the picks are about as dense as K-neighbour
    # balls (≈ m / K picks on a surface): before that, full passes. The KD-tree query costs
    # about what m / 4 neighbour-updated picks save (measured), so it is made only if more
    # picks than that remain.
    k = min(NEIGHBOURS, m)
    full_passes_first = 2 * m // k if n - 2 * m // k > m // 4 else n
    neighbours = neighbour_dist2 = reach2 = None

    columns = np.ascontiguousarray(xyz.T)  # x, y and z each contiguous: fast full passes
    nearest = np.full(m, np.inf, dtype=np.float32)  # squared distance to the picked set
    scratch, term = np.empty(m, dtype=np.float32), np.empty(m, dtype=np.float32)
    picked = np.empty(n, dtype=np.int64)
    current, farthest = start, np.inf
    for i in range(n):
        picked[i] = current
        if i == full_passes_first:
            neighbours, neighbour_dist2, reach2 = neighbour_lists(xyz, k)
        if reach2 is not None and farthest < reach2[current]:
            near = neighbours[current]
            nearest[near] = np.minimum(nearest[near], neighbour_dist2[current])
        else:
            centre = xyz[current]
            np.subtract(columns[0], centre[0], out=scratch)
            np.multiply(scratch, scratch, out=scratch)
            for axis in (1, 2):
                np.subtract(columns[axis], centre[axis], out=term)
                np.multiply(term, term, out=term)
                scratch += term
            np.minimum(nearest, scratch, out=nearest)
        current = int(nearest.argmax())
        farthest = nearest[current]
    return picked


def neighbour_lists(xyz: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's k nearest points (itself included), their float32 squared distances
    computed as the full passes compute them, and how far the list reaches (squared)."""
    distance, index = cKDTree(xyz).query(xyz, k=k)
    index = index.reshape(len(xyz), k)
    diff = xyz[index] - xyz[:, None, :]
    dist2 = diff[..., 0] * diff[..., 0]
    dist2 += diff[..., 1] * diff[..., 1]
    dist2 += diff[..., 2] * diff[..., 2]
    reach2 = distance.reshape(len(xyz), k)[:, -1] ** 2 * REACH_MARGIN
    return index, dist2, reach2


def naive_farthest_point_sample(points: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """The textbook loop of the public Point-BERT/ULIP data utils, as a reference (indices).

    Same algorithm as their `farthest_point_sample` (a distance array, a masked update and an
    argmax per step over all points), with the start index given instead of drawn at random.
    Used by the tests and the benchmark only.
    """
    xyz = np.asarray(points)[:, :3]
    distance = np.ones(len(xyz)) * 1e10
    picked = np.zeros(n, dtype=np.int64)
    farthest = start
    for i in range(n):
        picked[i] = farthest
        dist = np.sum((xyz - xyz[farthest, :]) ** 2, -1)
        mask = dist < distance
        distance[mask] = dist[mask]
        farthest = np.argmax(distance, -1)
    return picked


POINTNET2_THREADS = 512  # the FPS kernel's largest block (cuda_utils.h TOTAL_THREADS)
POINTNET2_SKIP_NORM2 = 1e-3  # the kernel never picks a point this close to the origin


def pointnet2_fps(points: np.ndarray, count: int, ordered: bool = True) -> np.ndarray:
    """Indices of `count` points of one cloud as pointnet2_ops' `furthest_point_sample` kernel
    (sampling_gpu.cu; the public CG3D code's `misc.fps` and its eval.py) picks them: index 0
    first, then each time the point farthest from all picked so far, skipping every point whose
    squared norm is at most 1e-3 (the kernel's `mag <= 1e-3`: a shape centred on its centroid
    never gets the points nearest its centre). When no point is left to pick (fewer distinct
    eligible points than `count`), the kernel repeats one point: the eligible one its first
    thread block reduction lands on (the lowest thread, k mod block, then the lowest k), index
    0 if none is eligible.

    Copies of a picked point are at distance 0 and never change the picks, so exact FPS runs on
    the distinct points (first copies): the kernel's picks, index for index, but for exact ties
    (the kernel prefers the lower thread, we the lower index). `ordered=False` takes every
    distinct point in index order, without FPS, when there are no more of them than `count`
    (training's draws with replacement: ~5,180 distinct of 8,192; FPS through all of them costs
    ~27 ms a cloud): the same points, and the encoders read a cloud's order only through their
    own FPS from index 0, so the order changes nothing they compute.
    """
    xyz = np.ascontiguousarray(np.asarray(points)[:, :3], dtype=np.float32)
    norm2 = xyz[:, 0] * xyz[:, 0] + xyz[:, 1] * xyz[:, 1] + xyz[:, 2] * xyz[:, 2]
    # float against the double 1e-3, as in C (numpy would round 1e-3 to float32 first)
    eligible = np.flatnonzero(norm2.astype(np.float64) > POINTNET2_SKIP_NORM2)
    candidates = np.concatenate([[0], eligible[eligible != 0]])  # 0 is picked whatever its norm
    _, first = np.unique(xyz[candidates], axis=0, return_index=True)
    distinct = candidates[np.sort(first)]
    if len(distinct) > count or ordered:
        picked = distinct[farthest_point_sample(xyz[distinct], min(count, len(distinct)), 0)]
    else:
        picked = distinct
    if len(picked) == count:
        return picked
    if len(eligible):  # every distance is 0: the lowest thread, then the lowest index in it
        threads = min(2 ** int(np.log2(len(xyz))), POINTNET2_THREADS)  # opt_n_threads(n)
        repeat = eligible[np.lexsort((eligible, eligible % threads))[0]]
    else:
        repeat = 0
    fill = np.full(count - len(picked), repeat, dtype=np.int64)
    return np.concatenate([picked.astype(np.int64), fill])
