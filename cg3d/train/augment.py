"""The paper's point augmentations (Point-BERT / CG3D conventions), each switchable.

Points are (N, C) float32 in the canonical frame (+Y up), their columns named by `channels`
(meta.json's, `cg3d.formats.points.channel_names`: xyz, then rgb, then normals). Rotations
apply to positions and normals, scale/translation/jitter to positions only; colours are never
rotated or scaled, only jittered when `color_jitter` is on (and only the colours an object has:
the constant of an object without any stays the constant). A layout not given is xyz (C = 3) or
xyz + normals (C = 6), as before colours existed.
"""

import numpy as np
import torch

from cg3d.params import AugmentConfig


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)


def rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)


def augment_points(
    points: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator,
    channels: list[str] | None = None,
    has_color: bool = True,
) -> np.ndarray:
    """One random draw of every enabled augmentation, in Point-BERT's order (rotations, dropout,
    scale, translation, jitter); a new array, the caller's is left as it was.

    The rotations and the scale fold into one 3×3 matrix, applied in a single product (numpy's:
    OpenBLAS keeps a product this small on one thread, 7× faster than torch's `mm` here).
    Dropout copies the first point over the dropped ones, as a gather of the input rows.
    """
    points = np.asarray(points, dtype=np.float32)
    rotation = np.eye(3, dtype=np.float32)
    if config.rotate_up:
        rotation = rotation_y(rng.uniform(0, 2 * np.pi))
    if config.perturb:
        angles = np.clip(
            rng.normal(0, config.perturb_sigma, 3), -config.perturb_clip, config.perturb_clip
        )
        rotation = rotation_z(angles[2]) @ rotation_y(angles[1]) @ rotation_x(angles[0]) @ rotation
    scale = np.ones(3, dtype=np.float32)
    if config.scale:
        scale = rng.uniform(config.scale_low, config.scale_high, 3).astype(np.float32)
    if config.dropout:
        rows = np.arange(len(points))
        rows[rng.random(len(points)) <= rng.uniform(0, config.dropout_max)] = 0
        points = points.take(rows, axis=0)
    xyz = points[:, :3] @ (rotation.T * scale)  # row p → (R p) * scale
    # The additions run in torch, whose broadcasting over rows of 3 is ~3× numpy's.
    shifted = torch.from_numpy(xyz)
    if config.translate:
        shift = rng.uniform(-config.translate_range, config.translate_range, 3)
        shifted += torch.from_numpy(shift.astype(np.float32))
    if config.jitter:
        # torch's normal sampler is twice as fast as numpy's for float32; seeded from `rng`.
        generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        noise = torch.randn(xyz.shape, generator=generator).mul_(config.jitter_sigma)
        shifted += noise.clamp_(-config.jitter_clip, config.jitter_clip)
    if points.shape[1] == 3:
        return xyz
    out = np.array(points, dtype=np.float32)
    out[:, :3] = xyz
    names = list(channels) if channels else ["x", "y", "z", "nx", "ny", "nz"]
    if "nx" in names:
        normals = names.index("nx")
        out[:, normals : normals + 3] = points[:, normals : normals + 3] @ rotation.T  # turn only
    if config.color_jitter and has_color and "r" in names:
        rgb = names.index("r")
        out[:, rgb : rgb + 3] = jitter_colors(out[:, rgb : rgb + 3], config, rng)
    return out


def jitter_colors(rgb: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One draw for the whole cloud: contrast c ~ U(1 - contrast, 1 + contrast) about the
    cloud's mean colour, then a brightness shift b ~ U(-brightness, brightness); clipped to
    [0, 1]. rgb' = (rgb - mean) * c + mean + b."""
    contrast = rng.uniform(1 - config.color_contrast, 1 + config.color_contrast)
    brightness = rng.uniform(-config.color_brightness, config.color_brightness)
    mean = rgb.mean(axis=0, keepdims=True)
    return np.clip((rgb - mean) * contrast + mean + brightness, 0.0, 1.0).astype(np.float32)
