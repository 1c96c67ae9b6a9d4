"""Class lists a researcher edits: a shard index's classes (hand-written or edited), labels the
index names no class for, names whose prompts are one text to CLIP, a one-class set."""

import json
import logging
import shutil

import pytest

from cg3d.errors import UsageError
from cg3d.eval.finetune import FinetuneConfig, finetune
from cg3d.eval.protocols import Protocol, register_protocol
from cg3d.eval.readers import open_benchmark
from cg3d.eval.zeroshot import ZeroShotConfig, zeroshot
from tests.eval.files import write_openshape, write_shards
from tests.pipeline.fakes import rewrite_tar

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the tiny model's random CLIP


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shards of the classes box (label 0) and plank (label 1), one object each per split."""
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, per_class=1, n=32, views=1)
    return root


def edited(shards, tmp_path, classes: list[str]):
    """A copy of `shards` whose index.json lists `classes`."""
    root = tmp_path / "shards"
    shutil.copytree(shards, root)
    index = json.loads((root / "index.json").read_text())
    (root / "index.json").write_text(json.dumps(index | {"classes": classes}))
    return root


def evaluate(checkpoint, root, out):
    return zeroshot(checkpoint, out, ZeroShotConfig(dataset="shards", root=str(root)))


@pytest.mark.parametrize(
    ("classes", "problem"),
    [
        (["box", ""], "the class '' is empty or blank"),
        (["box", "pl\nank"], "the class 'pl\\nank' holds the unprintable character '\\n'"),
        (["box", "pl\x00ank"], "the class 'pl\\x00ank' holds the unprintable character '\\x00'"),
        (["box", "Box"], "the classes 'box' and 'Box' are one text to CLIP"),
        (
            ["night_stand", "night stand"],
            "the classes 'night_stand' and 'night stand' are one text to CLIP",
        ),
        (["box  x", "box x"], "the classes 'box  x' and 'box x' are one text to CLIP"),
    ],
)
def test_an_index_whose_classes_a_source_would_refuse_is_refused_in_one_line(
    shards, tmp_path, tiny_checkpoint, classes, problem
):
    # before: evaluated; "Box" and "box" one prompt (every shape of both took the first's
    # label), "" a prompt of nothing, a newline a line break in predictions.csv
    root = edited(shards, tmp_path, classes)
    with pytest.raises(UsageError) as error:
        evaluate(tiny_checkpoint, root, tmp_path / "out")
    message = str(error.value)
    assert message.startswith(f"{root}: the shard index: the class")
    assert problem in message and "\n" not in message


def test_an_index_with_no_classes_is_refused_in_one_line(shards, tmp_path):
    # (an index without "classes", or not a list, is refused by read_index)
    root = edited(shards, tmp_path, [])
    with pytest.raises(UsageError, match=r"^.*shards: the shard index lists no classes$"):
        open_benchmark("shards", root)


def test_a_label_the_index_names_no_class_for_is_a_skipped_sample(
    shards, tmp_path, tiny_checkpoint
):
    # before: an IndexError traceback at the metrics, after every shape was encoded
    root = edited(shards, tmp_path, ["box", "plank"])

    def relabel(name: str, data: bytes):
        return (name, b"7") if name == "test_plank_0.cls" else (name, data)

    rewrite_tar(root / "test" / "shard-000000.tar", relabel)
    metrics = evaluate(tiny_checkpoint, root, tmp_path / "out")
    assert (metrics["n_shapes"], metrics["skipped_samples"]) == (1, 1)


def test_a_one_class_set_is_refused_in_one_line(shards, tmp_path, tiny_checkpoint):
    # before: top1 100 % (every shape is its only class), or with plank's label unnamed an
    # IndexError
    root = edited(shards, tmp_path, ["box"])
    with pytest.raises(UsageError) as error:
        evaluate(tiny_checkpoint, root, tmp_path / "out")
    assert str(error.value) == (
        "shards: one class ('box'): zero-shot needs two classes or more to choose between"
    )
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_one_class_set_is_refused_by_fine_tuning_before_the_model_loads(shards, tmp_path):
    # before: the probe fitted one class in 0 iterations and reported top1 100 %, exit 0
    root = edited(shards, tmp_path, ["box"])
    config = FinetuneConfig(dataset="shards", root=str(root), mode="linear")
    with pytest.raises(UsageError) as error:
        finetune(tmp_path / "no-checkpoint.pt", tmp_path / "out", config)
    assert str(error.value) == (
        "shards: one class ('box'): fine-tuning needs two classes or more to choose between"
    )


def test_classes_whose_prompts_agree_in_their_first_77_tokens_are_named(
    shards, tmp_path, tiny_checkpoint, caplog
):
    # CLIP cuts a prompt at 77 tokens: two names alike in their first 80 words are one text
    # feature, and every shape of the second took the first's label; the tie count after the
    # run named no class
    long = "box " * 80
    root = edited(shards, tmp_path, [long + "a", long + "b", "plank"])
    with caplog.at_level(logging.WARNING, logger="cg3d.eval.zeroshot"):
        evaluate(tiny_checkpoint, root, tmp_path / "out")
    lines = [r.getMessage() for r in caplog.records if "text features of another" in r.message]
    assert len(lines) == 1 and lines[0].startswith("1 classes have the text features of another")
    assert "(321 characters)" in lines[0] and "the same first 77 tokens" in lines[0]


def test_a_set_whose_classes_all_have_one_text_feature_is_refused(
    shards, tmp_path, tiny_checkpoint
):
    # before: a warning, then a chance-level top-1 (every shape the first class's) and exit 0
    long = "box " * 80
    root = edited(shards, tmp_path, [long + "a", long + "b"])
    with pytest.raises(UsageError) as error:
        evaluate(tiny_checkpoint, root, tmp_path / "out")
    message = str(error.value)
    assert message.startswith("shards: all 2 classes have one text feature, as 'box box")
    assert "past the 77 tokens CLIP reads" in message and "\n" not in message
    assert not (tmp_path / "out" / "metrics.json").exists()


LONG_TEMPLATE = register_protocol(  # 10,000 characters before the class name
    Protocol(name="test-long-template", description="", templates=("x " * 5000 + "a {}",))
)


def test_a_template_whose_name_falls_past_clips_77_tokens_is_refused(
    shards, tmp_path, tiny_checkpoint
):
    # before: accepted; CLIP cut every prompt before the class name, every class had one text
    # feature, and the run printed a chance-level top-1 with exit 0
    config = ZeroShotConfig(dataset="shards", root=str(shards), protocol=LONG_TEMPLATE.name)
    with pytest.raises(UsageError, match=r"^shards: all 2 classes have one text feature"):
        zeroshot(tiny_checkpoint, tmp_path / "out", config)
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("categories", "problem"),
    [
        (["mug", "Mug"], "the classes 'Mug' and 'mug' are one text to CLIP"),  # sorted: M < m
        (["mug", "baseball_bat", "baseball bat"], "'baseball bat' and 'baseball_bat' are one"),
        (["mug", " "], "the class ' ' is empty or blank"),
    ],
)
def test_openshape_categories_keep_a_sources_rules(tmp_path, categories, problem):
    # before: read as classes; "Mug" and "mug" one prompt, every mug counted for the first
    root = write_openshape(tmp_path / "openshape", categories)
    with pytest.raises(UsageError) as error:
        open_benchmark("objaverse-lvis", root, allow_pickle=True)
    assert str(error.value).startswith(f"{root / 'lvis.json'}: the class") and problem in str(
        error.value
    )


ONE_LONG_TEMPLATE = register_protocol(  # a short template, and one of 10,000 characters
    Protocol(
        name="test-one-long-template", description="", templates=("a {}", "x " * 5000 + "a {}")
    )
)


def test_one_template_whose_name_falls_past_clips_77_tokens_among_others_is_refused(
    shards, tmp_path, tiny_checkpoint
):
    # before: its prompt, the same for every class, was averaged into every prototype in
    # silence (the other template still told the classes apart)
    config = ZeroShotConfig(dataset="shards", root=str(shards), protocol=ONE_LONG_TEMPLATE.name)
    with pytest.raises(UsageError) as error:
        zeroshot(tiny_checkpoint, tmp_path / "out", config)
    assert str(error.value) == (
        f"templates: the template {('x ' * 40)!r} (10004 characters) gives every class one "
        "text feature: its '{}' falls past the 77 tokens CLIP reads"
    )
