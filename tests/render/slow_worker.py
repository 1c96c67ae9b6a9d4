"""A stand-in for `cg3d.render.worker` speaking its protocol without Blender, for the tests of
paused workers: a "points" request writes `<out>.started`, sleeps the seconds its file names
(a truly hung worker: many), then answers a one-point cloud."""

import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        Path(request["out"] + ".started").touch()
        time.sleep(float(Path(request["path"]).read_text()))
        np.save(request["out"], np.zeros((1, 3), np.float32))
        print(json.dumps({"id": request["id"], "ok": True, "has_color": False}), flush=True)


if __name__ == "__main__":
    main()
