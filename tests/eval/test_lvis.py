"""Objaverse-LVIS zero-shot: from our own shards of LVIS GLBs, and from OpenShape's files."""

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cg3d.errors import UsageError
from cg3d.eval.protocols import Protocol
from cg3d.eval.readers import open_benchmark
from cg3d.eval.zeroshot import ZeroShotConfig, cached_text_features, top_confusions, zeroshot
from tests.eval.files import write_openshape
from tests.formats.npyfiles import ABSURD, npy_claiming
from tests.pipeline.disks import mounted


def test_openshape_files_need_allow_pickle(tmp_path):
    root = write_openshape(tmp_path / "openshape", ["mug", "chair"])
    with pytest.raises(UsageError, match="--allow-pickle"):
        open_benchmark("objaverse-lvis", root)


def test_openshape_reader_labels_locates_and_skips(tmp_path):
    root = write_openshape(tmp_path / "openshape", ["mug", "chair", "baseball_bat"], per_class=2)
    entries = json.loads((root / "lvis.json").read_text())
    entries.append({"category": "mug", "uid": "gone", "data_path": "/mnt/x/gone.npy"})
    (root / "lvis.json").write_text(json.dumps(entries))
    benchmark = open_benchmark("objaverse-lvis", root, allow_pickle=True)
    assert benchmark.classes == ["baseball_bat", "chair", "mug"]  # sorted, as OpenShape labels
    shapes = list(benchmark.shapes())
    assert benchmark.skipped() == 1  # the missing file, counted instead of a traceback
    labels = {shape.key: shape.label for shape in shapes}
    assert labels["000000aa"] == 2 and labels["000100aa"] == 1 and labels["000200aa"] == 0
    first = shapes[0]
    stored = np.load(root / "objaverse-processed/000-001/000000aa.npy", allow_pickle=True).item()
    # xyz as stored (Y up, no swap), and the file's rgb
    np.testing.assert_array_equal(first.points, stored["xyz"])
    np.testing.assert_array_equal(first.colors, stored["rgb"])


def test_zeroshot_on_openshape_lvis_reports_top3_and_confusion_table(tmp_path, tiny_checkpoint):
    categories = [f"class_{i:03d}" for i in range(101)]  # above the plot's limit
    root = write_openshape(tmp_path / "openshape", categories)
    config = ZeroShotConfig(
        dataset="objaverse-lvis", root=str(root), allow_pickle=True, batch_size=64, text_cache=""
    )
    metrics = zeroshot(tiny_checkpoint, tmp_path / "out", config)
    assert metrics["n_shapes"] == 101 and metrics["dataset"] == "objaverse-lvis"
    assert metrics["top1"] <= metrics["top3"] <= metrics["top5"]
    assert metrics["audit"] == "none"
    assert not (tmp_path / "out" / "confusion.png").exists()
    with (tmp_path / "out" / "predictions.csv").open() as handle:
        mistakes = sum(row["actual"] != row["predicted"] for row in csv.DictReader(handle))
    with (tmp_path / "out" / "top_confusions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    counts = [int(r["count"]) for r in rows]
    assert counts == sorted(counts, reverse=True) and all(
        r["actual"] != r["predicted"] for r in rows
    )
    if len(rows) < 100:  # every mistake is in the table
        assert sum(counts) == mistakes


def test_top_confusions_orders_mistakes():
    confusion = np.array([[5, 3, 0], [1, 2, 0], [0, 4, 0]])
    rows = top_confusions(confusion, ["a", "b", "c"], top=10)
    assert [(r["actual"], r["predicted"], r["count"]) for r in rows] == [
        ("c", "b", 4),
        ("a", "b", 3),
        ("b", "a", 1),
    ]
    assert rows[1]["share_of_actual"] == 37.5


class CountingTextModel:
    """A text model with a CLIP identity; counts the prompts it encodes."""

    config = {
        "clip_pretrained_loaded": True,
        "clip_model": "ViT-X",
        "clip_weights": {"tag": "fake"},
    }

    def __init__(self):
        self.encoded = 0

    def encode_text(self, prompts):
        self.encoded += len(prompts)
        return torch.nn.functional.normalize(torch.randn(len(prompts), 8), dim=-1)

    def device(self):
        return torch.device("cpu")


def test_class_features_are_encoded_once_and_cached(tmp_path):
    model = CountingTextModel()
    classes = [f"c{i}" for i in range(300)]
    two = Protocol(name="two", description="", templates=("a {}", "the {}"))
    first = cached_text_features(model, classes, two, tmp_path / "cache")
    assert model.encoded == 600
    again = cached_text_features(model, classes, two, tmp_path / "cache")
    assert model.encoded == 600  # read back, not encoded
    torch.testing.assert_close(first, again)
    one = replace(two, templates=("a {}",))
    cached_text_features(model, classes, one, tmp_path / "cache")  # other templates
    assert model.encoded == 900


def test_a_damaged_or_planted_cache_entry_is_encoded_anew(tmp_path):
    """The cache folder is shared: an entry with a header claiming 10^12 rows was a 12 TB
    allocation, an object array a traceback, NaN rows NaN scores with exit 0."""
    model = CountingTextModel()
    classes = ["a", "b"]
    two = Protocol(name="two", description="", templates=("a {}", "the {}"))
    cached_text_features(model, classes, two, tmp_path)
    (entry,) = tmp_path.glob("*.npy")
    good = np.load(entry)
    for damage in (
        lambda: entry.write_bytes(npy_claiming(ABSURD)),
        lambda: np.save(entry, np.array([{"x": 1}] * 2, dtype=object), allow_pickle=True),
        lambda: np.save(entry, np.full((2, 8), np.nan, np.float32)),
        lambda: np.save(entry, good[:, :, None]),
    ):
        damage()
        encoded = model.encoded
        features = cached_text_features(model, classes, two, tmp_path)
        assert model.encoded == encoded + 4 and torch.isfinite(features).all()
        assert np.isfinite(np.load(entry)).all()  # and the entry rewritten


def make_lvis_shards(tmp_path: Path) -> Path:
    """LVIS GLBs (objaverse's glbs/000-XXX layout) → meshes → sample → caption → pack (views
    faked: rendering needs Blender)."""
    from cg3d.formats.manifest import manifest_rows
    from cg3d.params import CaptionConfig, MeshesConfig, PackConfig, SampleConfig
    from cg3d.pipeline.captions import caption_objects
    from cg3d.pipeline.pack import pack_shards
    from cg3d.pipeline.sample import sample_points
    from cg3d.pipeline.sources import build_manifest
    from tests.pipeline.fakes import fake_renders
    from tests.pipeline.sources.helpers import make_glbs

    root = tmp_path / "objaverse"
    make_glbs(root)
    annotations = tmp_path / "lvis-annotations.json"
    annotations.write_text(json.dumps({"coffee_mug": ["aa11", "bb22"], "chair": ["cc33", "dd44"]}))
    meshes = tmp_path / "meshes"
    build_manifest(
        MeshesConfig(source="objaverse", root=str(root), annotations=str(annotations), workers=1),
        meshes,
    )
    sample_points(meshes, tmp_path / "points", SampleConfig(points=64, workers=1))
    ids = [row["id"] for row in manifest_rows(meshes, ["id"])]
    fake_renders(tmp_path / "renders", ids)
    caption_objects(meshes, tmp_path / "captions", CaptionConfig())
    stages = (tmp_path / s for s in ("points", "renders", "captions", "shards"))
    pack_shards(meshes, *stages, PackConfig(shard_size=2, workers=1))
    return tmp_path / "shards"


def test_zeroshot_on_our_lvis_shards_uses_every_split(tmp_path, tiny_checkpoint):
    shards = make_lvis_shards(tmp_path)
    benchmark = open_benchmark("objaverse-lvis", shards)
    assert benchmark.classes == ["chair", "coffee_mug"]
    assert benchmark.size == 4 and len(list(benchmark.shapes())) == 4  # train and test
    from cg3d.eval.audit import audit

    audited = audit(str(shards), tmp_path / "audit", test_shards=str(shards))
    config = ZeroShotConfig(
        dataset="objaverse-lvis", root=str(shards), text_cache="", audit=str(tmp_path / "audit")
    )
    metrics = zeroshot(tiny_checkpoint, tmp_path / "out", config)
    assert metrics["n_shapes"] == 4 and "test+train" in metrics["variant"]
    assert metrics["audit"]["folder"] == str(tmp_path / "audit")  # the metrics name the audit
    assert metrics["audit"]["pairs"] == audited["pairs"]
    assert (tmp_path / "out" / "confusion.png").is_file()  # few classes: the plot


def test_a_hostile_openshape_file_is_one_skipped_shape_and_nothing_is_unpickled_first(
    tmp_path, tiny_checkpoint, monkeypatch, caplog
):
    """With --allow-pickle: a plain array whose header claims (10^12, 3) was a MemoryError
    traceback (np.load allocated 12 TB) that ended the eval; an object array that is not the
    0-d pickled dict, or a file too large to be a shape, is refused before it is unpickled."""
    from cg3d.eval import readers
    from tests.eval.files import RunsCode

    root = write_openshape(tmp_path / "openshape", ["mug", "chair", "cup", "bat", "bowl"])
    folder = root / "objaverse-processed" / "000-001"
    (folder / "000000aa.npy").write_bytes(npy_claiming(ABSURD))
    ran = tmp_path / "PICKLE_RAN"
    np.save(folder / "000100aa.npy", np.array([RunsCode(ran)] * 2), allow_pickle=True)
    big = np.random.default_rng(0).uniform(0, 1, (2, 4000, 3)).astype(np.float32)
    np.save(folder / "000200aa.npy", {"xyz": big[0], "rgb": big[1]}, allow_pickle=True)
    # between a 40-point shape file (~1 KB) and the 4,000-point one (~96 KB)
    monkeypatch.setattr(readers, "OPENSHAPE_MAX_BYTES", 50_000)
    config = ZeroShotConfig(
        dataset="objaverse-lvis",
        root=str(root),
        allow_pickle=True,
        batch_size=8,
        text_cache="",
        max_lost=1.0,  # 3 of the 5 shapes are the hostile ones: their skipping is the point
    )
    with caplog.at_level("WARNING"):
        metrics = zeroshot(tiny_checkpoint, tmp_path / "out", config)
    assert metrics["n_shapes"] == 2 and metrics["skipped_samples"] == 3
    assert not ran.exists()
    logged = caplog.text
    assert "000000aa.npy: its header claims shape (1000000000000, 3)" in logged
    assert "000100aa.npy: an object array of shape (2,), not a pickled dict" in logged
    assert "000200aa.npy: " in logged and "over the 50000 of an OpenShape file" in logged


@pytest.mark.parametrize("stored", ["a pickled dict", "a plain array"])
def test_an_openshape_file_is_stated_and_opened_once(tmp_path, monkeypatch, stored):
    """Before: its header, its size and its load each stat'ed or opened the file again."""
    import builtins
    import os

    from cg3d.eval.readers import read_openshape_npy

    path = tmp_path / "shape.npy"
    xyz = np.arange(30, dtype=np.float32).reshape(10, 3)
    np.save(path, {"xyz": xyz} if stored == "a pickled dict" else xyz, allow_pickle=True)
    calls = []
    real_open, real_stat = builtins.open, os.stat

    def opening(file, *args, **kwargs):
        calls.append(("open", file))
        return real_open(file, *args, **kwargs)

    def stating(file, *args, **kwargs):
        calls.append(("stat", file))
        return real_stat(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", opening)
    monkeypatch.setattr(os, "stat", stating)
    if stored == "a pickled dict":
        read, _ = read_openshape_npy(path)
        np.testing.assert_array_equal(read, xyz)
    else:  # read (bounded), then refused: OpenShape stores a dict
        with pytest.raises(ValueError, match="not a dict with 'xyz'"):
            read_openshape_npy(path)
    monkeypatch.undo()
    of_the_file = [kind for kind, file in calls if not isinstance(file, int) and Path(file) == path]
    assert of_the_file == ["stat", "open"]


def test_an_unwritable_text_cache_is_skipped_with_one_warning(tmp_path):
    """A compute node's cache folder on a read-only mount (or a full disk) ended the whole
    evaluation at its first class features: the features are in memory, the cache optional."""
    model = CountingTextModel()
    two = Protocol(name="two", description="", templates=("a {}", "the {}"))
    with mounted(tmp_path / "ro", "ro,size=64k") as read_only:
        for cache in (read_only, read_only / "cache"):  # the folder there, or to be made
            with pytest.warns(UserWarning, match=f"text cache {cache} not written") as warned:
                features = cached_text_features(model, ["a", "b"], two, cache)
            assert len(warned) == 1 and features.shape == (2, 8)
    assert model.encoded == 8


@pytest.mark.parametrize("code", ["ESTALE", "ETIMEDOUT", "EIO"])
def test_a_network_disks_error_on_an_openshape_file_stops_the_evaluation(
    tmp_path, monkeypatch, code
):
    """A network disk's stale handle or timeout reading one shape is the disk's, not the
    shape's: it was a skipped shape, so the accuracy came from fewer shapes (within max_lost)
    because the network blinked. EIO stays a skipped shape (the project's decision: a bad
    sector is the file's)."""
    import errno

    from cg3d.eval import readers

    root = write_openshape(tmp_path / "openshape", ["mug", "chair"], per_class=2)
    real = readers.read_openshape_npy

    def failing(path):
        if Path(path).stem == "000100aa":
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(path))
        return real(path)

    monkeypatch.setattr(readers, "read_openshape_npy", failing)
    benchmark = open_benchmark("objaverse-lvis", root, allow_pickle=True)
    if code == "EIO":
        assert len(list(benchmark.shapes())) == 3 and benchmark.skipped() == 1
        return
    with pytest.raises(OSError) as raised:
        list(benchmark.shapes())
    assert raised.value.errno == getattr(errno, code)
    assert raised.value.filename.endswith("000100aa.npy")
