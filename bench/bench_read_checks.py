"""What the read-time checks cost per object (issue 18.1), beside the reading they guard.

    python bench/bench_read_checks.py [--subdivisions 6] [--repeat 5]

One icosphere (20 × 4^subdivisions faces) written as OBJ (with an MTL and a texture map) and
as GLB. Rows, best of --repeat:
  trimesh reading           load_mesh, the sample stage's fast path, unchecked (the old way)
  + listed_file             the fast path's check: resolve, confine, sha256 of the file
  blender_input (copy)      the Blender path's check: the hashed copy Blender imports (OBJ:
                            statements scanned, MTL rewritten; GLB: JSON rewritten, BIN copied)
Blender's own import of the same file takes longer than any of these (not timed here: it
needs a Blender worker; see bench_render.py and bench_sample.py).
"""

import argparse
import tempfile
from pathlib import Path

import trimesh
from PIL import Image
from timing import best_seconds

from cg3d.files import file_sha256
from cg3d.geometry.meshio import blender_input, listed_file, load_mesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subdivisions", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        sphere = trimesh.creation.icosphere(subdivisions=args.subdivisions)
        Image.new("RGB", (64, 64), (200, 30, 30)).save(root / "tex.png")
        (root / "m.mtl").write_text("newmtl m\nKd 0.8 0.8 0.8\nmap_Kd -bm 1 tex.png\n")
        obj_text = trimesh.exchange.obj.export_obj(sphere, include_texture=False)
        (root / "sphere.obj").write_text("mtllib m.mtl\nusemtl m\n" + obj_text)
        sphere.export(root / "sphere.glb")
        print(f"{len(sphere.faces)} faces; machine load is shared: figures are noisy")
        print("| file | MB | step | seconds |")
        print("|---|---:|---|---:|")
        for name in ("sphere.obj", "sphere.glb"):
            path = root / name
            sha = file_sha256(path)
            mb = path.stat().st_size / 2**20
            rows = [
                ("trimesh reading (load_mesh), unchecked", lambda p=path: load_mesh(p)),
                (
                    "listed_file + load_mesh",
                    lambda p=path, s=sha: load_mesh(listed_file(p, root, s)),
                ),
                (
                    "blender_input (the checked copy)",
                    lambda p=path, s=sha: blender_input(p, root, s, Path(tmp) / "copy"),
                ),
            ]
            for step, work in rows:
                seconds = best_seconds(work, args.repeat)
                print(f"| {name} | {mb:.1f} | {step} | {seconds:.4f} |")


if __name__ == "__main__":
    main()
