"""Issue 26 items 1 and 4: a data set too small for the batch, and shards with fewer points
than the model takes, are one line naming the param and the fix, said as early as the sizes
are known; a bare `cg3d train` says which config it uses."""

import pytest
import yaml
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.params import TrainConfig, batch_problem
from cg3d.train.loop import check_sizes, num_updates


def index(points: list[int], train_counts: list[int]) -> dict:
    return {
        "classes": ["chair", "lamp"],
        "params": {"points": points},
        "splits": {"train": {"counts": train_counts}},
    }


def test_sixteen_samples_against_a_batch_of_32_name_the_batch_size_and_the_fix():
    config = TrainConfig(batch_size=32, n_points=2048)
    with pytest.raises(UsageError) as error:
        check_sizes("data/shards", index([2048], [8, 8]), config, processes=1)
    message = str(error.value)
    assert "16 training samples" in message and "train.batch_size 32" in message
    assert "--set train.batch_size=16" in message and "\n" not in message
    check_sizes("data/shards", index([2048], [16, 16]), config, processes=1)  # 32: one update
    # two processes share the samples: 32 fill one update of 16 each, not of 32 each
    assert "train.batch_size=8" in batch_problem(config, 16, "x", processes=2)
    assert batch_problem(TrainConfig(batch_size=16, grad_accum=2), 32, "x") == ""


def test_fewer_batches_than_grad_accum_names_both_params():
    with pytest.raises(UsageError, match="train.batch_size.*train.grad_accum 2"):
        num_updates(1, 2)


def test_shards_with_fewer_points_than_n_points_are_refused_not_stretched():
    with pytest.raises(UsageError) as error:
        check_sizes("s", index([2048], [64]), TrainConfig(batch_size=4), processes=1)
    message = str(error.value)
    assert "train.n_points is 8192" in message and "2048 points" in message
    assert "\n" not in message
    check_sizes("s", index([2048], [64]), TrainConfig(batch_size=4, n_points=2048), processes=1)


def test_meshes_says_a_too_small_set_before_any_data_stage(tmp_path):
    params = tmp_path / "params.yaml"
    # 10 synthetic classes × 5 objects, 20 % (one a class) in test: 40 training objects
    params.write_text(
        yaml.safe_dump(
            {"meshes": {"source": "synthetic", "per_class": 5, "workers": 1}, "train": {}}
        )
    )
    args = ["meshes", "--out", str(tmp_path / "meshes"), "--params", str(params)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    message = " ".join(str(result.exception).split())
    assert "40 training samples" in message and "train.batch_size 64" in message
    assert "--set train.batch_size=40" in message
    params.write_text(params.read_text().replace("train: {}", "train: {batch_size: 40}"))
    assert CliRunner().invoke(app, args).exit_code == 0


def test_a_bare_train_says_it_uses_the_schema_defaults(tmp_path, capsys):
    from tests.pipeline.fakes import fake_pipeline

    fake_pipeline(tmp_path / "data", per_class=4, n=64)
    result = CliRunner().invoke(
        app, ["train", "--shards", str(tmp_path / "data/shards"), "--out", str(tmp_path / "o")]
    )
    said = " ".join((result.output + capsys.readouterr().err).split())
    assert "no --params: the schema defaults" in said and "add --params params.yaml" in said
    # and its 8192 points are not made up from the shards' 64
    assert "train.n_points is 8192" in str(result.exception)


@pytest.mark.parametrize(
    ("classes", "problem"),
    [
        (["chair", "Chair"], "the classes 'chair' and 'Chair' are one text to CLIP"),
        (["chair", "night_stand", "night stand"], "'night_stand' and 'night stand' are one"),
        (["chair", ""], "the class '' is empty or blank"),
    ],
)
def test_an_index_whose_classes_eval_would_refuse_is_refused_before_training(classes, problem):
    # before: trained, and the held-out accuracy counted every shape of "Chair" for "chair"
    # (one prompt), or prompted "a photo of a ." for ""; eval then refused the same index
    edited = index([2048], [16, 16]) | {"classes": classes}
    with pytest.raises(UsageError) as error:
        check_sizes("s", edited, TrainConfig(batch_size=4, n_points=2048), processes=1)
    message = str(error.value)
    assert message.startswith("s: the shard index: the class") and problem in message


def test_an_index_with_no_classes_is_refused_by_name_before_training():
    # before: trained, every sample skipped as outside the index's 0 classes (eval refused it)
    edited = index([2048], [16, 16]) | {"classes": []}
    with pytest.raises(UsageError, match=r"^s: the shard index lists no classes$"):
        check_sizes("s", edited, TrainConfig(batch_size=4, n_points=2048), processes=1)
