import numpy as np
import pytest
import trimesh

from cg3d.geometry import fps
from cg3d.geometry.fps import farthest_point_sample, naive_farthest_point_sample
from cg3d.geometry.sampling import sample_surface


def sphere_surface(n: int, seed: int) -> np.ndarray:
    points = np.random.default_rng(seed).standard_normal((n, 3))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def covering_radius(points: np.ndarray, picked: np.ndarray) -> float:
    """The largest distance from any point to its nearest picked point."""
    d = np.linalg.norm(points[:, None, :] - points[picked][None, :, :], axis=2)
    return float(d.min(axis=1).max())


@pytest.mark.parametrize(("m", "n"), [(3000, 2048), (1200, 64), (500, 500), (50, 1)])
def test_exact_count_of_distinct_indices_starting_at_start(m, n):
    picked = farthest_point_sample(sphere_surface(m, 0), n, start=7 % m)
    assert picked.shape == (n,)
    assert len(np.unique(picked)) == n
    assert picked[0] == 7 % m


def test_identical_to_the_textbook_loop_on_float32_points(monkeypatch):
    # Count KD-tree builds: every case below must go through the neighbour updates too.
    builds = []
    build = fps.neighbour_lists
    monkeypatch.setattr(fps, "neighbour_lists", lambda *a: builds.append(1) or build(*a))
    # A surface, a clustered cloud with exact duplicates, and extra (normal) columns ignored.
    rng = np.random.default_rng(1)
    clusters = np.repeat(rng.random((40, 3)) * 5, 30, axis=0) + rng.normal(0, 0.01, (1200, 3))
    clusters[:100] = clusters[0]
    with_normals = np.concatenate([sphere_surface(2000, 2), rng.random((2000, 3))], axis=1)
    # A box: flat faces, many equal distances, the case where rounding decides ties.
    box = trimesh.creation.box(extents=[1.0, 2.0, 0.3])
    on_box = sample_surface(box.vertices, box.faces, 4000, rng, normals=False)
    cases = [(sphere_surface(4000, 3), 3000, 11), (clusters, 600, 5), (with_normals, 900, 0)]
    cases.append((on_box, 3500, 2))
    for points, n, start in cases:
        points = points.astype(np.float32)
        expected = naive_farthest_point_sample(points, n, start)
        np.testing.assert_array_equal(farthest_point_sample(points, n, start), expected)
    assert len(builds) == len(cases)


def test_covers_the_cloud_better_than_random_subsets():
    points = sphere_surface(2000, 4)
    fps_radius = covering_radius(points, farthest_point_sample(points, 128, start=0))
    rng = np.random.default_rng(5)
    random_radii = [
        covering_radius(points, rng.choice(len(points), 128, replace=False)) for _ in range(10)
    ]
    assert fps_radius < 0.75 * min(random_radii)


def test_same_start_same_result_other_start_other_result():
    points = sphere_surface(1000, 6)
    first = farthest_point_sample(points, 100, start=3)
    np.testing.assert_array_equal(first, farthest_point_sample(points, 100, start=3))
    assert not np.array_equal(first, farthest_point_sample(points, 100, start=4))


@pytest.mark.parametrize(("n", "start"), [(0, 0), (11, 0), (5, 10), (5, -1)])
def test_rejects_impossible_requests(n, start):
    with pytest.raises(ValueError):
        farthest_point_sample(sphere_surface(10, 0), n, start)


def test_bucket_fps_covers_the_cloud_as_exact_fps_does():
    from cg3d.geometry.fps import coverage_radius, fps_indices

    rng = np.random.default_rng(3)
    cloud = rng.normal(size=(5000, 3)).astype(np.float32)
    exact = fps_indices(cloud, 512, 11, "exact")
    bucket = fps_indices(cloud, 512, 11, "bucket")
    assert bucket.dtype == np.int64 and len(set(bucket.tolist())) == 512
    ratio = coverage_radius(cloud, bucket) / coverage_radius(cloud, exact)
    assert 0.97 < ratio < 1.03
    random_subset = rng.choice(len(cloud), 512, replace=False)
    assert coverage_radius(cloud, random_subset) > 1.5 * coverage_radius(cloud, exact)
    np.testing.assert_array_equal(exact, naive_farthest_point_sample(cloud, 512, 11))
