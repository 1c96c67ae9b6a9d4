"""Fixtures of the eval tests: a tiny checkpoint and small benchmark files in the real formats."""

import pickle
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cg3d.protocol import class_names


def cube(
    n: int, rng: np.random.Generator, scale=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0)
) -> np.ndarray:
    """Points on the surface of an axis-aligned box (so shapes differ by class)."""
    points = rng.uniform(-1, 1, (n, 3))
    axis = rng.integers(3, size=n)
    points[np.arange(n), axis] = np.sign(points[np.arange(n), axis])
    return points * np.array(scale) + np.array(offset)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from cg3d.models.checkpoint import save_checkpoint
    from cg3d.models.model import build_model, tiny_model_config

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    # Seeded: the same random weights every run, whatever ran before (a chance init once left
    # the linear probe test one shape short of 100%).
    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        save_checkpoint(
            path, build_model(tiny_model_config(n_points=64, classes=["cube", "sphere", "cone"]))
        )
    return path


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
    """Shards in the DESIGN.md layout: `{split}/shard-000000.tar` + `index.json` with the classes."""
    import io
    import json
    import tarfile

    from PIL import Image

    classes = ["box", "plank"]
    rng = np.random.default_rng(4)
    index = {"classes": classes, "splits": {}}
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        tar_path = root / split / "shard-000000.tar"
        count = 0
        with tarfile.open(tar_path, "w") as tar:

            def add(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

            for label, name in enumerate(classes):
                for i in range(per_class):
                    key = f"{split}_{name}_{i}"
                    points = cube(n, rng, scale=(1, 1 + 3 * label, 1)).astype(np.float32)
                    points /= np.linalg.norm(points, axis=1).max()
                    buffer = io.BytesIO()
                    np.save(buffer, points)
                    add(f"{key}.points.npy", buffer.getvalue())
                    for v in range(views):
                        image = Image.new(
                            "RGB", (32, 32), (60 * label + 20 * v, 100, 200 - 60 * label)
                        )
                        png = io.BytesIO()
                        image.save(png, format="PNG")
                        add(f"{key}.view_{v:02d}.png", png.getvalue())
                    captions = [f"a photo of a {name}", f"a {name}"]
                    add(f"{key}.captions.json", json.dumps(captions).encode())
                    add(f"{key}.cls", str(label).encode())
                    add(
                        f"{key}.meta.json",
                        json.dumps({"class_name": name, "split": split}).encode(),
                    )
                    count += 1
        index["splits"][split] = {
            "shards": [f"{split}/shard-000000.tar"],
            "counts": [count],
            "samples": count,
        }
    (root / "index.json").write_text(json.dumps(index))
    return classes
