"""The leakage audit finds planted duplicates and no false pair among distinct shapes."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.eval.audit import audit, audit_lists, read_audit, shape_descriptor
from cg3d.formats.manifest import MeshRecord, write_classes, write_manifest
from cg3d.geometry.frame import normalization
from cg3d.geometry.sampling import sample_surface
from cg3d.pipeline.sources.synthetic import GENERATORS, make_object
from tests.pipeline.fakes import count_shard_reads, fake_pipeline, fake_renders

CLASSES = sorted(GENERATORS)


def surface_points(class_name: str, index: int, count: int, seed: int) -> np.ndarray:
    vertices, faces = make_object(class_name, index, 0)
    centre, scale = normalization(vertices)
    rng = np.random.default_rng(seed)
    return sample_surface((vertices - centre) * scale, faces, count, rng, False)


def turned(points: np.ndarray, angle: float, scale: float, noise: float, seed: int):
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    noisy = points + np.random.default_rng(seed).normal(scale=noise, size=points.shape)
    return (noisy @ rotation.T * scale + [0.3, -0.2, 0.1]).astype(np.float32)


def write_shards(root: Path, objects: dict[str, tuple[str, np.ndarray, str, str]]) -> Path:
    """Pack output of `objects` {id: (split, points, mesh path, sha256)} (classes: CLASSES)."""
    from cg3d.formats.captions import captions_writer
    from cg3d.formats.points import write_points_part
    from cg3d.pipeline.pack import PackConfig, pack_shards

    ids = sorted(objects)
    records = [
        MeshRecord(i, "objaverse", objects[i][2], CLASSES[k % len(CLASSES)], objects[i][0])
        for k, i in enumerate(ids)
    ]
    for record in records:
        record.sha256 = objects[record.id][3]
    stages = root / "stages"
    (stages / "meshes").mkdir(parents=True)
    write_manifest(records, stages / "meshes")
    write_classes(CLASSES, stages / "meshes")
    (stages / "points").mkdir()
    write_points_part(stages / "points" / "part-00000.parquet", ids, [objects[i][1] for i in ids])
    fake_renders(stages / "renders", ids, views=1)
    (stages / "captions").mkdir()
    with captions_writer(stages / "captions") as writer:
        writer.write(ids, [["a thing"]] * len(ids))
    stage_dirs = (stages / s for s in ("meshes", "points", "renders", "captions"))
    pack_shards(*stage_dirs, root / "shards", PackConfig(shard_size=8, workers=1))
    return root / "shards"


def test_descriptor_ignores_resampling_rotation_scale_and_noise():
    original = shape_descriptor(surface_points("chair", 0, 4096, 1))
    copy = shape_descriptor(turned(surface_points("chair", 0, 8192, 2), 1.1, 2.5, 0.004, 3))
    other = shape_descriptor(surface_points("bed", 0, 4096, 1))
    assert np.linalg.norm(original - copy) < 0.04 < np.linalg.norm(original - other)


def test_audit_finds_planted_duplicates_and_no_false_pairs(tmp_path):
    train, test = {}, {}
    for k, name in enumerate(CLASSES):  # one distinct object per class on each side
        train[f"train_{k}"] = ("train", surface_points(name, 0, 4096, k), f"m/t{k}.glb", f"h{k}")
        test[f"test_{k}"] = ("test", surface_points(name, 1, 4096, 50 + k), f"m/s{k}.glb", f"g{k}")
    # Planted: the same file renamed (same sha256, another name) ...
    test["test_renamed"] = ("test", surface_points("sofa", 3, 4096, 7), "m/renamed.glb", "h0")
    # ... and the same mesh as train_2, rotated about +Y, rescaled, resampled and noised.
    moved = turned(surface_points(CLASSES[2], 0, 8192, 99), 2.0, 0.4, 0.003, 5)
    test["test_moved"] = ("test", moved, "m/moved.glb", "zz")
    train_shards = write_shards(tmp_path / "a", train)
    test_shards = write_shards(tmp_path / "b", test)
    summary = audit(str(train_shards), tmp_path / "audit", test_shards=str(test_shards))
    with (tmp_path / "audit" / "pairs.csv").open() as handle:
        pairs = {(r["train_key"], r["test_key"], r["kind"]) for r in csv.DictReader(handle)}
    assert pairs == {
        ("train_0", "test_renamed", "same_file"),
        ("train_2", "test_moved", "same_shape"),
    }
    assert summary["pairs"] == {"same_file": 1, "same_uid": 0, "same_shape": 1}
    assert summary["test_shapes"] == len(test) and summary["leaked_test_shapes"] == 2
    assert (tmp_path / "audit" / "leaked_train.txt").read_text() == "train_0\ntrain_2\n"
    assert read_audit(tmp_path / "audit")["pairs"] == summary["pairs"]


def test_audit_against_a_benchmark_matches_uids(tmp_path):
    from tests.eval.files import write_openshape

    root = write_openshape(tmp_path / "openshape", ["mug"])  # one shape, uid 000000aa
    points = np.load(root / "objaverse-processed/000-001/000000aa.npy", allow_pickle=True).item()
    train = {"t0": ("train", points["xyz"] * 3.0, "glbs/000-001/000000aa.glb", "h")}
    shards = write_shards(tmp_path / "a", train)
    summary = audit(
        str(shards), tmp_path / "audit", dataset="objaverse-lvis", root=str(root), allow_pickle=True
    )
    assert summary["pairs"]["same_uid"] == 1 and summary["pairs"]["same_shape"] == 0
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved["test"].startswith("objaverse-lvis openshape")


def test_audit_options_are_one_line_errors(tmp_path):
    with pytest.raises(UsageError, match="either --test"):
        audit("x", tmp_path, test_shards="y", dataset="modelnet40")
    with pytest.raises(UsageError, match="--audit: no audit.json"):
        read_audit(tmp_path)


# Lines as CG3D's data/shapenet_render/train_img.txt and Point-BERT's ShapeNet-55 test.txt
# write them: <synsetId>-<modelId>.npy; modelIds of 32 or 31 hex digits or uuid-like.
TRAIN_IMG = """04379243-8374ea1c4c032ec8488ef35e8e3ee601.npy
04256520-621dab02dc0ac842e7891ff53b0e70d.npy
03001627-u6028f63e-4111-4412-9098-fe5f4f0c7c83.npy
04401088-89f17a3563941ba9f2fdbae39bae1eff.npy
03759954-109f1779a6993782f6426d6e3b63c5ce.npy
"""
TEST_TXT = """03759954-109f1779a6993782f6426d6e3b63c5ce.npy
03759954-b726f3df205d3b5911daf38720b2dbe4.npy
03001627-u6028f63e-4111-4412-9098-fe5f4f0c7c83.npy
02992529-89f17a3563941ba9f2fdbae39bae1eff.npy
04330267-aa0f6ff9f592b327eadb8f8b5bc7d9a5.npy
"""


def test_two_shapenet_lists_are_audited_by_id(tmp_path):
    (tmp_path / "train_img.txt").write_text(TRAIN_IMG)
    (tmp_path / "test.txt").write_text(TEST_TXT)
    out = tmp_path / "audit"
    result = CliRunner().invoke(
        app,
        ["audit", "--train-list", str(tmp_path / "train_img.txt")]
        + ["--test-list", str(tmp_path / "test.txt"), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "audit.json").read_text())
    # two ids in both lists (a microphone, a uuid-like chair); the telephone filed under
    # cellular telephone in the test list is the same model under another synset
    assert summary["pairs"] == {"same_id": 2, "same_model": 1}
    assert (summary["train_shapes"], summary["test_shapes"], summary["leaked_test_shapes"]) == (
        5,
        5,
        3,
    )
    with (out / "pairs.csv").open() as handle:
        pairs = [(r["train_key"], r["test_key"], r["kind"]) for r in csv.DictReader(handle)]
    assert pairs == [
        ("03759954-109f1779a6993782f6426d6e3b63c5ce",) * 2 + ("same_id",),
        ("03001627-u6028f63e-4111-4412-9098-fe5f4f0c7c83",) * 2 + ("same_id",),
        (
            "04401088-89f17a3563941ba9f2fdbae39bae1eff",
            "02992529-89f17a3563941ba9f2fdbae39bae1eff",
            "same_model",
        ),
    ]
    assert (out / "leaked_test.txt").read_text().splitlines()[0] == (
        "02992529-89f17a3563941ba9f2fdbae39bae1eff"
    )
    assert read_audit(out)["pairs"] == {"same_id": 2, "same_model": 1}  # as eval reads it


def test_shapenet_list_mistakes_are_one_line(tmp_path):
    (tmp_path / "train_img.txt").write_text(TRAIN_IMG + "chair/model_normalized.obj\n")
    (tmp_path / "test.txt").write_text(TEST_TXT)
    with pytest.raises(UsageError, match=r"--train-list: .*train_img.txt line 6 is not"):
        audit_lists(tmp_path / "train_img.txt", tmp_path / "test.txt", tmp_path / "o")
    with pytest.raises(UsageError, match="--test-list: no such file"):
        audit_lists(tmp_path / "test.txt", tmp_path / "absent.txt", tmp_path / "o")
    for arguments, message in (
        (["--train-list", "a.txt"], "--train-list and --test-list go together"),
        (["--train-list", "a", "--test-list", "b", "--train", "s"], "give no --train"),
        ([], "give --train SHARDS"),
    ):
        result = CliRunner().invoke(app, ["audit", "--out", str(tmp_path / "o"), *arguments])
        assert isinstance(result.exception, UsageError) and message in str(result.exception)


def test_a_shapenet_list_that_is_a_fifo_or_folder_is_named_so_and_never_opened(tmp_path):
    """Before: "no such file" for a FIFO or a folder that exists (misleading)."""
    import os

    (tmp_path / "test.txt").write_text(TEST_TXT)
    os.mkfifo(tmp_path / "fifo.txt")
    for path in (tmp_path / "fifo.txt", tmp_path):
        with pytest.raises(UsageError, match=f"^--train-list: {path}: not a regular file$"):
            audit_lists(path, tmp_path / "test.txt", tmp_path / "o")


def test_the_audit_reads_no_view(tmp_path, monkeypatch):
    """The audit compares points and file identities: it read every view of every shard too
    (most of an Objaverse shard set's hundreds of GB). It seeks over them now."""
    from cg3d.eval.audit import shard_shapes
    from cg3d.formats.shards import Skipped

    fake_pipeline(
        tmp_path, per_class=4, shard_size=3, views=4, n=64
    )  # views: 12 kB a sample, points 1
    read = count_shard_reads(monkeypatch)
    skipped = Skipped()
    shapes = list(shard_shapes(str(tmp_path / "shards"), "train", skipped))
    assert shapes and skipped.total == 0 and all(len(s.points) == 64 for s in shapes)
    size = sum(p.stat().st_size for p in (tmp_path / "shards" / "train").glob("*.tar"))
    assert 0 < sum(read) < size / 2, (sum(read), size)  # every byte, before
