"""Small test meshes written with trimesh, and a manifest over them."""

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from cg3d.formats.manifest import MeshRecord, write_manifest
from cg3d.geometry.frame import normalization, normalize, to_canonical_axes
from cg3d.render.cameras import cameras_of, project
from cg3d.render.supervisor import BlenderWorker


def l_shape() -> trimesh.Trimesh:
    """An L made of two bars, off-centre and not unit size: views differ, normalisation matters."""
    bars = [
        trimesh.creation.box([2.0, 0.5, 0.5]),
        trimesh.creation.box([0.5, 2.0, 0.5]).apply_translation([-0.75, 1.25, 0.0]),
    ]
    return trimesh.util.concatenate(bars).apply_translation([3.0, 1.0, -2.0])


def write_meshes(folder: Path, extra: list[tuple[str, str, str]] = ()) -> list[MeshRecord]:
    """OBJ (Y up), GLB (Z up, coloured), PLY and OFF objects plus `extra` (id, file, text) files."""
    folder.mkdir(parents=True, exist_ok=True)
    l_shape().export(folder / "lshape.obj")
    cylinder = trimesh.creation.cylinder(radius=0.3, height=2.0).apply_translation([0.5, 0, 0])
    cylinder.visual.face_colors = [200, 30, 30, 255]
    cylinder.export(folder / "cylinder.glb")
    trimesh.creation.box([1.0, 2.0, 3.0]).export(folder / "box.ply")
    trimesh.creation.cone(radius=1.0, height=2.0).export(folder / "cone.off")
    records = [
        MeshRecord("lshape", "test", "lshape.obj", "l", "train"),
        MeshRecord("cylinder", "test", "cylinder.glb", "c", "train", up_axis="z"),
        MeshRecord("box", "test", "box.ply", "b", "train"),
        MeshRecord("cone", "test", "cone.off", "o", "train"),
    ]
    for object_id, name, text in extra:
        (folder / name).write_text(text)
        records.append(MeshRecord(object_id, "test", name, "x", "train"))
    write_manifest(records, folder)
    return records


def sampled_points(path: Path, up_axis: str, count: int = 500) -> np.ndarray:
    """Surface points in the shared frame, sampled the way the sample stage does it."""
    mesh = trimesh.load(path, force="mesh")
    vertices = to_canonical_axes(np.asarray(mesh.vertices, dtype=np.float64), up_axis)
    centre, scale = normalization(vertices)
    normalised = trimesh.Trimesh(normalize(vertices, centre, scale), mesh.faces, process=False)
    return np.asarray(trimesh.sample.sample_surface(normalised, count, seed=0)[0])


def render_views(path, up_axis, config, flat=False):
    """{view name: RGBA array} and the cameras of one file, rendered by a Blender worker."""
    cameras = cameras_of(config, "object")
    with BlenderWorker({**config.worker_settings(), "flat": flat}, 120.0) as worker:
        reason = worker.render("object", path, up_axis, cameras["views"])
        assert reason is None, reason
        views = {
            v["name"]: np.asarray(Image.open(worker.out_dir / f"object.{v['name']}.png"))
            for v in cameras["views"]
        }
    return views, cameras


def on_object_share(points: np.ndarray, alpha: np.ndarray, view: dict) -> float:
    """The share of `points` whose pixel in `view` the object covers (`alpha` > 0): the points
    and the views show one geometry in one frame when it is near 1 in every view."""
    rows_count, cols_count = alpha.shape
    pixels, _ = project(points, view)
    cols, rows = np.round(pixels).astype(int).T
    inside = (cols >= 0) & (cols < cols_count) & (rows >= 0) & (rows < rows_count)
    covered = np.zeros(len(points), dtype=bool)
    covered[inside] = alpha[rows[inside], cols[inside]] > 0
    return float(covered.mean())
