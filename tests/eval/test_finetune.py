import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.eval.finetune import FinetuneConfig, few_shot_indices, finetune, fit_probe
from tests.eval.files import write_modelnet

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_few_shot_indices_pick_k_per_class():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    picked = few_shot_indices(labels, 2, seed=0)
    assert np.bincount(labels[picked]).tolist() == [2, 2, 2]
    assert (np.diff(picked) > 0).all()
    assert few_shot_indices(labels, 2, seed=0).tolist() == picked.tolist()
    assert len(few_shot_indices(labels, 5, seed=1)) == 9  # a class with fewer shapes gives all


@pytest.fixture
def one_thread():
    """These fits are many tiny operations: threads only add overhead, and on a machine
    shared with other processes they slow them twenty-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def class_features(
    n_classes: int, per_class: int, dim: int, spread: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm features, class c around the basis vector e_c with Gaussian noise of std
    `spread` per dimension (seeded), and their labels."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    noise = spread * torch.randn(len(labels), dim, generator=generator)
    return F.normalize(torch.eye(dim)[labels] + noise, dim=-1), labels


def gradient_descent_optimum(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, l2: float
) -> tuple[torch.Tensor, float]:
    """Reference fit: plain full-batch gradient descent (step 1, below 2/L for unit-norm
    features) on mean cross-entropy + l2/2·‖W‖², in float64, for many steps: (the optimum's
    class probabilities, its objective)."""
    x = features.double()
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    for _ in range(4000):
        logits = x @ weight.T + bias
        loss = F.cross_entropy(logits, labels) + 0.5 * l2 * weight.square().sum()
        grad_weight, grad_bias = torch.autograd.grad(loss, (weight, bias))
        with torch.no_grad():
            weight -= grad_weight
            bias -= grad_bias
    assert max(grad_weight.abs().max(), grad_bias.abs().max()) < 1e-9  # the reference converged
    return logits.detach().softmax(-1), loss.item()


@pytest.mark.parametrize("l2", [0.01, 0.1])
def test_probe_reaches_the_optimum_of_overlapping_classes(l2, one_thread):
    """Overlapping Gaussian classes: the objective is strictly convex, so the fitted head must
    give the reference optimum's objective and probabilities."""
    features, labels = class_features(4, 50, 8, spread=0.6)
    head, fit = fit_probe(features, labels, 4, l2, iterations=1000)
    expected_probabilities, expected_objective = gradient_descent_optimum(features, labels, 4, l2)
    logits = head(features).detach()
    objective = F.cross_entropy(logits, labels) + 0.5 * l2 * head.weight.detach().square().sum()
    assert float(objective) == pytest.approx(expected_objective, rel=1e-5)
    assert torch.allclose(logits.softmax(-1).double(), expected_probabilities, atol=1e-4)
    assert fit["objective"] == pytest.approx(expected_objective, rel=1e-6)
    assert fit["gradient"] < 1e-6 and fit["iterations"] < 1000  # stopped because it converged


@pytest.mark.parametrize("l2", [0.0, FinetuneConfig().probe_l2])
def test_probe_separates_separable_classes(l2, one_thread):
    """40 classes each tight around its own axis: W = I separates them, so the fitted probe
    must classify every training feature right (unpenalised, or at the default penalty)."""
    features, labels = class_features(40, 5, 64, spread=0.05)
    assert (features[:, :40].argmax(-1) == labels).all()  # the known separator
    head, _ = fit_probe(features, labels, 40, l2, iterations=FinetuneConfig().probe_iterations)
    assert (head(features).argmax(-1) == labels).all()


@pytest.mark.parametrize("mode", ["linear", "full"])
def test_finetune_reports_its_result_and_labels_the_test_selected_epoch(
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
    about = json.loads((out / "about.json").read_text())
    assert saved["n_train"] == 6  # 2 shots × 3 classes
    assert (about["mode"], about["shots"], about["dataset"]) == (mode, 2, "modelnet40")
    details = json.loads((out / "details.json").read_text())
    if mode == "full":
        assert about["reported"] == "last epoch"
        with (out / "history.csv").open() as handle:
            history = list(csv.DictReader(handle))
        assert [int(row["epoch"]) for row in history] == [1, 2, 3]
        assert saved["top1"] == float(history[-1]["top1"])
        best = details["best_test_selected"]
        assert best["top1"] == max(float(row["top1"]) for row in history)
        assert "optimistic" in best["note"]
    else:  # one fit, no epochs to choose among
        assert about["reported"] == "fitted probe" and about["probe_l2"] == config.probe_l2
        assert not (out / "history.csv").exists() and details["probe"]["gradient"] < 1e-6
    # metrics.json keeps to the headline: the details are in their own files
    assert not {"history", "best_test_selected", "probe", "per_class"} & set(saved)
    with (out / "per_class.csv").open() as handle:
        per_class = list(csv.DictReader(handle))
    assert [row["shapes"] for row in per_class[:4]] == ["3", "3", "3", "0"]  # 3 test shapes each
    assert per_class[3]["top1"] == ""  # a class with no shapes has no accuracy
    assert metrics["mode"] == mode


def test_few_shot_says_which_classes_it_could_not_give_k_shots(tmp_path, tiny_checkpoint, caplog):
    """2 shots from a train split of 3 airplanes, 1 bathtub and no bed (3 of each to test):
    the result read as 2 shots of every class, the bed's test shapes wrong by construction."""
    ids = write_modelnet(tmp_path / "mn", 40, per_class=3, n=40)
    train = [i for i in ids if i.startswith("airplane")] + ["bathtub_0001"]
    (tmp_path / "mn" / "modelnet40_train.txt").write_text("\n".join(train) + "\n")
    config = FinetuneConfig(dataset="modelnet40", root=str(tmp_path / "mn"), mode="linear", shots=2)
    finetune(tiny_checkpoint, tmp_path / "out", config)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["n_train"] == 3  # 2 airplanes and the one bathtub
    assert (saved["test_classes_untrained"], saved["classes_below_shots"]) == (1, 1)
    assert "no training shape (bed" in caplog.text and "(bathtub 1" in caplog.text


def test_the_classes_short_of_shapes_are_said_before_training(
    tmp_path, tiny_checkpoint, caplog, monkeypatch
):
    """The warning came after the last epoch: a long run was not stopped when it could be.
    The names listed are all there are, so no "..." after them."""
    import cg3d.eval.finetune as module

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    ids = write_modelnet(tmp_path / "mn", 40, per_class=3, n=40)
    train = [i for i in ids if i.startswith("airplane")]
    (tmp_path / "mn" / "modelnet40_train.txt").write_text("\n".join(train) + "\n")
    monkeypatch.setattr(module, "fit_linear", stopped)
    config = FinetuneConfig(dataset="modelnet40", root=str(tmp_path / "mn"), mode="linear")
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_checkpoint, tmp_path / "out", config)
    assert "2 test classes have no training shape (bathtub, bed)" in caplog.text


def test_linear_probe_learns_separable_classes_at_its_defaults(tmp_path, tiny_checkpoint):
    """Train == test here: a linear probe at its default params must fit 3 boxes of clearly
    different proportions (the earlier AdamW probe needed lr 1 and 100 epochs for this)."""
    write_modelnet(tmp_path / "mn", 40, per_class=4, n=60)
    config = FinetuneConfig(dataset="modelnet40", root=str(tmp_path / "mn"), mode="linear")
    assert finetune(tiny_checkpoint, tmp_path / "out", config)["top1"] == 100.0


def test_finetune_command_summarises_the_linear_probe(tmp_path, tiny_checkpoint):
    write_modelnet(tmp_path / "mn", 40, per_class=2, n=40)
    words = ["finetune", "--checkpoint", str(tiny_checkpoint), "--dataset", "modelnet40"]
    words += ["--root", str(tmp_path / "mn"), "--mode", "linear", "--probe-l2", "0.01"]
    result = CliRunner().invoke(app, [*words, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "fitted probe" in result.output and "L-BFGS iterations" in result.output
    about = json.loads((tmp_path / "out" / "about.json").read_text())
    assert about["probe_l2"] == 0.01


def test_finetune_bad_parameters(tmp_path, tiny_checkpoint):
    with pytest.raises(UsageError, match="finetune.mode"):
        finetune(tiny_checkpoint, tmp_path, FinetuneConfig(mode="probe"))
    with pytest.raises(UsageError, match="finetune.shots"):
        finetune(tiny_checkpoint, tmp_path, FinetuneConfig(shots=-1))
    with pytest.raises(UsageError, match="finetune.probe_l2"):
        finetune(tiny_checkpoint, tmp_path, FinetuneConfig(mode="linear", probe_l2=-1.0))
    with pytest.raises(UsageError, match="finetune.probe_iterations"):
        finetune(tiny_checkpoint, tmp_path, FinetuneConfig(mode="linear", probe_iterations=0))


def test_training_on_the_test_split_is_refused_before_any_work(tmp_path, tiny_checkpoint):
    """Before: `--train-split test` (test_split's default) fitted the probe to the test shapes
    and reported 94 % on the shards' test split as a result, without a word."""
    write_modelnet(tmp_path / "mn", 40, per_class=2, n=40)
    words = ["finetune", "--checkpoint", str(tiny_checkpoint), "--dataset", "modelnet40"]
    words += ["--root", str(tmp_path / "mn"), "--mode", "linear", "--train-split", "test"]
    result = CliRunner().invoke(app, [*words, "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, UsageError)
    assert str(result.exception) == (
        "finetune.test_split: 'test' is finetune.train_split too; "
        "test on shapes it does not train on"
    )
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_shape_with_no_finite_point_is_skipped_and_counted_in_both_splits(
    tmp_path, tiny_checkpoint
):
    """A NaN-only shape was a ValueError out of the split loader: now it is left out of both
    splits (ModelNet's train and test lists both name it here) and counted, as in zero-shot."""
    ids = write_modelnet(tmp_path / "mn", 40, per_class=2, n=40)
    folder = ids[0].rsplit("_", 1)[0]
    (tmp_path / "mn" / folder / f"{ids[0]}.txt").write_text("nan,nan,nan\n" * 40)
    config = FinetuneConfig(dataset="modelnet40", root=str(tmp_path / "mn"), mode="linear")
    metrics = finetune(tiny_checkpoint, tmp_path / "out", config)
    assert metrics["n_train"] == 5 and metrics["skipped_samples"] == 2
    with (tmp_path / "out" / "per_class.csv").open() as handle:
        shapes = [int(row["shapes"]) for row in csv.DictReader(handle)][:3]
    assert shapes == [1, 2, 2]  # the first class lost its NaN shape


def test_a_linear_probe_into_a_full_runs_folder_leaves_no_history(tmp_path, tiny_checkpoint):
    """Before: the full run's history.csv (epochs, top-1 per epoch) stayed beside the probe's
    numbers, read as this run's curve."""
    write_modelnet(tmp_path / "mn", 40, per_class=2, n=40)
    config = FinetuneConfig(dataset="modelnet40", root=str(tmp_path / "mn"), mode="full", epochs=1)
    finetune(tiny_checkpoint, tmp_path / "out", config)
    assert (tmp_path / "out" / "history.csv").is_file()
    config.mode = "linear"
    finetune(tiny_checkpoint, tmp_path / "out", config)
    assert not (tmp_path / "out" / "history.csv").exists()
    assert json.loads((tmp_path / "out" / "about.json").read_text())["mode"] == "linear"
