import csv
import json

import numpy as np
import pytest

from cg3d.errors import UsageError
from cg3d.eval.finetune import FinetuneConfig, few_shot_indices, finetune
from tests.eval.files import write_modelnet

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_few_shot_indices_pick_k_per_class():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    picked = few_shot_indices(labels, 2, seed=0)
    assert np.bincount(labels[picked]).tolist() == [2, 2, 2]
    assert (np.diff(picked) > 0).all()
    assert few_shot_indices(labels, 2, seed=0).tolist() == picked.tolist()
    assert len(few_shot_indices(labels, 5, seed=1)) == 9  # a class with fewer shapes gives all


@pytest.mark.parametrize("mode", ["linear", "full"])
def test_finetune_reports_last_epoch_and_labels_the_test_selected_one(
    tmp_path, tiny_checkpoint, mode
):
    write_modelnet(tmp_path / "mn", 40, per_class=3, n=40)
    config = FinetuneConfig(
        dataset="modelnet40",
        root=str(tmp_path / "mn"),
        mode=mode,
        epochs=3,
        lr=0.05,
        batch_size=4,
        shots=2,
    )
    metrics = finetune(tiny_checkpoint, tmp_path / "out", config)
    out = tmp_path / "out"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["reported"] == "last epoch" and saved["n_train"] == 6  # 2 shots × 3 classes
    with (out / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in history] == [1, 2, 3]
    assert saved["top1"] == float(history[-1]["top1"])
    best = json.loads((out / "details.json").read_text())["best_test_selected"]
    assert best["top1"] == max(float(row["top1"]) for row in history)
    assert "optimistic" in best["note"]
    # metrics.json keeps to the headline: the details are in their own files
    assert not {"history", "best_test_selected", "per_class"} & set(saved)
    with (out / "per_class.csv").open() as handle:
        per_class = list(csv.DictReader(handle))
    assert [row["shapes"] for row in per_class[:4]] == ["3", "3", "3", "0"]  # 3 test shapes each
    assert per_class[3]["top1"] == ""  # a class with no shapes has no accuracy
    assert metrics["mode"] == mode


def test_linear_probe_learns_separable_classes(tmp_path, tiny_checkpoint):
    """Train == test here: a linear probe must fit 3 boxes of clearly different proportions."""
    write_modelnet(tmp_path / "mn", 40, per_class=4, n=60)
    config = FinetuneConfig(
        dataset="modelnet40",
        root=str(tmp_path / "mn"),
        mode="linear",
        epochs=100,
        lr=1.0,
        batch_size=12,
        weight_decay=0.0,
    )
    metrics = finetune(tiny_checkpoint, tmp_path / "out", config)
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert metrics["top1"] == 100.0


def test_finetune_bad_parameters(tmp_path, tiny_checkpoint):
    with pytest.raises(UsageError, match="finetune.mode"):
        finetune(tiny_checkpoint, tmp_path, FinetuneConfig(mode="probe"))
    with pytest.raises(UsageError, match="finetune.shots"):
        finetune(tiny_checkpoint, tmp_path, FinetuneConfig(shots=-1))
