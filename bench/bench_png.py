"""CPU per view of the render stage's PNG finishing (`finished_png`: the worker's RGBA render
composited on white and encoded again) at PIL's default zlib level 6 and at the stage's level.

    python bench/bench_png.py [--views 12] [--resolution 224] [--glb FILE]

Renders --views workbench views of --glb (default: bench_objaverse.py's object of --seed 1,
a UV sphere of 41k triangles with a 1024 px base colour map) with a Blender worker, then times
decode, composite and encode of each view with `time.process_time` (CPU, so less noisy than
wall time on a shared machine), and prints the bytes each level writes.
"""

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from cg3d.params import RenderConfig
from cg3d.render.cameras import cameras_of
from cg3d.render.stage import PNG_COMPRESS_LEVEL
from cg3d.render.supervisor import BlenderWorker

BENCH = Path(__file__).resolve().parent


def views(glb: Path, count: int, resolution: int) -> list[bytes]:
    config = RenderConfig(views=count, resolution=resolution)
    cameras = cameras_of(config, "object")["views"]
    with BlenderWorker(config.worker_settings(), 600) as worker:
        reason = worker.render("object", glb, "y", cameras)
        if reason:
            sys.exit(reason)
        return [(worker.out_dir / f"object.{v['name']}.png").read_bytes() for v in cameras]


def finish(data: bytes, level: int) -> bytes:
    """`finished_png` at zlib `level`."""
    rgba = Image.open(io.BytesIO(data)).convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    buffer = io.BytesIO()
    Image.alpha_composite(white, rgba).convert("RGB").save(
        buffer, format="PNG", compress_level=level
    )
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--glb", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        glb = args.glb
        if glb is None:
            subprocess.run(
                [sys.executable, str(BENCH / "bench_objaverse.py"), "--objects", "1",
                 "--seed", "1", "--glbs", scratch, "--write-glbs"],
                check=True,
                capture_output=True,
            )  # fmt: skip
            glb = next(Path(scratch).rglob("*.glb"))
        rendered = views(glb, args.views, args.resolution)
        print(f"{len(rendered)} views of {glb.name} at {args.resolution} px")
        print("| zlib level | CPU ms per view | bytes per view |")
        print("|---|---|---|")
        for level in sorted({6, PNG_COMPRESS_LEVEL}, reverse=True):
            start = time.process_time()
            sizes = [len(finish(data, level)) for data in rendered for _ in range(5)]
            per_view = (time.process_time() - start) / len(sizes) * 1000
            print(f"| {level} | {per_view:.1f} | {sum(sizes) / len(sizes):,.0f} |")


if __name__ == "__main__":
    main()
