"""A dead text tower (an all-zero checkpoint, weights that overflow or are NaN): its class or
caption features are rows of zeros or NaN. Every shape then scored every class alike and the
first class won: zero-shot printed a chance-level top-1 with exit 0 (no warning at all for
NaN), retrieval ranked every caption alike, classify gave the first label."""

import numpy as np
import pytest
import torch

import cg3d
from cg3d.errors import UsageError
from cg3d.eval.retrieval import RetrievalConfig, retrieval
from cg3d.eval.zeroshot import ZeroShotConfig, zeroshot
from cg3d.models.checkpoint import load_model
from cg3d.protocol import class_names
from tests.eval.files import write_modelnet, write_shards

from .fakes import FakeModel, one_hot, use_model

DEAD = {"zeros": np.zeros(10), "NaN": np.full(10, np.nan)}


@pytest.mark.parametrize(("dead", "kind"), [("zeros", "all zeros"), ("NaN", "not finite")])
@pytest.mark.parametrize("protocol", ["test-this-is-a", "cg3d-public"])  # normalised or raw
def test_zeroshot_refuses_dead_class_text_features(tmp_path, monkeypatch, dead, kind, protocol):
    names = class_names("modelnet10")
    written = [n.replace(" ", "_") if protocol == "cg3d-public" else n for n in names]
    texts = {f"This is a {name}": one_hot(i, 10) for i, name in enumerate(written)}
    texts[f"This is a {written[4]}"] = DEAD[dead]  # one class of ten: dead
    use_model(monkeypatch, FakeModel(lambda points: one_hot(4, 10), texts))
    write_modelnet(tmp_path / "mn", 10, per_class=1)
    config = ZeroShotConfig(dataset="modelnet10", root=str(tmp_path / "mn"), protocol=protocol)
    with pytest.raises(UsageError) as error:
        zeroshot(tmp_path / "fake.pt", tmp_path / "out", config)
    assert str(error.value) == (
        f"modelnet10: the text feature of the class {names[4]!r} is {kind} (1 of 10 classes): "
        "the text tower's weights are dead or damaged"
    )
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.fixture
def dead_text_model(tiny_checkpoint, monkeypatch):
    """The tiny model with a text tower that gives rows of zeros."""
    model = load_model(tiny_checkpoint)

    def zeros(texts):
        return torch.zeros(len(texts), int(model.clip.text_projection.shape[1]))

    monkeypatch.setattr(model, "encode_text", zeros)
    monkeypatch.setattr(model, "encode_text_raw", zeros)
    return model


def test_retrieval_refuses_dead_caption_features(tmp_path, monkeypatch, dead_text_model):
    write_shards(tmp_path / "shards", per_class=1, n=32, views=1)
    use_model(monkeypatch, dead_text_model)
    with pytest.raises(UsageError, match=r"^the text tower: .* not unit vectors \(length 0\)"):
        retrieval(tmp_path / "any.pt", tmp_path / "shards", tmp_path / "out", RetrievalConfig())
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_classify_refuses_dead_label_features(tiny_checkpoint, dead_text_model):
    model = cg3d.load(tiny_checkpoint)
    model.network = dead_text_model
    points = np.random.default_rng(0).normal(size=(64, 3))
    with pytest.raises(UsageError, match=r"the text feature of the class 'chair' is all zeros"):
        model.classify(points, labels=["chair", "table"])


def test_text_features_of_a_dead_tower_are_not_written(tmp_path, monkeypatch, dead_text_model):
    # before: written, and refused only when zero-shot read the file
    import cg3d.models.checkpoint
    from cg3d.eval.textfeatures import write_class_features

    monkeypatch.setattr(cg3d.models.checkpoint, "load_model", lambda *a, **k: dead_text_model)
    out = tmp_path / "f.npy"
    with pytest.raises(UsageError, match=r"^--checkpoint: the text feature of the class 'lamp'"):
        write_class_features(tmp_path / "any.pt", out, ["lamp", "vase"])
    assert not out.exists()
