"""Sample and render throughput on textured GLBs, for two code trees (before and after issue 11).

    python bench/bench_textured_glb.py --before /tmp/before [--after .] [--objects 12]
                                       [--views 4] [--resolution 224] [--points 8192] [--workers 2]

Writes --objects GLBs with Blender's glTF exporter (a mix, in turn: cubes, UV spheres and
subdivided monkeys, each with its own packed checker texture), then for each tree runs, as
subprocesses with PYTHONPATH set to that tree, `cg3d meshes --source folder`, `cg3d sample`
(the after tree also with the exact FPS the
before tree had, and with --colors) and `cg3d render` (workbench). Times are the wall clock of
each command: Python's start, Blender's worker start and the writing of the outputs included,
as a user sees them. `--before`: a checkout of the code before the issue-11 merge
(`git worktree add /tmp/before 838d758`).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("cube", "sphere", "monkey")


def write_glbs(folder: Path, objects: int) -> None:
    """Runs inside its own process (bpy): one GLB per object, under folder/<kind>/."""
    import bpy
    import numpy as np

    for index in range(objects):
        kind = KINDS[index % len(KINDS)]
        bpy.ops.wm.read_factory_settings(use_empty=True)
        size = 128
        image = bpy.data.images.new(f"checker{index}", size, size, alpha=False)
        rng = np.random.default_rng(index)
        pixels = np.ones((size, size, 4), dtype=np.float32)
        tiles = rng.uniform(0.05, 0.95, (4, 4, 3))
        pixels[..., :3] = np.kron(tiles, np.ones((size // 4, size // 4, 1)))
        image.pixels.foreach_set(pixels.ravel())
        image.file_format = "PNG"
        image.pack()
        if kind == "cube":
            bpy.ops.mesh.primitive_cube_add(size=1.5)
        elif kind == "sphere":
            bpy.ops.mesh.primitive_uv_sphere_add(segments=48, ring_count=24)
        else:
            bpy.ops.mesh.primitive_monkey_add()
            bpy.ops.object.modifier_add(type="SUBSURF")
        material = bpy.data.materials.new(f"checker{index}")
        material.use_nodes = True
        texture = material.node_tree.nodes.new("ShaderNodeTexImage")
        texture.image = image
        bsdf = material.node_tree.nodes["Principled BSDF"]
        material.node_tree.links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
        bpy.context.object.data.materials.append(material)
        path = folder / kind / f"{kind}_{index:03d}.glb"
        path.parent.mkdir(parents=True, exist_ok=True)
        bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB")


def timed(tree: Path, arguments: list[str]) -> float:
    """Seconds of one `cg3d` command run with `tree`'s code."""
    env = os.environ | {"PYTHONPATH": str(tree.resolve())}
    command = [sys.executable, "-c", "from cg3d.cli import main; main()", *arguments]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(arguments[:1])} with {tree} failed:\n{result.stderr[-2000:]}")
    return seconds


def objects_done(folder: Path) -> int:
    """Objects a sample or render output holds (rows of its parts, cameras of its tars)."""
    import pyarrow.parquet as pq

    from cg3d.formats.tar import tar_members

    rows = sum(pq.read_metadata(part).num_rows for part in folder.glob("part-*.parquet"))
    for part in folder.glob("part-*.tar"):
        with open(part, "rb") as stream:
            rows += sum(name.endswith(".cameras.json") for name, _ in tar_members(stream))
    return rows


def run_tree(name: str, tree: Path, glbs: Path, scratch: Path, args) -> list[tuple]:
    out = scratch / name
    meshes = out / "meshes"
    timed(tree, ["meshes", "--source", "folder", "--root", str(glbs), "--out", str(meshes)])
    common = ["--meshes", str(meshes), "--workers", str(args.workers)]
    rows = []
    samples = [("sample", [])]
    if name == "after":  # exact FPS as before (isolates the reading), and with colours
        samples += [("sample --fps exact", ["--fps", "exact"]), ("sample --colors", ["--colors"])]
    for label, extra in samples:
        folder = out / label.replace(" --", "-")
        sample = ["sample", *common, "--points", str(args.points), "--out", str(folder), *extra]
        seconds = timed(tree, sample)
        rows.append((name, label, objects_done(folder), seconds, args.objects / seconds, None))
    render = ["render", *common, "--views", str(args.views), "--resolution", str(args.resolution)]
    seconds = timed(tree, [*render, "--engine", "workbench", "--out", str(out / "render")])
    views = args.objects * args.views
    done = objects_done(out / "render")
    rows.append(
        (name, "render (workbench)", done, seconds, args.objects / seconds, views / seconds)
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--objects", type=int, default=12)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--points", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write-glbs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_glbs:
        write_glbs(args.write_glbs, args.objects)
        return
    scratch = Path(tempfile.mkdtemp(prefix="bench-textured-"))
    try:
        glbs = scratch / "glbs"
        command = [sys.executable, __file__, "--before", ".", "--objects", str(args.objects)]
        subprocess.run([*command, "--write-glbs", str(glbs)], check=True, capture_output=True)
        rows = []
        for name, tree in (("before", args.before), ("after", args.after)):
            rows += run_tree(name, tree, glbs, scratch, args)
        print(
            f"\n{args.objects} textured GLBs ({', '.join(KINDS)}), {args.points} points, "
            f"{args.views} views at {args.resolution} px, {args.workers} workers"
        )
        print(
            f"{'tree':<7} {'command':<22} {'done':>7} {'seconds':>8} {'objects/s':>10} {'views/s':>8}"
        )
        for tree, label, n, seconds, per_object, per_view in rows:
            views = f"{per_view:8.2f}" if per_view else f"{'':>8}"
            print(f"{tree:<7} {label:<22} {n:>7} {seconds:>8.1f} {per_object:>10.2f} {views}")
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
