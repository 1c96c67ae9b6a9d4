import numpy as np

from cg3d.render.cameras import object_cameras, project

SETTINGS = dict(
    views=5, resolution=64, fov_deg=40.0, elevation_range=(0.0, 30.0), azimuth_jitter=0.5
)


def test_cameras_are_reproducible_per_seed_and_object():
    first = object_cameras("a", seed=0, **SETTINGS)
    assert first == object_cameras("a", seed=0, **SETTINGS)
    assert first["views"] != object_cameras("b", seed=0, **SETTINGS)["views"]
    assert first["views"] != object_cameras("a", seed=1, **SETTINGS)["views"]


def test_orbit_spreads_azimuths_and_keeps_elevation_in_range():
    views = object_cameras("obj", seed=3, **SETTINGS)["views"]
    azimuths = np.sort([v["azimuth_deg"] for v in views])
    gaps = np.diff(np.concatenate([azimuths, [azimuths[0] + 360.0]]))
    assert gaps.min() >= 0.5 * 360.0 / 5 - 1e-9  # jitter 0.5 keeps views at least half apart
    assert all(0.0 <= v["elevation_deg"] <= 30.0 for v in views)


def test_world_to_camera_is_rigid_and_looks_at_the_origin():
    for view in object_cameras("obj", seed=0, **SETTINGS)["views"]:
        matrix = np.asarray(view["world_to_camera"])
        rotation = matrix[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(rotation) > 0
        pixels, depth = project(np.zeros((1, 3)), view)
        np.testing.assert_allclose(pixels[0], [31.5, 31.5], atol=1e-9)
        np.testing.assert_allclose(depth[0], view["distance"])
        # +Y (up) lands above the centre: image rows grow downwards.
        up_pixel, _ = project(np.array([[0.0, 0.5, 0.0]]), view)
        assert up_pixel[0, 1] < 31.5


def test_unit_sphere_fits_in_the_image():
    view = object_cameras("obj", seed=0, **SETTINGS)["views"][0]
    directions = np.random.default_rng(0).normal(size=(2000, 3))
    sphere = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    pixels, _ = project(sphere, view)
    assert pixels.min() >= 0 and pixels.max() <= 63
