"""Every metrics file that dvc.yaml declares holds numbers only, so `dvc metrics show` and `dvc
metrics diff` print one column per number; what was measured (checkpoint, CLIP weights,
protocol, templates...) is in the `about.json` beside it, an output of the same stage.

The stages that declare metrics run their own dvc.yaml command through the CLI, in dvc.yaml's
order, in a temporary folder holding shards of the fake pipeline at their default path
(`data/shards`) and a params.yaml of a small model.
"""

import json
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cg3d.cli import app
from tests.pipeline.fakes import fake_pipeline
from tests.train.helpers import params_file

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),  # the random micro CLIP says so
]


def names(entries: list) -> list[str]:
    """The paths of a dvc.yaml `outs`/`metrics` list (a path, or {path: options})."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


DECLARED = {name: names(stage["metrics"]) for name, stage in STAGES.items() if "metrics" in stage}


def numbers_only(values: dict, key: str = "") -> list[str]:
    """The keys (dotted, as `dvc metrics show` prints them) whose value is not an int or a
    float; a bool is a description here."""
    wrong = []
    for name, value in values.items():
        path = f"{key}.{name}" if key else name
        if isinstance(value, dict):
            wrong += numbers_only(value, path)
        elif type(value) not in (int, float):
            wrong.append(path)
    return wrong


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    fake_pipeline(root / "data", per_class=6, shard_size=3, views=2, n=64)
    params_file(root, epochs=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the commands name dvc.yaml's relative paths
        for name in DECLARED:
            words = shlex.split(STAGES[name]["cmd"])
            assert words[:3] == ["python", "-m", "cg3d"]
            result = CliRunner().invoke(app, words[3:])
            assert result.exit_code == 0, (name, result.output)
    return root


def test_the_default_pipeline_declares_metrics_for_training_and_both_evaluations():
    assert set(DECLARED) >= {"train", "eval_zeroshot", "eval_retrieval"}


@pytest.mark.parametrize("stage", sorted(DECLARED))
def test_a_declared_metrics_file_holds_numbers_only(project, stage):
    for path in DECLARED[stage]:
        values = json.loads((project / path).read_text())
        assert values and numbers_only(values) == [], path


@pytest.mark.parametrize("stage", sorted(DECLARED))
def test_what_was_measured_is_in_about_json_a_declared_output(project, stage):
    for path in DECLARED[stage]:
        about_path = str(Path(path).with_name("about.json"))
        assert about_path in names(STAGES[stage].get("outs", [])), stage  # `dvc repro` makes it
        about = json.loads((project / about_path).read_text())
        assert about["clip_model"] == "CG3D-ViT-Micro-32" and about["clip_pretrained"] is False
        assert about["encoder"] == "pointnet2"
        # what was loaded, in one spelling for training and every eval (train said "none")
        assert about["clip_weights"] == "none (random init)", stage
        if stage != "train":
            assert about["checkpoint"] == "runs/train/last.pt"  # as the command named it
            assert isinstance(about["color"], str)


def test_each_file_says_its_own_part(project):
    train = json.loads((project / "runs/train/about.json").read_text())
    assert train["held_out_templates"] == "cg3d (63)"
    zeroshot = json.loads((project / "runs/eval/zeroshot/about.json").read_text())
    assert (zeroshot["protocol"], zeroshot["templates"]) == ("cg3d", "ulip64 (64)")
    assert (zeroshot["dataset"], zeroshot["variant"], zeroshot["n_points"]) == (
        "shards",
        "test",
        64,
    )
    assert zeroshot["audit"] == "none"
    retrieval = json.loads((project / "runs/eval/retrieval/about.json").read_text())
    assert (retrieval["split"], retrieval["shards"]) == ("test", "data/shards")
    # and the numbers stay with the numbers
    numbers = json.loads((project / "runs/eval/zeroshot/metrics.json").read_text())
    assert {"top1", "class_mean", "n_shapes", "topped_up_shapes"} <= set(numbers)
    assert not {"protocol", "checkpoint", "clip_weights", "templates"} & set(numbers)
