"""Small mesh files in the real layouts, written by the tests themselves."""

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import trimesh

from cg3d.formats.manifest import MANIFEST_NAME


def box(extents=(1.0, 1.0, 1.0)) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extents)


def write_off(path: Path, mesh: trimesh.Trimesh, malformed_header: bool = False) -> Path:
    """An OFF file; `malformed_header` writes ModelNet's `OFF490 518 0` style first line."""
    counts = f"{len(mesh.vertices)} {len(mesh.faces)} 0"
    lines = [f"OFF{counts}"] if malformed_header else ["OFF", counts]
    lines += [" ".join(f"{c:.6f}" for c in v) for v in mesh.vertices]
    lines += ["3 " + " ".join(str(i) for i in f) for f in mesh.faces]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mesh(path: Path, mesh: trimesh.Trimesh) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path)
    return path


def manifest_rows(out_dir: Path) -> list[dict]:
    return pq.read_table(out_dir / MANIFEST_NAME).to_pylist()


def make_glbs(root: Path) -> None:
    """Objaverse's layout: four GLBs (uids aa11..dd44) of boxes lifted by a scene node."""
    for i, uid in enumerate(["aa11", "bb22", "cc33", "dd44"]):
        scene = trimesh.Scene()
        lift = trimesh.transformations.translation_matrix([0.0, 2.0 + i, 0.0])
        scene.add_geometry(box((1, 1, 1 + i)), transform=lift)
        folder = root / "glbs" / f"000-00{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        scene.export(folder / f"{uid}.glb")


TAXONOMY = [
    {"synsetId": "03211117", "name": "display,video display", "children": [], "numInstances": 3},
    {
        "synsetId": "02747177",
        "name": "ashcan,trash can,garbage can",
        "children": [],
        "numInstances": 2,
    },
    {"synsetId": "03001627", "name": "chair", "children": ["04331277"], "numInstances": 1},
    {
        "synsetId": "04331277",
        "name": "straight chair,side chair",
        "children": [],
        "numInstances": 0,
    },
]


def make_shapenet(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "taxonomy.json").write_text(json.dumps(TAXONOMY))
    models = {"03211117": ["m1", "m2", "m3"], "02747177": ["a1", "a2"], "03001627": ["c1"]}
    for k, (synset, names) in enumerate(models.items()):
        for i, model in enumerate(names):
            path = root / synset / model / "models" / "model_normalized.obj"
            write_mesh(path, box((1, 1 + k, 1 + i)))
            (path.parent / "model_normalized.mtl").write_text("newmtl m\n")


def mesh_files(root: Path, source: str, names: list[str]) -> list[Path]:
    """Empty mesh files in `source`'s layout (a listing reads no file), one per name."""
    paths = {
        "folder": [root / "chair" / "deep" / f"{name}.obj" for name in names],
        "objaverse": [root / "glbs" / f"000-00{k % 2}" / f"{n}.glb" for k, n in enumerate(names)],
        "modelnet": [root / "chair" / "train" / f"chair_{name}.off" for name in names],
    }[source]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    if source == "objaverse":
        (root / "annotations.json").write_text(json.dumps({"mug": [p.stem for p in paths]}))
    return paths


def plant_links(tmp_path: Path, root: Path, source: str, out: Path) -> None:
    """Beside the plain files: a link to a file inside the root, one to a file outside it, a
    broken link, a symlinked subfolder (inside the root) and, when the output folder is
    inside the root, a file in it (stored relative to it)."""
    first = mesh_files(root, source, ["0001"])[0]
    outside = tmp_path / "outside" / first.name.replace("0001", "0009")
    outside.parent.mkdir(exist_ok=True)
    outside.touch()
    (first.parent / first.name.replace("0001", "0002")).symlink_to(first)
    (first.parent / first.name.replace("0001", "0003")).symlink_to(outside)
    (first.parent / first.name.replace("0001", "0004")).symlink_to(root / "gone.obj")
    if source == "objaverse":
        stems = ["0001", "0002", "0003", "0004", "0005"]
        (root / "annotations.json").write_text(json.dumps({"mug": stems}))
    if source == "modelnet":  # a class folder that is a link to another is entered
        (root / "sofa").symlink_to(root / "chair", target_is_directory=True)
    else:
        (first.parent / "linked").symlink_to(first.parent, target_is_directory=True)
    if out.is_relative_to(root):
        inner = out / first.name.replace("0001", "0005")
        inner.parent.mkdir(parents=True, exist_ok=True)
        inner.touch()


def count_path_resolution(monkeypatch) -> dict[str, int]:
    counts = {"resolve": 0, "lstat": 0, "stat": 0}
    real = {"lstat": os.lstat, "stat": os.stat, "resolve": Path.resolve}

    def counted(name):
        def call(*args, **kwargs):
            counts[name] += 1
            return real[name](*args, **kwargs)

        return call

    monkeypatch.setattr(os, "lstat", counted("lstat"))
    monkeypatch.setattr(os, "stat", counted("stat"))
    monkeypatch.setattr(Path, "resolve", counted("resolve"))
    return counts


def nested_past_path_max(folder: Path, name: str, data: bytes, length: int = 4200) -> Path:
    """`folder`/eee…/eee…/…/`name` holding `data`, its folders nested until their path is
    `length` bytes (by default past PATH_MAX, 4096 bytes): made through folder descriptors, as
    no call takes such a path whole. Returns the file's path."""
    fd, path = os.open(folder, os.O_RDONLY), folder
    try:
        while (room := length - len(os.fsencode(path)) - 1) > 0:
            step = "e" * min(250, room)
            os.mkdir(step, dir_fd=fd)
            inner = os.open(step, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, path = inner, path / step
        file = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(file, data)
        os.close(file)
    finally:
        os.close(fd)
    return path / name
