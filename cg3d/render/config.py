"""The render stage's config (`render:` in params.yaml); light, so that `cg3d --help` stays fast."""

from dataclasses import dataclass

from cg3d.errors import UsageError

ENGINES = {"workbench": "BLENDER_WORKBENCH", "cycles": "CYCLES"}
BACKGROUNDS = ("white", "transparent")


@dataclass
class RenderConfig:
    views: int = 4
    resolution: int = 224
    engine: str = "workbench"
    samples: int = 16  # cycles only
    chunk_size: int = 200
    seed: int = 0
    workers: int = 2  # 0: one per CPU
    executor: str = "local"
    timeout: float = 120.0  # seconds per object
    background: str = "white"
    elevation_min: float = 0.0  # degrees (the paper: 0–30)
    elevation_max: float = 30.0
    azimuth_jitter: float = 0.5  # fraction of the azimuth spacing
    fov_deg: float = 40.0

    def validate(self) -> None:
        from cg3d.pipeline.chunks import EXECUTORS

        checks = [
            (self.views >= 1, f"--views must be ≥ 1, got {self.views}"),
            (self.resolution >= 8, f"--resolution must be ≥ 8, got {self.resolution}"),
            (
                self.engine in ENGINES,
                f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}",
            ),
            (self.samples >= 1, f"--samples must be ≥ 1, got {self.samples}"),
            (self.chunk_size >= 1, f"--chunk-size must be ≥ 1, got {self.chunk_size}"),
            (self.workers >= 0, f"--workers must be ≥ 0 (0: one per CPU), got {self.workers}"),
            (
                self.executor in EXECUTORS,
                f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}",
            ),
            (self.timeout > 0, f"--timeout must be > 0 seconds, got {self.timeout}"),
            (
                self.background in BACKGROUNDS,
                f"--background must be one of {', '.join(BACKGROUNDS)}, got {self.background!r}",
            ),
            (
                -90.0 <= self.elevation_min <= self.elevation_max <= 90.0,
                f"--elevation-min/--elevation-max must satisfy -90 ≤ min ≤ max ≤ 90, got {self.elevation_min}, {self.elevation_max}",
            ),
            (
                0.0 <= self.azimuth_jitter <= 1.0,
                f"--azimuth-jitter must be in [0, 1], got {self.azimuth_jitter}",
            ),
            (0.0 < self.fov_deg < 180.0, f"--fov-deg must be in (0, 180), got {self.fov_deg}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def worker_settings(self) -> dict:
        """What a Blender process needs to set up its scene."""
        return {
            "engine": self.engine,
            "samples": self.samples,
            "resolution": self.resolution,
            "fov_deg": self.fov_deg,
        }

    def cameras(self, object_id: str) -> dict:
        """The cameras.json document of one object."""
        from cg3d.render.cameras import object_cameras

        return object_cameras(
            object_id,
            seed=self.seed,
            views=self.views,
            resolution=self.resolution,
            fov_deg=self.fov_deg,
            elevation_range=(self.elevation_min, self.elevation_max),
            azimuth_jitter=self.azimuth_jitter,
        )
