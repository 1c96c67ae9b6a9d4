"""Points far from the origin (a scan in UTM metres, x 500 km, y 4,000 km): float32's step
there is 0.25 m, so a 2 m object must be centred in float64 before any float32 cast."""

import warnings

import numpy as np
import pytest

from cg3d.app.api import array_points
from cg3d.errors import UsageError
from cg3d.eval.readers import prepare_points
from cg3d.eval.scene import SceneConfig, split_regions

UTM = np.array([500_000.0, 4_000_000.0, 300.0])


def sphere_points(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(count, 3))
    return xyz / np.linalg.norm(xyz, axis=1, keepdims=True)  # a 2 m sphere


def test_a_cloud_at_a_utm_offset_is_prepared_as_the_same_cloud_at_the_origin():
    # classify/embed of a point file, and every scene region: the cloud was cast to float32
    # before centring, and came out as 9 slabs of points (max difference 1.98 in the unit sphere)
    points = sphere_points(4000, 1)
    at_origin = prepare_points(points, 1024)
    far = prepare_points(points + UTM, 1024)
    assert np.abs(far - at_origin).max() < 1e-5
    assert len(np.unique(far[:, 1])) > 1000


def test_scene_regions_at_a_utm_offset_are_those_of_the_scene_at_the_origin():
    # a 10 m room: FPS measured float32 distances between points on a 0.25 m grid
    room = np.random.default_rng(2).uniform(-5, 5, (3000, 3))
    config = SceneConfig(regions=16, region_points=100)
    centres, members, nearest = split_regions(room, config)
    far_centres, far_members, far_nearest = split_regions(room + UTM, config)
    assert np.array_equal(far_centres, centres + UTM)
    assert all(np.array_equal(a, b) for a, b in zip(far_members, members, strict=True))
    assert np.array_equal(far_nearest, nearest)


def test_clouds_1e300_or_1e_300_across_are_prepared_as_at_unit_size():
    # the squared offsets overflowed (radius inf) or underflowed (0): both were refused as
    # "all vertices coincide", which they do not; nor a RuntimeWarning (the cast of 1e300 to
    # float32 before the columns were normalised), which PYTHONWARNINGS=error makes an error
    points = sphere_points(2000, 3)
    unit = prepare_points(points, 256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for size in (1e-300, 1e300):
            assert np.abs(prepare_points(points * size, 256) - unit).max() < 1e-6


def test_a_float32_array_far_from_the_origin_is_one_line_in_the_python_api():
    # Model.embed_points(array): the caller's float32 already holds a 2 m object on 0.25 m steps
    points = sphere_points(500, 4) + UTM
    with pytest.raises(UsageError, match="points: coordinates 4e.06 from the origin, in float32"):
        array_points(points.astype(np.float32), 256)
    assert np.abs(array_points(points, 256) - array_points(points - UTM, 256)).max() < 1e-5
