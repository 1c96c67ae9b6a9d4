"""Issue 25's bounds at the app's edges: images, labels, non-finite features, `top`."""

import os
import re
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cg3d.app.api import load, parse_labels
from cg3d.app.index import open_index
from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.params import MAX_LABELS
from tests.formats.images import png_declaring
from tests.formats.npyfiles import ABSURD, npy_claiming


def test_search_with_an_oversized_image_is_one_line(tmp_path, tiny_index):
    image = tmp_path / "bomb.png"
    image.write_bytes(png_declaring(40_000, 40_000))
    result = CliRunner().invoke(app, ["search", str(tiny_index), "--image", str(image)])
    # UsageError: `cg3d.cli.main` prints it as one line and exits 2
    assert isinstance(result.exception, UsageError), result.output
    message = str(result.exception)
    assert "bomb.png: 40000 × 40000 pixels is larger than the limit" in message
    assert "\n" not in message


def test_the_demo_search_says_why_an_image_is_refused(tmp_path, tiny_checkpoint, tiny_index):
    from cg3d.app.api import load
    from cg3d.app.demo import Demo
    from cg3d.app.index import open_index
    from cg3d.params import DemoConfig

    image = tmp_path / "bomb.png"
    image.write_bytes(png_declaring(40_000, 40_000))
    model = load(tiny_checkpoint)
    demo = Demo(model, open_index(tiny_index, model), DemoConfig(), tmp_path)
    gallery, status = demo.search("", str(image))
    assert gallery == [] and "larger than the limit" in status


# --- labels ------------------------------------------------------------------------------

# ULIP's 64 zero-shot templates: the captions per label of the default ensemble.
TEMPLATES = 64


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load(tiny_checkpoint)


@pytest.fixture(scope="module")
def cube(model):
    rng = np.random.default_rng(0)
    return model.prepare(rng.normal(size=(200, 3)))


@pytest.mark.parametrize(
    "labels,twice",
    [
        ("chair, chair, table", "chair"),
        (["chair", "table", "chair"], "chair"),
        ("chair,  table ,table", "table"),  # spaces do not make a label new
    ],
)
def test_a_label_given_twice_is_refused_and_named(model, cube, labels, twice):
    with pytest.raises(UsageError, match=f"--labels: '{twice}' is given twice"):
        model.classify(cube, labels, prepared=True)


def test_labels_one_text_after_clips_html_unescape_are_refused(model, cube):
    """CLIP's tokenizer unescapes HTML: "t&3" and "t&amp;3" are one prompt, one text feature.
    They were ranked as two labels splitting one probability (in an order an unstable argsort
    chose); now they are refused like any two labels that are one text to CLIP."""
    labels = [label for i in range(20) for label in (f"t&{i}", f"t&amp;{i}")]
    with pytest.raises(UsageError, match="'t&0' and 't&amp;0' have one text feature"):
        model.classify(cube, labels, top=40, prepared=True)


@pytest.mark.parametrize(
    "labels,pair",
    [
        ("Chair, table, chair", "'Chair' and 'chair'"),
        ("night_stand,night stand", "'night_stand'"),
        # NFC and NFD print alike: the message shows which is which
        ("caf\u00e9,cafe\u0301", re.escape("'caf\\xe9' and 'cafe\\u0301'")),
    ],
)
def test_labels_that_are_one_text_to_clip_are_refused(labels, pair):
    """CLIP's tokenizer lowercases: "Chair" and "chair" were one prompt, their probability
    split between the two (a label given twice is refused for that already)."""
    with pytest.raises(UsageError, match=f"--labels: {pair}.* are one text to CLIP"):
        parse_labels(labels, [])
    with pytest.raises(UsageError, match="the checkpoint's classes: 'Cube' and 'cube'"):
        parse_labels(None, ["Cube", "cube"])


@pytest.mark.parametrize("labels", [",,,", " , ", ",\t,"])
def test_labels_that_name_no_label_are_refused_not_replaced_by_the_classes(model, cube, labels):
    # they used to mean "the checkpoint's classes": a typo answered another question, exit 0
    with pytest.raises(UsageError, match="names no label"):
        model.classify(cube, labels, prepared=True)
    assert [label for label, _ in model.classify(cube, "  ", prepared=True)]  # blank: defaults


def test_the_checkpoint_classes_are_checked_too():
    with pytest.raises(UsageError, match="the checkpoint's classes: 'cube' is given twice"):
        parse_labels(None, ["cube", "cone", "cube"])


def test_too_many_labels_are_refused_before_any_encoding(model, cube, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("encoded")

    monkeypatch.setattr(model.network, "encode_text", never)
    labels = [f"thing {i}" for i in range(MAX_LABELS + 1)]
    with pytest.raises(UsageError, match=f"{MAX_LABELS + 1} labels, more than the limit"):
        model.classify(cube, labels, prepared=True)
    with pytest.raises(UsageError, match="11 labels, more than the limit of 10"):
        model.classify(cube, labels[:11], prepared=True, max_labels=10)
    with pytest.raises(UsageError, match="the checkpoint's classes: 3 labels"):
        model.classify(cube, None, prepared=True, max_labels=2)


def test_class_features_are_encoded_once_per_label_in_batches(model, cube, monkeypatch):
    batches = []
    encode = model.network.encode_text

    def counting(texts):
        batches.append(len(texts))
        return encode(texts)

    monkeypatch.setattr(model.network, "encode_text", counting)
    first = model.classify(cube, "fresh a, fresh b, fresh c, fresh d, fresh e", prepared=True)
    assert sum(batches) == 5 * TEMPLATES and max(batches) <= 256
    batches.clear()
    again = model.classify(cube, "fresh e, fresh a, fresh f", prepared=True)
    assert sum(batches) == TEMPLATES  # only "fresh f" is new
    # a label's probability among others is computed from the same cached feature
    ab = dict(model.classify(cube, "fresh a, fresh b", prepared=True, top=2))
    logits = {k: np.log(v) for k, v in ab.items()}
    full = dict(first)
    assert logits["fresh a"] - logits["fresh b"] == pytest.approx(
        np.log(full["fresh a"]) - np.log(full["fresh b"]), abs=1e-4
    )
    assert {label for label, _ in again} == {"fresh e", "fresh a", "fresh f"}


# --- non-finite values -------------------------------------------------------------------


def test_a_checkpoint_with_nan_weights_is_one_line(tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    name = next(n for n, t in payload["model"].items() if t.is_floating_point() and "point" in n)
    payload["model"][name] = payload["model"][name].clone()
    payload["model"][name].view(-1)[0] = float("nan")
    forged = tmp_path / "nan.pt"
    torch.save(payload, forged)
    with pytest.raises(UsageError, match=f"nan.pt: the weight {name} holds NaN"):
        load(forged)
    shape = tmp_path / "shape.npy"
    np.save(shape, np.random.default_rng(0).normal(size=(100, 3)))
    result = CliRunner().invoke(
        app, ["classify", str(shape), "--checkpoint", str(forged), "--labels", "a, b"]
    )
    assert isinstance(result.exception, UsageError)
    assert f"the weight {name} holds NaN" in str(result.exception)


def test_features_that_leave_the_model_non_finite_are_one_line(model, cube, monkeypatch):
    def nan_points(points):
        return torch.full((len(points), 64), float("nan"))

    monkeypatch.setattr(model.network, "encode_points", nan_points)
    with pytest.raises(UsageError, match="NaN or infinite"):
        model.embed_prepared(cube[None])
    with pytest.raises(UsageError, match="NaN or infinite"):
        model.classify(cube, "a, b", prepared=True)


def test_features_that_overflow_to_zeros_are_one_line(model, cube, monkeypatch):
    """Finite weights too large: normalising overflowed lengths gave rows of zeros, and every
    label scored 0 (the first one won), exit 0."""

    def zero_points(points):
        return torch.zeros(len(points), 64)

    monkeypatch.setattr(model.network, "encode_points", zero_points)
    with pytest.raises(UsageError, match="features are not unit vectors"):
        model.embed_prepared(cube[None])
    with pytest.raises(UsageError, match="features are not unit vectors"):
        model.classify(cube, "a, b", prepared=True)


def test_a_nan_logit_scale_is_one_line(tiny_checkpoint):
    model = load(tiny_checkpoint)  # its own copy: the weight is changed in memory
    with torch.no_grad():
        model.network.clip.logit_scale.fill_(float("nan"))
    cube = model.prepare(np.random.default_rng(0).normal(size=(200, 3)))
    with pytest.raises(UsageError, match="probabilities holds NaN"):
        model.classify(cube, "a, b", prepared=True)


@pytest.mark.parametrize("name", ["points.npy", "views.npy"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_an_index_with_non_finite_embeddings_is_refused_on_open(tiny_index, tmp_path, name, bad):
    copy = tmp_path / "index"
    shutil.copytree(tiny_index, copy)
    array = np.load(copy / name)
    array[2, 5] = bad
    np.save(copy / name, array)
    with pytest.raises(UsageError, match=rf"{name} holds NaN or infinite values \(row 2\)"):
        open_index(copy)


@pytest.mark.parametrize("name", ["points.npy", "views.npy"])
@pytest.mark.parametrize("scale", [0.0, 100.0])
def test_an_index_with_embeddings_that_are_not_unit_is_refused_on_open(
    tiny_index, tmp_path, name, scale
):
    """Before: a row scaled by 100 (or zeroed) by hand scored as a dot product, first (or at
    0.0000) among cosines, with exit 0."""
    copy = tmp_path / "index"
    shutil.copytree(tiny_index, copy)
    array = np.load(copy / name)
    assert np.allclose(np.sqrt((array.astype(np.float64) ** 2).sum(axis=1)), 1, atol=1e-5)
    array[3] *= scale
    np.save(copy / name, array)
    with pytest.raises(UsageError, match=rf"{name}: .*row 3 has length {scale:g}, not 1"):
        open_index(copy)


def test_a_non_finite_embedding_query_is_one_line(tiny_index):
    index = open_index(tiny_index)
    query = np.ones(64, np.float32)
    query[3] = np.nan
    with pytest.raises(UsageError, match="the embedding holds NaN"):
        index.search(embedding=query)


def test_an_all_zero_embedding_query_is_one_line(tiny_index):
    # it ranked every object at score 0.0000 with exit 0: an order of nothing
    index = open_index(tiny_index)
    with pytest.raises(UsageError, match="the embedding is all zeros"):
        index.search(embedding=np.zeros(64, np.float32))
    assert index.search(embedding=np.full(64, 1e-30, np.float32), top=1)  # tiny is a direction


# --- top -------------------------------------------------------------------------------


@pytest.mark.parametrize("top", [2.5, 0, -1, True, "3", None, 1e9])
def test_top_is_an_integer_of_at_least_one_everywhere(tiny_index, model, cube, top):
    index = open_index(tiny_index)
    with pytest.raises(UsageError, match="top must be an integer ≥ 1"):
        index.search(embedding=np.ones(64, np.float32), top=top)
    with pytest.raises(UsageError, match="top must be an integer ≥ 1"):
        model.classify(cube, "a, b", top=top, prepared=True)


def test_a_numpy_integer_top_is_a_count(tiny_index):
    hits = open_index(tiny_index).search(embedding=np.ones(64, np.float32), top=np.int64(2))
    assert len(hits) == 2


def test_cg3d_classify_bounds_labels_by_its_option(tiny_checkpoint, tmp_path):
    shape = tmp_path / "shape.npy"
    np.save(shape, np.random.default_rng(0).normal(size=(100, 3)))
    words = ["classify", str(shape), "--checkpoint", str(tiny_checkpoint)]
    result = CliRunner().invoke(app, [*words, "--max-labels", "2"])  # the 3 training classes
    assert isinstance(result.exception, UsageError)
    assert "the checkpoint's classes: 3 labels, more than the limit of 2" in str(result.exception)
    result = CliRunner().invoke(app, [*words, "--labels", "chair, table, chair"])
    assert "'chair' is given twice" in str(result.exception)
    result = CliRunner().invoke(app, [*words, "--max-labels", "3"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in ("cube", "sphere", "cone"))


def test_the_demo_bounds_what_a_visitor_types_not_the_checkpoint_classes(tiny_checkpoint, tmp_path):
    from cg3d.app.demo import Demo
    from cg3d.params import DemoConfig

    shape = tmp_path / "shape.npy"
    np.save(shape, np.random.default_rng(0).normal(size=(100, 3)))
    demo = Demo(load(tiny_checkpoint), None, DemoConfig(views=0, max_labels=2), tmp_path)
    ((_, scores, _, status),) = list(demo.classify(str(shape), "chair, lamp, table"))
    assert scores is None and "3 labels, more than the limit of 2" in status
    ((_, scores, _, status),) = list(demo.classify(str(shape), "chair, chair"))
    assert scores is None and "'chair' is given twice" in status
    (_, scores, _, _), *_ = list(demo.classify(str(shape), ""))  # the 3 training classes
    assert set(scores) == {"cube", "sphere", "cone"}


# tests/formats/test_npy.py: read_npy bounds the header; here, the commands that read one.
@pytest.mark.timeout(300)
def test_the_commands_answer_an_absurd_or_fifo_npy_in_one_line(
    tmp_path, tiny_checkpoint, tiny_index
):
    (tmp_path / "absurd.npy").write_bytes(npy_claiming(ABSURD))
    os.mkfifo(tmp_path / "fifo.npy")
    runs = [
        (
            ["classify", str(tmp_path / "absurd.npy"), "--checkpoint", str(tiny_checkpoint)],
            "absurd",
        ),
        (["search", str(tiny_index), "--embedding", str(tmp_path / "absurd.npy")], "absurd"),
        (["search", str(tiny_index), "--embedding", str(tmp_path / "fifo.npy")], "fifo"),
    ]
    for words, name in runs:
        result = CliRunner().invoke(app, words)
        assert isinstance(result.exception, UsageError), result.output
        message = str(result.exception)
        assert f"{name}.npy" in message and "\n" not in message, message


@pytest.mark.timeout(300)
def test_a_fifo_given_as_a_shape_is_named_as_one_not_as_missing(tmp_path, tiny_checkpoint):
    # "no such file …/shape.npy" sent the user looking for a file that is there
    fifo = tmp_path / "shape.npy"
    os.mkfifo(fifo)
    checkpoint = ["--checkpoint", str(tiny_checkpoint)]
    for words in (
        ["classify", str(fifo), *checkpoint],
        ["embed", str(fifo), *checkpoint, "--out", str(tmp_path / "e.npy")],
        ["scene-query", str(fifo), "--text", "a chair", *checkpoint, "--out", str(tmp_path / "s")],
    ):
        result = CliRunner().invoke(app, words)
        assert isinstance(result.exception, UsageError), result.output
        assert str(result.exception) == f"{fifo}: not a regular file", words


@pytest.mark.parametrize("option", ["--max-labels", "--top"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_cg3d_classify_counts_below_one_are_refused_before_the_model_loads(
    tiny_checkpoint, tmp_path, monkeypatch, option, value
):
    """--max-labels -5 read "3 labels, more than the limit of -5", after the model loaded."""
    import cg3d.app.api as api

    shape = tmp_path / "shape.npy"
    np.save(shape, np.random.default_rng(0).normal(size=(100, 3)))
    loads = []
    monkeypatch.setattr(api, "load", lambda *args, **kwargs: loads.append(args))
    words = ["classify", str(shape), "--checkpoint", str(tiny_checkpoint), option, value]
    result = CliRunner().invoke(app, words)
    assert isinstance(result.exception, UsageError)
    assert str(result.exception) == f"{option} must be an integer ≥ 1, got {value}"
    assert loads == []


def test_parse_labels_refuses_a_bound_below_one():
    with pytest.raises(UsageError, match="--max-labels must be an integer ≥ 1, got -5"):
        parse_labels("chair", [], max_labels=-5)
