"""CPU-seconds per object of meshes → sample → render on Objaverse-like GLBs, and the hours
that makes for 800k objects on one 64-core node.

    python bench/bench_objaverse.py --objects 200 [--tree PATH] [--glbs DIR] [--views 12]
                                    [--resolution 224] [--points 8192] [--workers 2]

Writes --objects GLBs with Blender's glTF exporter (once: kept in --glbs and reused), a mix
drawn from a seeded generator: 1k–50k triangles (log-uniform; UV spheres, subdivided
monkeys, subdivided cubes), 0–3 packed PNG maps (base colour, metallic-roughness, normal) of
512, 1024 or 2048 px with smooth content plus fine noise (what photo textures weigh as
PNG), every fifth object skinned to a posed two-bone armature, every fourth Draco-compressed.
Then runs each stage as the `cg3d` command with `--tree`'s code (PYTHONPATH), as a user
does: `meshes --source folder`, `sample --colors` (the colours OpenShape's setting keeps) and
`render` (workbench, --views views), and `sample` without colours as a row of its own (not in
the total). CPU-seconds are the command's and every process it
waited for (pool workers, Blender workers: `os.wait4`'s rusage), so they do not depend on how
busy the machine is the way wall time does; hours = CPU-s per object × 800,000 / 64 cores /
3600, which assumes the stages scale to 64 cores (chunks: one per worker) and leaves out
I/O. Pass `--tree` a checkout of older code (`git worktree add /tmp/before main`) to
measure before and after on the same files.
"""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OBJECTS = 800_000
CORES = 64
MAP_NAMES = ("base_color", "metallic_roughness", "normal")


def plan_objects(objects: int, seed: int) -> list[dict]:
    """The mix, one dict per object: kind, triangles, maps (name: px), skinned, draco."""
    import numpy as np

    rng = np.random.default_rng(seed)
    plans = []
    for index in range(objects):
        n_maps = int(rng.integers(0, 4))
        plans.append(
            {
                "name": f"object_{index:04d}",
                "kind": ("sphere", "monkey", "cube")[index % 3],
                "triangles": int(np.exp(rng.uniform(np.log(1_000), np.log(50_000)))),
                "maps": {m: int(rng.choice([512, 1024, 2048])) for m in MAP_NAMES[:n_maps]},
                "skinned": index % 5 == 4,
                "draco": index % 4 == 3,
            }
        )
    return plans


def write_glbs(folder: Path, plans: list[dict]) -> None:
    """Runs in its own process (bpy): one GLB per plan, under folder/<kind>/."""
    import bpy
    import numpy as np

    for index, plan in enumerate(plans):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        obj = _mesh(bpy, plan["kind"], plan["triangles"])
        material = bpy.data.materials.new(plan["name"])
        material.use_nodes = True
        rng = np.random.default_rng(index)
        for name, size in plan["maps"].items():
            _add_map(bpy, material, name, _texture_pixels(rng, size, name), size)
        obj.data.materials.append(material)
        options = {"export_apply": True}  # the monkeys' subdivision (never the armature)
        if plan["skinned"]:
            _skin(bpy, obj)
            options |= {"export_skins": True, "export_animations": True}
        if plan["draco"]:
            options["export_draco_mesh_compression_enable"] = True
        path = folder / plan["kind"] / f"{plan['name']}.glb"
        path.parent.mkdir(parents=True, exist_ok=True)
        bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB", **options)


def _mesh(bpy, kind: str, triangles: int):
    """A mesh of about `triangles` triangles."""
    if kind == "sphere":  # 2 · segments · (rings − 1) triangles, segments = 2 · rings
        rings = max(3, round(math.sqrt(triangles / 4)))
        bpy.ops.mesh.primitive_uv_sphere_add(segments=2 * rings, ring_count=rings)
    elif kind == "monkey":  # 968 triangles, ×4 a subdivision level
        bpy.ops.mesh.primitive_monkey_add()
        levels = max(0, round(math.log(max(triangles, 968) / 968, 4)))
        if levels:
            bpy.ops.object.modifier_add(type="SUBSURF")
            bpy.context.object.modifiers[-1].levels = levels
    else:  # a cube cut into a grid: 12 · (cuts + 1)² triangles
        bpy.ops.mesh.primitive_cube_add(size=1.5)
        cuts = max(0, round(math.sqrt(triangles / 12)) - 1)
        if cuts:
            bpy.ops.object.mode_set(mode="EDIT")
            bpy.ops.mesh.subdivide(number_cuts=cuts)
            bpy.ops.object.mode_set(mode="OBJECT")
    return bpy.context.object


def _texture_pixels(rng, size: int, name: str):
    """Smooth colour regions with fine noise: PNGs of the weight of photo textures."""
    import numpy as np

    coarse = rng.uniform(0.1, 0.9, (16, 16, 3)).astype(np.float32)
    pixels = np.kron(coarse, np.ones((size // 16, size // 16, 1), dtype=np.float32))
    pixels += rng.normal(0.0, 0.02, pixels.shape).astype(np.float32)
    if name == "normal":
        pixels = 0.5 * pixels + np.array([0.25, 0.25, 0.5], dtype=np.float32)
    return np.concatenate([pixels, np.ones((size, size, 1), dtype=np.float32)], axis=2)


def _add_map(bpy, material, name: str, pixels, size: int) -> None:
    image = bpy.data.images.new(name, size, size, alpha=False)
    image.pixels.foreach_set(pixels.ravel())
    image.file_format = "PNG"
    if name != "base_color":
        image.colorspace_settings.name = "Non-Color"
    image.pack()
    tree = material.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    texture = tree.nodes.new("ShaderNodeTexImage")
    texture.image = image
    if name == "base_color":
        tree.links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    elif name == "metallic_roughness":
        separate = tree.nodes.new("ShaderNodeSeparateColor")
        tree.links.new(texture.outputs["Color"], separate.inputs["Color"])
        tree.links.new(separate.outputs["Green"], bsdf.inputs["Roughness"])
        tree.links.new(separate.outputs["Blue"], bsdf.inputs["Metallic"])
    else:
        normal_map = tree.nodes.new("ShaderNodeNormalMap")
        tree.links.new(texture.outputs["Color"], normal_map.inputs["Color"])
        tree.links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])


def _skin(bpy, obj) -> None:
    """Two bones along the object's height, the upper one posed 60° at frame 1."""
    bpy.ops.object.armature_add(location=(0.0, 0.0, -1.0))
    armature = bpy.context.object
    bpy.ops.object.mode_set(mode="EDIT")
    lower = armature.data.edit_bones[0]
    lower.head, lower.tail = (0, 0, 0), (0, 0, 1)
    upper = armature.data.edit_bones.new("upper")
    upper.head, upper.tail, upper.parent = (0, 0, 1), (0, 0, 2), lower
    bpy.ops.object.mode_set(mode="OBJECT")
    bpy.ops.object.select_all(action="DESELECT")
    obj.select_set(True)
    armature.select_set(True)
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.parent_set(type="ARMATURE_AUTO")
    pose = armature.pose.bones["upper"]
    pose.rotation_mode = "XYZ"
    pose.rotation_euler = (1.05, 0.0, 0.0)
    pose.keyframe_insert("rotation_euler", frame=1)


def run_stage(tree: Path, arguments: list[str]) -> tuple[float, float]:
    """(CPU-seconds, wall seconds) of one `cg3d` command with `tree`'s code, its waited-for
    descendants included."""
    env = os.environ | {"PYTHONPATH": str(tree.resolve())}
    command = [sys.executable, "-c", "from cg3d.cli import main; main()", *arguments]
    start = time.perf_counter()
    with open(os.devnull, "w") as quiet, tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, env=env, stdout=quiet, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            errors.seek(0)
            sys.exit(f"{arguments[0]} failed:\n{errors.read().decode()[-3000:]}")
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--glbs", type=Path, default=Path("/tmp/bench_objaverse_glbs"))
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--points", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stages",
        nargs="+",
        default=["sample", "render"],
        help="sample (both rows), render, or one row by its name; meshes always runs",
    )
    parser.add_argument("--write-glbs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    plans = plan_objects(args.objects, args.seed)
    if args.write_glbs:
        write_glbs(args.glbs, plans)
        return
    stamp = args.glbs / "plans.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != plans:
        shutil.rmtree(args.glbs, ignore_errors=True)
        args.glbs.mkdir(parents=True)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--write-glbs", "--objects", str(args.objects),
             "--seed", str(args.seed), "--glbs", str(args.glbs)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        stamp.write_text(json.dumps(plans))
        print(f"wrote {args.objects} GLBs in {time.perf_counter() - start:.0f} s")
    sizes = [p.stat().st_size for p in args.glbs.rglob("*.glb")]
    maps = [px for plan in plans for px in plan["maps"].values()]
    print(
        f"# {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, tree {args.tree}\n"
        f"# {len(sizes)} GLBs, {sum(sizes) / len(sizes) / 2**20:.1f} MiB mean, "
        f"{sum(p['triangles'] for p in plans) / len(plans):,.0f} triangles mean, "
        f"{len(maps) / len(plans):.1f} maps of {sum(maps) / max(len(maps), 1):.0f} px mean, "
        f"{sum(p['skinned'] for p in plans)} skinned, {sum(p['draco'] for p in plans)} Draco"
    )
    scratch = Path(tempfile.mkdtemp(prefix="bench-objaverse-"))
    try:
        meshes = scratch / "meshes"
        common = ["--meshes", str(meshes), "--workers", str(args.workers)]
        stages = {
            "meshes": ["meshes", "--source", "folder", "--root", str(args.glbs),
                       "--out", str(meshes), "--workers", str(args.workers)],
            "sample --colors": ["sample", *common, "--points", str(args.points), "--colors",
                                "--out", str(scratch / "points")],
            "sample (xyz)": ["sample", *common, "--points", str(args.points),
                             "--out", str(scratch / "xyz")],
            f"render ({args.views} views)": ["render", *common, "--views", str(args.views),
                                             "--resolution", str(args.resolution),
                                             "--out", str(scratch / "renders")],
        }  # fmt: skip
        print("| stage | CPU-s per object | wall s | h for 800k on 64 cores |")
        print("|---|---|---|---|")
        total = 0.0
        for name, arguments in stages.items():
            if name != "meshes" and not {name, name.split()[0]} & set(args.stages):
                continue  # the meshes stage always runs: the others read its manifest
            cpu, wall = run_stage(args.tree, arguments)
            per_object = cpu / len(plans)
            hours = per_object * OBJECTS / CORES / 3600
            total += hours if name != "sample (xyz)" else 0.0
            print(f"| {name} | {per_object:.2f} | {wall:.0f} | {hours:.2f} |", flush=True)
        print(f"| meshes + sample --colors + render | | | {total:.2f} |")
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
