"""`cg3d.render.worker.serve` itself, with Blender's `Renderer` stood in, for the supervisor's
full-disk test: sampling an object whose file is named `full.*` fails as a write to a full
disk does (ENOSPC, naming the file written), one named `stale.*` as a read of a network disk's
stale file does (ESTALE, raised as the file's RenderFailure, as `blender_input` does); any
other object gets a one-point cloud."""

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np

from cg3d.geometry.meshio import MeshError
from cg3d.render import worker


class Renderer:
    def __init__(self, settings: dict) -> None:
        pass

    def warm_up(self) -> None:
        pass

    def clear(self) -> None:
        pass

    def sample(self, request: dict) -> dict:
        if Path(request["path"]).stem == "full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), request["out"])
        if Path(request["path"]).stem == "stale":
            cause = OSError(errno.ESTALE, os.strerror(errno.ESTALE), request["path"])
            try:
                raise MeshError("unreadable", f"cannot read it: {cause.strerror}") from cause
            except MeshError as error:
                raise worker.RenderFailure(str(error)) from error
        np.save(request["out"], np.zeros((1, 3), np.float32))
        return {"has_color": False}


if __name__ == "__main__":
    worker.Renderer = Renderer
    worker.serve(json.loads(sys.argv[1]))
