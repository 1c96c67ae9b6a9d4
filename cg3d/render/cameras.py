"""Orbit cameras in the shared object frame, and the `<id>.cameras.json` they are saved as.

Frame: the canonical, normalised object frame of `cg3d.geometry.frame` (+Y up, the mesh
centred and scaled into the unit sphere), the frame the sampled points are in.

Convention (OpenCV), per view:
- `world_to_camera` 4×4: camera coordinates x right, y down, z forward (into the scene).
- `K` 3×3 intrinsics in pixels, pixel centres at integer coordinates: a point X (object
  frame) lands at pixel (u, v) = (p[0] / p[2], p[1] / p[2]) with p = K @ (R @ X + t),
  u the column and v the row of the PNG.
- `azimuth_deg` about +Y (0 looks from +Z towards the origin, 90 from +X),
  `elevation_deg` above the XZ plane, `distance` from the origin, all in the object frame.

Used by the supervisor, the `show` command and the tests; the Blender worker gets the
matrices it needs in its requests. The file's writer and its checked reader are
`cg3d.formats.renders.dumps_cameras` and `loads_cameras` (pack and verify read it too). Cameras are seeded like the sampler, from (seed, object id).
"""

import math

import numpy as np

from cg3d.geometry.sampling import object_rng
from cg3d.params import RenderConfig

# Margin around the unit sphere, as a fraction of the half field of view.
FRAME_MARGIN = 1.05


def orbit_angles(
    rng: np.random.Generator,
    views: int,
    elevation_range: tuple[float, float],
    azimuth_jitter: float,
) -> list[tuple[float, float]]:
    """(azimuth, elevation) in degrees: azimuths evenly spaced from a random start, each moved
    by up to ±jitter/2 of the spacing, elevations uniform in the range."""
    spacing = 360.0 / views
    start = rng.uniform(0.0, 360.0)
    jitter = rng.uniform(-0.5, 0.5, size=views) * azimuth_jitter * spacing
    elevations = rng.uniform(elevation_range[0], elevation_range[1], size=views)
    return [
        (float((start + k * spacing + jitter[k]) % 360.0), float(elevations[k]))
        for k in range(views)
    ]


def camera_distance(fov_deg: float) -> float:
    """The distance at which the unit sphere fills the view, with a small margin."""
    return FRAME_MARGIN / math.sin(math.radians(fov_deg) / 2.0)


def intrinsics(resolution: int, fov_deg: float) -> np.ndarray:
    """K of a square pinhole camera with the given field of view."""
    focal = (resolution / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    centre = (resolution - 1) / 2.0
    return np.array([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])


def orbit_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * np.array(
        [math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)]
    )


def look_at_origin(position: np.ndarray) -> np.ndarray:
    """OpenCV world_to_camera (4×4) of a camera at `position` looking at the origin, +Y up."""
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    if np.linalg.norm(right) < 1e-9:  # straight above or below: any right vector will do
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = rotation
    world_to_camera[:3, 3] = -rotation @ position
    return world_to_camera


def object_cameras(
    object_id: str,
    *,
    seed: int,
    views: int,
    resolution: int,
    fov_deg: float,
    elevation_range: tuple[float, float],
    azimuth_jitter: float,
) -> dict:
    """The cameras.json document of one object (see the module docstring)."""
    distance = camera_distance(fov_deg)
    K = intrinsics(resolution, fov_deg)
    angles = orbit_angles(object_rng(seed, object_id), views, elevation_range, azimuth_jitter)
    return {
        "id": object_id,
        "convention": "opencv",
        "frame": "canonical +Y up, normalised to the unit sphere (as the sampled points)",
        "width": resolution,
        "height": resolution,
        "fov_deg": fov_deg,
        "views": [
            {
                "name": f"view_{k:02d}",
                "azimuth_deg": azimuth,
                "elevation_deg": elevation,
                "distance": distance,
                "K": K.tolist(),
                "world_to_camera": look_at_origin(
                    orbit_position(azimuth, elevation, distance)
                ).tolist(),
            }
            for k, (azimuth, elevation) in enumerate(angles)
        ],
    }


def project(points: np.ndarray, view: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2: u column, v row) and depths (N,) of object-frame points."""
    world_to_camera = np.asarray(view["world_to_camera"])
    camera = points[:, :3] @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    pixels = camera @ np.asarray(view["K"]).T
    return pixels[:, :2] / pixels[:, 2:3], camera[:, 2]


def cameras_of(config: RenderConfig, object_id: str) -> dict:
    """The cameras.json document of one object under the render params."""
    return object_cameras(
        object_id,
        seed=config.seed,
        views=config.views,
        resolution=config.resolution,
        fov_deg=config.fov_deg,
        elevation_range=(config.elevation_min, config.elevation_max),
        azimuth_jitter=config.azimuth_jitter,
    )
