import json
from pathlib import Path

import numpy as np
import pytest

from cg3d.errors import UsageError
from cg3d.formats.manifest import CLASSES_NAME, mesh_file, read_manifest
from cg3d.geometry.meshio import load_mesh
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from cg3d.protocol import class_names
from tests.pipeline.sources.helpers import box, write_off


def make_modelnet(root: Path) -> None:
    write_off(root / "chair/train/chair_0001.off", box((1, 1, 2)), malformed_header=True)
    write_off(root / "chair/test/chair_0890.off", box((1, 2, 2)))
    write_off(
        root / "night_stand/train/night_stand_0001.off", box((2, 1, 1)), malformed_header=True
    )
    (root / "night_stand/test").mkdir(parents=True)
    (root / "night_stand/test/night_stand_0201.off").write_text("OFF\n")  # truncated
    (root / "README.txt").write_text("ModelNet10\n")


def test_layout_splits_names_and_up_axis(tmp_path: Path) -> None:
    root, out = tmp_path / "ModelNet10", tmp_path / "out"
    make_modelnet(root)
    build_manifest(MeshesConfig(source="modelnet", root=str(root), workers=1), out)
    records = {Path(r.path).name: r for r in read_manifest(out)}
    assert set(records) == {
        "chair_0001.off", "chair_0890.off", "night_stand_0001.off", "night_stand_0201.off"
    }  # fmt: skip
    assert records["chair_0001.off"].split == "train" and records["chair_0890.off"].split == "test"
    assert records["night_stand_0001.off"].class_name == "night stand"
    assert records["night_stand_0201.off"].status == "unreadable"
    assert all(r.up_axis == "z" and r.source == "modelnet" for r in records.values())
    assert records["chair_0001.off"].status == "ok"
    # The malformed-header file is read with its real geometry.
    mesh = load_mesh(mesh_file(out, records["chair_0001.off"]))
    np.testing.assert_allclose(np.ptp(mesh.vertices, axis=0), [1, 1, 2])
    # Benchmark order, the full list: class indices match published results.
    assert json.loads((out / CLASSES_NAME).read_text()) == class_names("modelnet10")


def test_modelnet40_class_list_when_a_class_is_not_in_modelnet10(tmp_path: Path) -> None:
    root = tmp_path / "ModelNet40"
    write_off(root / "flower_pot/train/flower_pot_0001.off", box())
    write_off(root / "chair/test/chair_0001.off", box((1, 1, 3)))
    build_manifest(MeshesConfig(source="modelnet", root=str(root), workers=1), tmp_path / "out")
    classes = json.loads((tmp_path / "out" / CLASSES_NAME).read_text())
    assert classes == class_names("modelnet40")
    assert {r.class_name for r in read_manifest(tmp_path / "out")} == {"flower pot", "chair"}


def test_per_class_caps_each_split(tmp_path: Path) -> None:
    root = tmp_path / "ModelNet10"
    for i in range(4):
        write_off(root / f"bed/train/bed_{i:04d}.off", box((1, 1, 1 + i)))
    config = MeshesConfig(source="modelnet", root=str(root), per_class=2, workers=1)
    build_manifest(config, tmp_path / "out")
    assert len(read_manifest(tmp_path / "out")) == 2


def test_a_folder_that_is_no_modelnet_class_is_named(tmp_path: Path) -> None:
    root = tmp_path / "ModelNet10"
    write_off(root / "spaceship/train/x.off", box())
    with pytest.raises(UsageError, match="^--root: spaceship"):
        build_manifest(MeshesConfig(source="modelnet", root=str(root)), tmp_path / "out")
