"""Issue 22 §1.1: the augmentation policy, against the public CG3D code's ops.

The references below are written from the public code (deeptibhegde/CLIP-goes-3D):
`utils/augment.py` rotate_point_cloud_90, rotate_point_cloud, rotate_perturbation_point_cloud,
jitter_point_cloud, drop_random_points, called in `datasets/dataset.py` 264–277 each with
probability --aug_prob 0.3, and `datasets/data_transforms.py` PointcloudScaleAndTranslate,
called by `tools/runner_CG3D_VPT.py` 298 after FPS on every sample. Each public op multiplies
row vectors on the right: `np.dot(data, R)`.
"""

import math

import numpy as np
import pytest

from cg3d.params import AugmentConfig
from cg3d.train.augment import (
    POLICIES,
    augment_after_fps,
    augment_points,
    augment_raw,
    draw_augment,
    policy,
)

RAW_OPS = ("turns", "angle", "perturb", "jitter", "to_origin")


def public_up_matrix(angle: float) -> np.ndarray:
    """The matrix of rotate_point_cloud / rotate_point_cloud_90, as the public code writes it."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def public_perturb_matrix(angles: np.ndarray) -> np.ndarray:
    """rotate_perturbation_point_cloud's R = Rz · Ry · Rx."""
    a, b, g = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(g), -math.sin(g), 0], [math.sin(g), math.cos(g), 0], [0, 0, 1]])
    return rz @ ry @ rx


def public_reference(points: np.ndarray, draw) -> np.ndarray:
    """The public ops in the public order, in float64, with the values of `draw`."""
    data = points.astype(np.float64)
    if draw.turns is not None:  # rotate_point_cloud_90: randint(0, 4) * π/2
        data = data @ public_up_matrix(draw.turns * (np.pi / 2.0))
    if draw.angle is not None:  # rotate_point_cloud: uniform() * 2π
        data = data @ public_up_matrix(draw.angle)
    if draw.perturb is not None:  # rotate_perturbation_point_cloud
        data = data @ public_perturb_matrix(draw.perturb)
    if draw.jitter is not None:  # jitter_point_cloud: clip(σ randn) + data
        data = data + draw.jitter
    if draw.to_origin is not None:  # drop_random_points: choice(indices, N // 10) → 0
        data[draw.to_origin] = [0.0, 0.0, 0.0]
    # (FPS here in the runner; it is the identity when nothing is subsampled)
    if draw.scale is not None or draw.shift is not None:  # PointcloudScaleAndTranslate
        data = data * draw.scale + draw.shift
    return data


def test_the_public_policy_applies_each_op_before_fps_with_probability_0_3():
    config = policy("cg3d-public")
    rng = np.random.default_rng(0)
    draws = [draw_augment(config, rng, 100) for _ in range(4000)]
    applied = {op: np.array([getattr(d, op) is not None for d in draws]) for op in RAW_OPS}
    for op, flags in applied.items():
        # binomial(4000, 0.3): sd 0.0072; ±0.03 is four of them
        assert abs(flags.mean() - 0.3) < 0.03, (op, flags.mean())
    # independent draws: both of two ops on ~9 % of samples
    assert abs((applied["turns"] & applied["to_origin"]).mean() - 0.09) < 0.02
    assert abs((applied["angle"] & applied["jitter"]).mean() - 0.09) < 0.02
    # after FPS: scale and shift on every sample; never PointNet++ dropout
    assert all(d.scale is not None and d.shift is not None for d in draws)
    assert all(d.dropped is None for d in draws)


def test_the_public_ops_draw_in_their_ranges():
    config = policy("cg3d-public")
    rng = np.random.default_rng(1)
    draws = [draw_augment(config, rng, 8192) for _ in range(600)]
    turns = [d.turns for d in draws if d.turns is not None]
    assert set(turns) == {0, 1, 2, 3}  # randint(0, 4)
    angles = [d.angle for d in draws if d.angle is not None]
    assert min(angles) >= 0 and max(angles) < 2 * np.pi and np.std(angles) > 1.5  # uniform
    perturbs = np.array([d.perturb for d in draws if d.perturb is not None])
    assert np.abs(perturbs).max() <= 0.18 + 1e-12  # clip 0.18
    assert abs(perturbs.std() - 0.06) < 0.006  # σ 0.06 (hardly clipped at 3σ)
    noise = np.concatenate([d.jitter for d in draws if d.jitter is not None])
    assert np.abs(noise).max() <= 0.05 + 1e-7 and abs(noise.std() - 0.01) < 5e-4
    for d in draws:
        if d.to_origin is not None:
            assert len(d.to_origin) == 8192 // 10  # N // 10 draws, with replacement
    distinct = np.mean(
        [len(np.unique(d.to_origin)) / 8192 for d in draws if d.to_origin is not None]
    )
    assert abs(distinct - (1 - math.exp(-0.1))) < 0.003  # ~9.5 % of the points at the origin
    scales = np.array([d.scale for d in draws])
    shifts = np.array([d.shift for d in draws])
    assert scales.min() >= 2 / 3 - 1e-6 and scales.max() <= 1.5 + 1e-6
    assert np.abs(shifts).max() <= 0.2 + 1e-6 and np.abs(shifts).max() > 0.19


@pytest.mark.parametrize("seed", range(40))
def test_the_ops_are_the_public_formulas_on_fixed_seeds(seed):
    points = np.random.default_rng(100 + seed).uniform(-1, 1, (500, 3)).astype(np.float32)
    draw = draw_augment(policy("cg3d-public"), np.random.default_rng(seed), len(points))
    ours = augment_after_fps(augment_raw(points, draw), draw)
    np.testing.assert_allclose(ours, public_reference(points, draw), atol=2e-6)


@pytest.mark.parametrize("seed", range(10))
def test_all_five_ops_together_compose_in_the_public_order(seed):
    """The public policy's ranges with every op always applied: the order of the composition
    (90°, up, perturbation, jitter, origin; then scale, shift) is the public one."""
    every = AugmentConfig(
        **{
            **vars(policy("cg3d-public")),
            **{f"{op}_prob": 1.0 for op in ("rotate_90", "rotate_up", "perturb", "jitter")},
            "drop_to_origin_prob": 1.0,
        }
    )
    points = np.random.default_rng(200 + seed).uniform(-1, 1, (400, 3)).astype(np.float32)
    draw = draw_augment(every, np.random.default_rng(seed), len(points))
    assert all(getattr(draw, op) is not None for op in RAW_OPS)
    ours = augment_after_fps(augment_raw(points, draw), draw)
    np.testing.assert_allclose(ours, public_reference(points, draw), atol=2e-6)


def test_our_policy_turns_perturbs_jitters_scales_and_shifts_every_sample_and_drops_nothing():
    config = POLICIES["cg3d"]
    assert config == AugmentConfig()  # the schema's defaults are our policy
    rng = np.random.default_rng(2)
    for _ in range(200):
        draw = draw_augment(config, rng, 64)
        assert draw.turns is None and draw.to_origin is None and draw.dropped is None
        values = (draw.angle, draw.perturb, draw.jitter, draw.scale, draw.shift)
        assert all(value is not None for value in values)
    points = np.random.default_rng(3).uniform(-1, 1, (300, 3)).astype(np.float32)
    draw = draw_augment(config, np.random.default_rng(4), len(points))
    np.testing.assert_allclose(
        augment_points(points, config, np.random.default_rng(4)),
        public_reference(points, draw),
        atol=2e-6,
    )


def test_a_probability_of_zero_or_a_switch_off_never_applies_and_one_always_does():
    rng = np.random.default_rng(5)
    never = AugmentConfig(rotate_up_prob=0.0, jitter=False, drop_to_origin=True)
    for _ in range(100):
        draw = draw_augment(never, rng, 10)
        assert draw.angle is None and draw.jitter is None and draw.to_origin is not None


def test_moved_points_sit_at_the_origin_and_the_rest_are_unchanged():
    config = AugmentConfig(
        rotate_up=False,
        perturb=False,
        jitter=False,
        scale=False,
        translate=False,
        drop_to_origin=True,
    )
    points = np.random.default_rng(6).uniform(0.5, 1, (1000, 3)).astype(np.float32)
    out = augment_points(points, config, np.random.default_rng(7))
    at_origin = np.all(out == 0, axis=1)
    assert 0.07 < at_origin.mean() < 0.12
    np.testing.assert_array_equal(out[~at_origin], points[~at_origin])
