"""Writing shards: Python's `tarfile` (the pack stage's writer until now) against our ustar
writer (`cg3d.formats.tar.TarWriter`), on the same members, in the same run.

A shard's members per object, as the pack stage writes them: `points.npy` (`--points` xyz
float32), `--views` view PNGs of `--view-bytes` each (random bytes: writing does not look at
them), `cameras.json`, `captions.json`, `cls` and `meta.json`. Each writer writes the same shard
`--repeats` times to `--work` (the best time counts); the two files must be the same bytes.

    python bench/bench_tar_writer.py --objects 5000 --work /tmp/bench_tar_writer
"""

import argparse
import hashlib
import io
import os
import platform
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cg3d.formats.shards import npy_bytes
from cg3d.formats.tar import open_tar_writer

Members = list[tuple[str, bytes]]


def members_of(objects: int, points: int, views: int, view_bytes: int) -> Members:
    rng = np.random.default_rng(0)
    cloud = npy_bytes(rng.random((points, 3), dtype=np.float32))
    view = rng.bytes(view_bytes)
    cameras = b'{"views": [' + b", ".join([b'{"elevation": 30.0}'] * views) + b"]}"
    members = []
    for number in range(objects):
        key = f"obj{number:08d}"
        members.append((f"{key}.points.npy", cloud))
        members += [(f"{key}.view_{v:02d}.png", view) for v in range(views)]
        members += [
            (f"{key}.cameras.json", cameras),
            (f"{key}.captions.json", b'["a 3d model of a chair"]'),
            (f"{key}.cls", b"3"),
            (f"{key}.meta.json", b'{"channels": ["x", "y", "z"], "source": "objaverse"}'),
        ]
    return members


def write_with_tarfile(path: Path, members: Members) -> None:
    """The writer pack used before: a TarInfo per member with fixed metadata, `addfile`."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))


def write_with_ours(path: Path, members: Members) -> None:
    with open_tar_writer(path) as tar:
        for name, data in members:
            tar.add(name, data)


def best_s(write: Callable[[Path, Members], None], path: Path, members: Members, repeats: int):
    times = []
    for _ in range(repeats):
        path.unlink(missing_ok=True)
        started = time.perf_counter()
        write(path, members)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--view-bytes", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_tar_writer"))
    args = parser.parse_args()
    members = members_of(args.objects, args.points, args.views, args.view_bytes)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{platform.python_version()} on {platform.machine()}, load {os.getloadavg()}")
    print(f"{len(members):,} members, {sum(len(d) for _, d in members) / 2**20:.0f} MiB of data")
    results = {}
    for label, write in (("tarfile", write_with_tarfile), ("ours", write_with_ours)):
        path = args.work / f"{label}.tar"
        seconds = best_s(write, path, members, args.repeats)
        results[label] = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{label:8} {seconds:7.3f} s  {seconds / len(members) * 1e6:6.1f} µs a member")
    print("same bytes:", results["tarfile"] == results["ours"])
    shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
