import json
from pathlib import Path

import numpy as np
import pytest

from cg3d.errors import UsageError
from cg3d.formats.manifest import CLASSES_NAME, mesh_file, read_manifest
from cg3d.geometry.meshio import load_mesh
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.sources.helpers import make_glbs


def test_lvis_style_annotations(tmp_path: Path) -> None:
    root, out = tmp_path / "objaverse", tmp_path / "out"
    make_glbs(root)
    (root / "annotations.json").write_text(json.dumps({"mug": ["aa11", "bb22"], "chair": ["cc33"]}))
    build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), out)
    records = {Path(r.path).stem: r for r in read_manifest(out)}
    assert set(records) == {"aa11", "bb22", "cc33"}  # dd44 has no annotation
    assert records["cc33"].class_name == "chair" and records["aa11"].class_name == "mug"
    assert all(r.up_axis == "y" and r.status == "ok" and r.name == "" for r in records.values())
    assert json.loads((out / CLASSES_NAME).read_text()) == ["chair", "mug"]
    assert {records["aa11"].split, records["bb22"].split} == {"train", "test"}
    # Scene transforms applied: the node lifted the box by 2.
    mesh = load_mesh(mesh_file(out, records["aa11"]))
    np.testing.assert_allclose(mesh.vertices[:, 1].min(), 1.5)


def test_uid_map_with_free_text_names(tmp_path: Path) -> None:
    root = tmp_path / "objaverse"
    make_glbs(root)
    labels = {"aa11": "mug", "bb22": {"category": "lamp", "name": "Old brass lamp"}}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    config = MeshesConfig(
        source="objaverse", root=str(root), annotations=str(tmp_path / "labels.json")
    )
    build_manifest(config, tmp_path / "out")
    records = {Path(r.path).stem: r for r in read_manifest(tmp_path / "out")}
    assert (records["aa11"].class_name, records["aa11"].name) == ("mug", "")
    assert (records["bb22"].class_name, records["bb22"].name) == ("lamp", "Old brass lamp")


def test_annotation_problems_name_the_option(tmp_path: Path) -> None:
    root = tmp_path / "objaverse"
    make_glbs(root)
    with pytest.raises(UsageError, match="^--annotations: no annotation file"):
        build_manifest(MeshesConfig(source="objaverse", root=str(root)), tmp_path / "out")
    (root / "annotations.json").write_text(json.dumps({"zz99": "mug"}))
    with pytest.raises(UsageError, match="^--annotations: none of the mesh files"):
        build_manifest(MeshesConfig(source="objaverse", root=str(root)), tmp_path / "out")
