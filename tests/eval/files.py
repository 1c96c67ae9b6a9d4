"""Small benchmark files and shards in the real formats, written by the tests themselves."""

import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np

from cg3d.protocol import class_names


def cube(
    n: int, rng: np.random.Generator, scale=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0)
) -> np.ndarray:
    """Points on the surface of an axis-aligned box (so shapes differ by class)."""
    points = rng.uniform(-1, 1, (n, 3))
    axis = rng.integers(3, size=n)
    points[np.arange(n), axis] = np.sign(points[np.arange(n), axis])
    return points * np.array(scale) + np.array(offset)


def write_modelnet(root: Path, classes: int = 40, per_class: int = 1, n: int = 50) -> list[str]:
    """`modelnet40_normal_resampled` layout: shape names, split lists, class folders of txt."""
    rng = np.random.default_rng(0)
    dataset = f"modelnet{classes}"
    root.mkdir(parents=True, exist_ok=True)
    folders = [name.replace(" ", "_") for name in class_names(dataset)]
    (root / f"{dataset}_shape_names.txt").write_text("\n".join(folders) + "\n")
    ids = []
    for label, folder in enumerate(folders[:3]):  # boxes stretched along x differently per class
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_id = f"{folder}_{i + 1:04d}"
            box = cube(n, rng, scale=(1 + 2 * label, 1, 1))
            points = np.concatenate([box, rng.normal(size=(n, 3))], axis=1)
            np.savetxt(root / folder / f"{shape_id}.txt", points, fmt="%.6f", delimiter=",")
            ids.append(shape_id)
    (root / f"{dataset}_test.txt").write_text("\n".join(ids) + "\n")
    (root / f"{dataset}_train.txt").write_text("\n".join(ids) + "\n")
    return ids


def write_ulip_dat(path: Path, count: int = 3, n: int = 80) -> None:
    rng = np.random.default_rng(1)
    points = [
        np.concatenate([cube(n, rng), np.zeros((n, 3))], axis=1).astype(np.float32)
        for _ in range(count)
    ]
    labels = [np.array([i % 40]) for i in range(count)]
    with path.open("wb") as handle:
        pickle.dump([points, labels], handle)


def write_scanobjectnn(root: Path, relative: str, count: int = 5, n: int = 2048) -> None:
    rng = np.random.default_rng(2)
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5["data"] = np.stack([cube(n, rng, offset=(3, 0, 0)) for _ in range(count)]).astype(
            np.float32
        )
        h5["label"] = np.arange(count, dtype=np.int64) % 15


def write_shapenet55(root: Path, files: list[str], n: int = 100) -> None:
    rng = np.random.default_rng(3)
    (root / "shapenet_pc").mkdir(parents=True, exist_ok=True)
    for name in files:
        np.save(root / "shapenet_pc" / name, cube(n, rng).astype(np.float32))
    (root / "test.txt").write_text("\n".join(files) + "\n")


def write_shards(root: Path, per_class: int = 2, n: int = 64, views: int = 2) -> list[str]:
    """Real `pack` output under `root` (index.json, {train,test}/shard-*.tar): `per_class` boxes
    and planks per split, whose points, views and captions the formats' writers put in the
    stage outputs under `root/stages`. Two captions per object, so the caption gallery is small."""
    from cg3d.formats.captions import captions_writer
    from cg3d.formats.manifest import MeshRecord, write_classes, write_manifest
    from cg3d.formats.points import write_points_part
    from cg3d.formats.renders import Rendered, dumps_cameras, write_render_part
    from cg3d.params import RenderConfig
    from cg3d.pipeline.pack import PackConfig, pack_shards
    from cg3d.render.cameras import cameras_of

    classes = ["box", "plank"]
    rng = np.random.default_rng(4)
    stages = root / "stages"
    records, clouds, rendered, captions = [], [], {}, []
    for split in ("test", "train"):  # the manifest's (id) order
        for label, name in enumerate(classes):
            for i in range(per_class):
                key = f"{split}_{name}_{i}"
                records.append(MeshRecord(key, "synthetic", f"{key}.obj", name, split))
                points = cube(n, rng, scale=(1, 1 + 3 * label, 1)).astype(np.float32)
                clouds.append(points / np.linalg.norm(points, axis=1).max())
                rendered[key] = Rendered(
                    {
                        f"view_{v:02d}": solid_png((60 * label + 20 * v, 100, 200 - 60 * label))
                        for v in range(views)
                    },
                    dumps_cameras(cameras_of(RenderConfig(views=views, resolution=32), key)),
                )
                captions.append([f"a photo of a {name}", f"a {name}"])
    ids = [r.id for r in records]
    (stages / "meshes").mkdir(parents=True)
    write_manifest(records, stages / "meshes")
    write_classes(classes, stages / "meshes")
    (stages / "points").mkdir()
    write_points_part(stages / "points" / "part-00000.parquet", ids, clouds)
    (stages / "renders").mkdir()
    write_render_part(stages / "renders" / "part-00000.tar", rendered)
    (stages / "captions").mkdir()
    with captions_writer(stages / "captions") as writer:
        writer.write(ids, captions)
    pack_shards(
        *(stages / s for s in ("meshes", "points", "renders", "captions")), root, PackConfig(4)
    )
    return classes


def solid_png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_openshape(root: Path, categories: list[str], per_class: int = 1, n: int = 40) -> Path:
    """OpenShape's layout: split JSON naming the authors' mount, per-shape pickled-dict .npy."""
    rng = np.random.default_rng(5)
    entries = []
    for c, category in enumerate(categories):
        for i in range(per_class):
            uid = f"{c:04d}{i:02d}aa"
            folder = root / "objaverse-processed" / "000-001"
            folder.mkdir(parents=True, exist_ok=True)
            xyz = cube(n, rng, scale=(1 + c % 5, 1, 1)).astype(np.float32)
            rgb = rng.uniform(0, 1, (n, 3)).astype(np.float32)
            np.save(folder / f"{uid}.npy", {"xyz": xyz, "rgb": rgb}, allow_pickle=True)
            entries.append(
                {
                    "category": category,
                    "uid": uid,
                    "data_path": f"/mnt/data/objaverse-processed/000-001/{uid}.npy",
                    "group": "test",
                }
            )
    (root / "lvis.json").write_text(json.dumps(entries))
    return root


def write_modelnet_shapes(root: Path, shapes: dict[str, list[np.ndarray]]) -> list[str]:
    """`modelnet40_normal_resampled` layout holding the given (N, 6) x,y,z,nx,ny,nz arrays,
    by class folder (`night_stand`), written as the release writes them (6 decimals, commas)."""
    root.mkdir(parents=True, exist_ok=True)
    folders = [name.replace(" ", "_") for name in class_names("modelnet40")]
    (root / "modelnet40_shape_names.txt").write_text("\n".join(folders) + "\n")
    ids = []
    for folder, clouds in shapes.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, cloud in enumerate(clouds):
            shape_id = f"{folder}_{i + 1:04d}"
            np.savetxt(root / folder / f"{shape_id}.txt", cloud, fmt="%.6f", delimiter=",")
            ids.append(shape_id)
    (root / "modelnet40_test.txt").write_text("\n".join(ids) + "\n")
    (root / "modelnet40_train.txt").write_text("\n".join(ids) + "\n")
    return ids


class RunsCode:
    """Unpickling this makes a folder: proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def write_outside(folder: Path) -> Path:
    """`folder` made beside a benchmark root, holding what a reader must never open: pickles
    that run code (evil.npy, evil.pickle; they make PICKLE_RAN), a good-looking shape
    (shape.npy, a pickled dict), and well-formed clouds (cloud.npy, cloud.txt)."""
    folder.mkdir()
    evil = pickle.dumps(RunsCode(folder / "PICKLE_RAN"))
    (folder / "evil.npy").write_bytes(evil)
    (folder / "evil.pickle").write_bytes(evil)
    xyz = cube(40, np.random.default_rng(0)).astype(np.float32)
    np.save(folder / "shape.npy", {"xyz": xyz}, allow_pickle=True)
    np.save(folder / "cloud.npy", xyz)
    np.savetxt(folder / "cloud.txt", np.concatenate([xyz, xyz], 1), delimiter=",")
    return folder
