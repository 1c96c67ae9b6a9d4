"""A stand-in for `cg3d.render.worker` speaking its protocol without Blender, for the
supervisor's tests: a "points" request allocates the MiB its file names (not touched, so it
costs address space only) and answers a one-point cloud. Under the supervisor's memory limit
a large allocation raises MemoryError, uncaught, and the process dies as Blender's C code
does when an allocation is refused. A file reading "hang" stands for a render that runs on:
the stand-in writes `<path>.busy` and sleeps."""

import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        text = Path(request["path"]).read_text()
        if text == "hang":
            Path(request["path"] + ".busy").write_text("")
            time.sleep(3600)
        mib = int(text)
        block = bytearray(mib << 20)
        np.save(request["out"], np.zeros((1, 3), np.float32))
        reply = {"id": request["id"], "ok": True, "has_color": False, "rss_mb": len(block) >> 20}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
