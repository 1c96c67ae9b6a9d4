"""Peak memory and time of reading a user's text point file (`cg3d classify`, `scene-query`,
the demo): `read_point_file`, which streams the lines into `np.loadtxt`, against the naive
read of the whole text first (`read_text`, `splitlines`, then `np.loadtxt`).

    python bench/bench_pointfile.py [--points 4000000] [--columns 6]

Writes one seeded file of --points rows (xyz and rgb as `%.6f`), then reads it in a fresh
process per read, each way twice, alternated: the process's peak RSS (`ru_maxrss`, the
interpreter and numpy included) and wall seconds of the read alone.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

READ = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from cg3d.formats.pointfiles import read_point_file
path, way = Path(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
if way == "whole text":
    lines = path.read_text().replace(",", " ").splitlines()
    points = np.loadtxt(lines, dtype=np.float64, ndmin=2)[:, :3]
else:
    points = read_point_file(path)[0]
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rows": len(points), "peak_mb": peak_mb}))
"""


def read_once(path: Path, way: str) -> dict:
    """One read of `path` the `way` named, in a fresh process: its seconds and peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", READ, str(path), way], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=4_000_000)
    parser.add_argument("--columns", type=int, default=6)
    args = parser.parse_args()
    rows = np.random.default_rng(0).normal(size=(args.points, args.columns)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scan.txt"
        np.savetxt(path, rows, fmt="%.6f")
        print(f"{path.stat().st_size / 1e6:.0f} MB, {args.points} rows of {args.columns}")
        for way in ["streamed (read_point_file)", "whole text"] * 2:
            found = read_once(path, way)
            print(f"{way}: {found['seconds']:.2f} s, peak RSS {found['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
