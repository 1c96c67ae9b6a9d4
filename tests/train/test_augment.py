import numpy as np
import torch

from cg3d.train.augment import (
    AugmentConfig,
    Draw,
    augment_after_fps,
    augment_points,
    deferred_scale_and_shift,
    scale_and_shift,
)

OFF = AugmentConfig(
    **{n: False for n in ("rotate_up", "perturb", "jitter", "dropout", "scale", "translate")}
)


def test_augmentations_follow_the_paper_and_can_be_switched_off():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (500, 3)).astype(np.float32)
    assert np.array_equal(augment_points(points, OFF, rng), points)
    rotated = augment_points(points, AugmentConfig(**_only("rotate_up")), rng)
    assert np.allclose(rotated[:, 1], points[:, 1], atol=1e-6)  # +Y is up
    assert np.allclose(np.linalg.norm(rotated, axis=1), np.linalg.norm(points, axis=1), atol=1e-5)
    scaled = augment_points(points, AugmentConfig(**_only("scale")), rng)
    factors = scaled[0] / points[0]
    assert np.all((factors >= 2 / 3 - 1e-6) & (factors <= 1.5 + 1e-6))
    shifted = augment_points(points, AugmentConfig(**_only("translate")), rng)
    shift = shifted - points
    assert np.allclose(shift, shift[0], atol=1e-6) and np.all(np.abs(shift[0]) <= 0.2)
    jittered = augment_points(points, AugmentConfig(**_only("jitter")), rng)
    assert 0 < np.abs(jittered - points).max() <= 0.05 + 1e-6


def _only(name: str) -> dict:
    names = ("rotate_up", "perturb", "jitter", "dropout", "scale", "translate")
    return {n: n == name for n in names}


def test_normals_turn_with_the_points_and_stay_unit_length():
    rng = np.random.default_rng(3)
    xyz = rng.uniform(-1, 1, (200, 3)).astype(np.float32)
    normals = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
    config = AugmentConfig(**_only("rotate_up"))
    out = augment_points(np.hstack([xyz, normals]), config, rng)
    assert out.shape == (200, 6)
    assert np.allclose(
        out[:, 3:], out[:, :3] / np.linalg.norm(out[:, :3], axis=1, keepdims=True), atol=1e-5
    )
    full = augment_points(np.hstack([xyz, normals]), AugmentConfig(), rng)
    assert np.allclose(np.linalg.norm(full[:, 3:], axis=1), 1, atol=1e-5)


def test_dropout_copies_the_first_point_over_a_random_share_of_points():
    rng = np.random.default_rng(4)
    points = rng.uniform(-1, 1, (2000, 3)).astype(np.float32)
    shares = []
    for _ in range(50):
        dropped = augment_points(points, AugmentConfig(**_only("dropout")), rng)
        changed = np.any(dropped != points, axis=1)
        assert np.all(dropped[changed] == points[0])  # dropped rows are copies of the first
        assert np.array_equal(dropped[~changed], points[~changed])
        shares.append(changed.mean())
    assert max(shares) <= 0.875 + 0.03 and 0.3 < np.mean(shares) < 0.58  # U(0, 0.875) on average


def test_the_input_is_left_as_it_was_and_draws_repeat_with_the_seed():
    points = np.random.default_rng(5).uniform(-1, 1, (300, 6)).astype(np.float32)
    before = points.copy()
    first = augment_points(points, AugmentConfig(), np.random.default_rng(9))
    again = augment_points(points, AugmentConfig(), np.random.default_rng(9))
    assert np.array_equal(points, before) and np.array_equal(first, again)
    assert first.dtype == np.float32 and first.shape == (300, 6)


def test_colours_are_never_rotated_and_normals_still_turn():
    rng = np.random.default_rng(5)
    xyz = rng.uniform(-1, 1, (300, 3)).astype(np.float32)
    rgb = rng.uniform(0, 1, (300, 3)).astype(np.float32)
    normals = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
    channels = ["x", "y", "z", "r", "g", "b", "nx", "ny", "nz"]
    config = AugmentConfig(**{**_only("rotate_up"), "scale": True})
    out = augment_points(np.hstack([xyz, rgb, normals]), config, rng, channels)
    np.testing.assert_array_equal(out[:, 3:6], rgb)
    assert not np.allclose(out[:, 6:9], normals, atol=1e-2)  # a random turn moved them
    np.testing.assert_allclose(np.linalg.norm(out[:, 6:9], axis=1), 1, atol=1e-5)
    coloured = augment_points(np.hstack([xyz, rgb]), config, rng, channels[:6])
    np.testing.assert_array_equal(coloured[:, 3:6], rgb)


def test_colour_jitter_is_off_by_default_and_moves_only_rgb_within_0_1():
    rng = np.random.default_rng(3)
    xyz = rng.uniform(-1, 1, (200, 3)).astype(np.float32)
    rgb = np.tile(np.float32([0.2, 0.95, 0.6]), (200, 1))
    rgb[:100] = [0.1, 0.3, 0.5]  # two colours: contrast has something to stretch
    normals = np.tile(np.float32([0, 1, 0]), (200, 1))
    channels = ["x", "y", "z", "r", "g", "b", "nx", "ny", "nz"]
    cloud = np.hstack([xyz, rgb, normals])
    assert AugmentConfig().color_jitter is False
    np.testing.assert_array_equal(augment_points(cloud, OFF, rng, channels), cloud)
    bright = AugmentConfig(**{**vars(OFF), "color_jitter": True, "color_brightness": 1.0})
    outs = [augment_points(cloud, bright, np.random.default_rng(s), channels) for s in range(20)]
    for out in outs:
        np.testing.assert_array_equal(out[:, :3], xyz)
        np.testing.assert_array_equal(out[:, 6:], normals)
        assert out[:, 3:6].min() >= 0 and out[:, 3:6].max() <= 1
    # a shift of up to ±1 pushes some draws past 1 (g = 0.95) and some below 0 (r = 0.1): clipped
    assert any((out[:, 4] == 1).any() for out in outs)
    assert any((out[:, 3] == 0).any() for out in outs)
    contrast = AugmentConfig(**{**vars(OFF), "color_jitter": True, "color_brightness": 0.0})
    out = augment_points(cloud, contrast, np.random.default_rng(1), channels)
    # brightness 0: the mean colour stays, the spread between the two colours scales by c
    np.testing.assert_allclose(out[:, 3:6].mean(axis=0), rgb.mean(axis=0), atol=1e-5)
    spread, new_spread = rgb[0] - rgb[-1], out[0, 3:6] - out[-1, 3:6]
    factor = new_spread / spread
    assert np.allclose(factor, factor[0]) and factor[0] != 1
    untouched = augment_points(cloud, bright, np.random.default_rng(0), channels, has_color=False)
    np.testing.assert_array_equal(untouched, cloud)  # an object's NO_COLOR stays the constant


def test_the_scale_and_shift_of_a_batch_are_each_samples_own_and_leave_colour_alone():
    """The loader leaves the ops after FPS to the trainer, which applies them to the batch on
    the device: the values must be those each sample got when its worker applied them."""
    rng = np.random.default_rng(5)
    clouds = rng.normal(size=(3, 50, 6)).astype(np.float32)  # xyz, rgb
    draws = [
        Draw(scale=np.float32([0.7, 1.2, 1.4]), shift=np.float32([0.1, -0.2, 0.05])),
        Draw(shift=np.float32([0.15, 0.0, -0.1])),
        Draw(),  # neither op drawn: the sample passes unchanged
    ]
    per_sample = [augment_after_fps(c.copy(), d) for c, d in zip(clouds, draws, strict=True)]
    # the op written out in float32: positions times the factors, plus the shift
    for cloud, draw, got in zip(clouds, draws, per_sample, strict=True):
        scale = np.float32(1) if draw.scale is None else draw.scale
        shift = np.float32(0) if draw.shift is None else draw.shift
        assert np.array_equal(got[:, :3], cloud[:, :3] * scale + shift)
        assert np.array_equal(got[:, 3:], cloud[:, 3:])
    factors = [deferred_scale_and_shift(d) for d in draws]
    batch = scale_and_shift(
        torch.from_numpy(clouds.copy()),
        torch.from_numpy(np.stack([f[0] for f in factors])),
        torch.from_numpy(np.stack([f[1] for f in factors])),
    )
    assert np.array_equal(batch.numpy(), np.stack(per_sample))
    assert np.array_equal(batch[2].numpy(), clouds[2])
