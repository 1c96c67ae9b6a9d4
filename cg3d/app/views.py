"""The views of an uploaded mesh, rendered by the pipeline's own Blender worker.

The same persistent headless Blender (`cg3d.render.supervisor.BlenderWorker`), cameras
(`cameras_of`) and finishing (`finished_png`, on white) as the render stage, so a user sees
what training saw. Blender starts on the first render and stays up; one object at a time.
"""

import threading
from pathlib import Path

from PIL import Image

from cg3d.errors import UsageError
from cg3d.formats.shards import decode_image
from cg3d.params import RenderConfig
from cg3d.render.cameras import cameras_of
from cg3d.render.stage import finished_png
from cg3d.render.supervisor import BlenderWorker, worker_memory_bytes

UPLOAD_ID = "upload"  # names the cameras' seed and the worker's files


class ViewRenderer:
    """Renders `config.views` views of one mesh file at a time; `close()` stops Blender."""

    def __init__(self, config: RenderConfig, tmp_root: Path | None = None):
        """`tmp_root`: the folder Blender's temp folder goes in (the demo's own), else /tmp."""
        config.validate()
        self.config = config
        memory = worker_memory_bytes(config.worker_memory, 1)  # one Blender serves the demo
        settings = config.worker_settings()
        self.worker = BlenderWorker(settings, config.timeout, memory, tmp_root=tmp_root)
        self.lock = threading.Lock()

    def render(self, path: Path, up_axis: str = "y") -> list[Image.Image]:
        """The views of the mesh in `path`, in camera order; UsageError with Blender's reason."""
        cameras = cameras_of(self.config, UPLOAD_ID)["views"]
        with self.lock:
            pngs = [self.worker.out_dir / f"{UPLOAD_ID}.{view['name']}.png" for view in cameras]
            try:
                reason = self.worker.render(UPLOAD_ID, Path(path), up_axis, cameras)
                if reason is not None:
                    raise UsageError(f"{Path(path).name}: {reason}")
                finished = [finished_png(png, self.config.background) for png in pngs]
            finally:
                for png in pngs:
                    png.unlink(missing_ok=True)
        return [decode_image(data) for data in finished]

    def close(self) -> None:
        self.worker.close()
