"""A stand-in for `cg3d.render.worker` speaking its protocol without Blender, for the
supervisor's tests: a "points" request lowers the process's own CPU time limit (RLIMIT_CPU) to
1 s, soft and hard as its file names them ("1 1": SIGKILL, as `ulimit -t 1` ends it; "1 60":
SIGXCPU), then spins until the kernel ends it, as Blender does past a node's `ulimit -t`."""

import json
import resource
import sys
from pathlib import Path


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        soft, hard = (int(word) for word in Path(request["path"]).read_text().split())
        used = int(resource.getrusage(resource.RUSAGE_SELF).ru_utime)
        resource.setrlimit(resource.RLIMIT_CPU, (used + soft, used + hard))
        while True:
            pass


if __name__ == "__main__":
    main()
