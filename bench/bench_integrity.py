"""What the issue-18 checks cost: the whole-file check resume makes of each part it skips, and
reading a shard through a pipe with a read timeout against webdataset's own pipe stream.

    python bench/bench_integrity.py [--parts 20] [--objects 1000] [--views 5] [--repeats 3]

Writes --parts points parts (--objects clouds of 1024 points each) and --parts render parts
(--objects objects of --views 16 KB "views" and a cameras.json each), then times
`cg3d.formats.intact.part_problem` over each kind (a footer read per Parquet part; a header walk,
data seeked over, per tar), as `ChunkedOutput.pending` does on a rerun. Then one shard of the
render members is read through `pipe:cat` with `raw_samples` (the timed reader: select, then
os.read) and through webdataset's `gopen` stream with the same tar walk (the reader before).
Best of --repeats; the page cache is warm (the parts were just written).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from timing import best_seconds

from cg3d.formats.intact import part_problem
from cg3d.formats.points import write_points_part
from cg3d.formats.renders import dumps_cameras
from cg3d.formats.shards import Skipped, raw_samples
from cg3d.formats.tar import tar_samples, write_tar
from cg3d.params import RenderConfig
from cg3d.render.cameras import cameras_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=20)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        ids = [f"object-{i:06d}" for i in range(args.objects)]
        clouds = [rng.normal(size=(1024, 3)).astype(np.float32) for _ in ids]
        view = rng.bytes(16_000)
        members = {f"{key}.view_{v:02d}.png": view for key in ids for v in range(args.views)}
        cameras = dumps_cameras(cameras_of(RenderConfig(views=args.views), "object"))
        members |= {f"{key}.cameras.json": cameras for key in ids}
        points = [root / f"part-{i:05d}.parquet" for i in range(args.parts)]
        renders = [root / f"part-{i:05d}.tar" for i in range(args.parts)]
        for path in points:
            write_points_part(path, ids, clouds)
        for path in renders:
            write_tar(path, members)
        for kind, parts in (("points (Parquet)", points), ("renders (tar)", renders)):
            seconds = best_seconds(
                lambda parts=parts: [part_problem(p) for p in parts], args.repeats
            )
            size = sum(p.stat().st_size for p in parts) / 2**20
            print(
                f"check {len(parts)} {kind} parts ({size:.0f} MiB): {seconds * 1e3:.1f} ms, "
                f"{seconds / len(parts) * 1e3:.2f} ms a part"
            )

        shard = renders[0]
        size = shard.stat().st_size / 2**20

        def timed() -> None:
            skipped = Skipped()
            for _ in raw_samples("pipe:cat {}", [str(shard)], [args.objects], [0], skipped):
                pass
            assert skipped.total == 0

        def webdataset_stream() -> None:
            from webdataset.gopen import gopen

            stream = gopen(f"pipe:cat {shard}", "rb")
            assert sum(1 for _ in tar_samples(stream)) == args.objects
            stream.close()

        for name, read in (("timed reader", timed), ("webdataset gopen", webdataset_stream)):
            seconds = best_seconds(read, args.repeats)
            print(
                f"read a {size:.0f} MiB shard through pipe:cat, {name}: {size / seconds:.0f} MiB/s"
            )


if __name__ == "__main__":
    main()
