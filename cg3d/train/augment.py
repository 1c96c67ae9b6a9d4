"""The point augmentation policy: each op with its switch, probability and range (AugmentConfig).

The order is the public CG3D code's (`datasets/dataset.py` 259–277, `tools/runner_CG3D_VPT.py`
296–298): on the points drawn for a sample, before farthest point sampling, a turn about up by
a multiple of 90°, a uniform turn about up, a small perturbation rotation, jitter, a share of
the points moved to the origin (and, not in the public code, PointNet++ input dropout); after
FPS, a per-axis scale and a translation. `POLICIES` names two policies: `cg3d`, ours (every
op but the 90° turns, the move to the origin and dropout, each always), and `cg3d-public`, the
public code's (the five ops before FPS each with probability 0.3, scale and shift always).

A sample's random values are drawn first (`draw_augment`: a `Draw`, what the tests compare
with the public formulas), then applied: `augment_raw` before FPS, `augment_after_fps` after
it. Rotations act as the public code writes them, on row vectors: p ← p · R (90°, then up,
then R = Rz·Ry·Rx of the perturbation angles), so a turn by θ is a turn by −θ about +Y.

Points are (N, C) float32 in the canonical frame (+Y up), their columns named by `channels`
(meta.json's, `cg3d.formats.points.channel_names`: xyz, then rgb, then normals). Rotations
apply to positions and normals; scale, translation, jitter and the move to the origin to
positions only; colours are never rotated or scaled, only jittered when `color_jitter` is on
(and only the colours an object has: the constant of an object without any stays the
constant). A layout not given is xyz (C = 3) or xyz + normals (C = 6).
"""

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from cg3d.params import AugmentConfig

# The public code's five ops before FPS, each with probability 0.3 (--aug_prob), and its
# PointcloudScaleAndTranslate after FPS, always; no input dropout.
PUBLIC_PROBABILITY = 0.3
POLICIES = {
    "cg3d": AugmentConfig(),
    "cg3d-public": AugmentConfig(
        rotate_90=True,
        rotate_90_prob=PUBLIC_PROBABILITY,
        rotate_up_prob=PUBLIC_PROBABILITY,
        perturb_prob=PUBLIC_PROBABILITY,
        jitter_prob=PUBLIC_PROBABILITY,
        drop_to_origin=True,
        drop_to_origin_prob=PUBLIC_PROBABILITY,
        dropout=False,
    ),
}


def policy(name: str) -> AugmentConfig:
    """A named policy (a copy: the caller may change it)."""
    return dataclasses.replace(POLICIES[name])


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)


def rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)


@dataclass
class Draw:
    """The random values of one sample's augmentation; None: the op is not applied."""

    turns: int | None = None  # 90° turns about up (0–3)
    angle: float | None = None  # radians about up
    perturb: np.ndarray | None = None  # (3,) clipped angles about x, y, z
    jitter: np.ndarray | None = None  # (N, 3) clipped noise
    to_origin: np.ndarray | None = None  # row indices (with repeats) moved to the origin
    dropped: np.ndarray | None = None  # (N,) bool: rows replaced by the first
    scale: np.ndarray | None = None  # (3,) per-axis factors
    shift: np.ndarray | None = None  # (3,)
    contrast: float | None = None  # colour jitter
    brightness: float | None = None

    def rotation(self) -> np.ndarray:
        """The 3×3 R of p ← p · R: the 90° turn, then the turn about up, then the perturbation."""
        matrix = np.eye(3, dtype=np.float32)
        if self.turns is not None:
            matrix = matrix @ rotation_y(self.turns * np.pi / 2)
        if self.angle is not None:
            matrix = matrix @ rotation_y(self.angle)
        if self.perturb is not None:
            x, y, z = self.perturb
            matrix = matrix @ (rotation_z(z) @ rotation_y(y) @ rotation_x(x))
        return matrix


def draw_augment(config: AugmentConfig, rng: np.random.Generator, n: int) -> Draw:
    """One sample's random values for `n` points: for each enabled op in order, whether it
    applies (probability `<op>_prob`), then its values."""

    def applies(enabled: bool, probability: float) -> bool:
        return enabled and rng.random() < probability

    draw = Draw()
    if applies(config.rotate_90, config.rotate_90_prob):
        draw.turns = int(rng.integers(4))
    if applies(config.rotate_up, config.rotate_up_prob):
        draw.angle = float(rng.uniform(0, 2 * np.pi))
    if applies(config.perturb, config.perturb_prob):
        sigma, clip = config.perturb_sigma, config.perturb_clip
        draw.perturb = np.clip(rng.normal(0, sigma, 3), -clip, clip)
    if applies(config.jitter, config.jitter_prob):
        # torch's normal sampler is twice as fast as numpy's for float32; seeded from `rng`.
        generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        noise = torch.randn((n, 3), generator=generator).mul_(config.jitter_sigma)
        draw.jitter = noise.clamp_(-config.jitter_clip, config.jitter_clip).numpy()
    if applies(config.drop_to_origin, config.drop_to_origin_prob):
        # as np.random.choice(N, N // 10): with replacement, so ~9.5 % distinct rows at 0.1
        draw.to_origin = rng.integers(n, size=int(n * config.drop_to_origin_share + 1e-9))
    if applies(config.dropout, config.dropout_prob):
        draw.dropped = rng.random(n) <= rng.uniform(0, config.dropout_max)
    if applies(config.scale, config.scale_prob):
        draw.scale = rng.uniform(config.scale_low, config.scale_high, 3).astype(np.float32)
    if applies(config.translate, config.translate_prob):
        draw.shift = rng.uniform(-config.translate_range, config.translate_range, 3)
        draw.shift = draw.shift.astype(np.float32)
    if config.color_jitter:
        draw.contrast = float(rng.uniform(1 - config.color_contrast, 1 + config.color_contrast))
        draw.brightness = float(rng.uniform(-config.color_brightness, config.color_brightness))
    return draw


def _names(points: np.ndarray, channels: list[str] | None) -> list[str]:
    if channels:
        return list(channels)
    return ["x", "y", "z", "nx", "ny", "nz"][: points.shape[1]]


def augment_raw(
    points: np.ndarray,
    draw: Draw,
    channels: list[str] | None = None,
    has_color: bool = True,
) -> np.ndarray:
    """The ops before FPS (rotations, jitter, the move to the origin, dropout, colour jitter);
    a new float32 array, the caller's is left as it was.

    The rotations fold into one 3×3 product (numpy's: OpenBLAS keeps a product this small on
    one thread, 7× faster than torch's `mm` here); dropout is a gather of the input rows.
    """
    points = np.asarray(points, dtype=np.float32)
    if draw.dropped is not None:
        rows = np.arange(len(points))
        rows[draw.dropped] = 0
        points = points.take(rows, axis=0)
    # dropout only copies rows, so it commutes with the rest and goes first (one gather)
    rotation = draw.rotation()
    xyz = points[:, :3] @ rotation
    if draw.jitter is not None:
        xyz += draw.jitter
    if draw.to_origin is not None:
        xyz[draw.to_origin] = 0.0
    names = _names(points, channels)
    if points.shape[1] == 3:
        return xyz
    out = np.array(points, dtype=np.float32)
    out[:, :3] = xyz
    if "nx" in names:
        normals = names.index("nx")
        out[:, normals : normals + 3] = points[:, normals : normals + 3] @ rotation  # turn only
    if draw.contrast is not None and has_color and "r" in names:
        rgb = names.index("r")
        out[:, rgb : rgb + 3] = jitter_colors(out[:, rgb : rgb + 3], draw)
    return out


def augment_after_fps(points: np.ndarray, draw: Draw) -> np.ndarray:
    """The ops after FPS, on positions only: p ← p · scale + shift (the public
    PointcloudScaleAndTranslate), in place on `points`, which must be the caller's own writable
    float32 array (what FPS or `augment_raw` returned); returns it. The loader leaves them to
    the device instead (`deferred_scale_and_shift`, `scale_and_shift`)."""
    if draw.scale is not None or draw.shift is not None:
        scale, shift = deferred_scale_and_shift(draw)
        scale_and_shift(torch.from_numpy(points), torch.from_numpy(scale), torch.from_numpy(shift))
    return points


def deferred_scale_and_shift(draw: Draw) -> tuple[np.ndarray, np.ndarray]:
    """A sample's (3,) scale and shift as `scale_and_shift` takes them: 1 and 0 where the op
    was not drawn (multiplying by 1 and adding 0 leave every value as it is)."""
    scale = np.ones(3, np.float32) if draw.scale is None else draw.scale
    shift = np.zeros(3, np.float32) if draw.shift is None else draw.shift
    return scale, shift


def scale_and_shift(points: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """p ← p · scale + shift on the positions (the first 3 columns), in place: one sample
    ((N, C) points, (3,) factors) or a batch ((B, N, C), (B, 3)) on any device. The multiply
    and the add are separate elementwise ops, so a batch on the GPU gets the very values the
    per-sample op gives on the CPU."""
    xyz = points[..., :3]
    xyz.mul_(scale.unsqueeze(-2))
    xyz.add_(shift.unsqueeze(-2))
    return points


def augment_points(
    points: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator,
    channels: list[str] | None = None,
    has_color: bool = True,
) -> np.ndarray:
    """One draw of the whole policy on points that are not subsampled in between (the ops
    before FPS, then those after it); a new array, the caller's is left as it was."""
    draw = draw_augment(config, rng, len(points))
    return augment_after_fps(augment_raw(points, draw, channels, has_color), draw)


def jitter_colors(rgb: np.ndarray, draw: Draw) -> np.ndarray:
    """One draw for the whole cloud: contrast c about the cloud's mean colour, then a
    brightness shift b; clipped to [0, 1]. rgb' = (rgb - mean) * c + mean + b."""
    mean = rgb.mean(axis=0, keepdims=True)
    shifted = (rgb - mean) * draw.contrast + mean + draw.brightness
    return np.clip(shifted, 0.0, 1.0).astype(np.float32)
