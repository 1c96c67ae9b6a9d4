"""Training's held-out accuracy is in %, as eval's top1 beside it in `dvc metrics show`; a run of
an older cg3d, in fractions, resumed is converted."""

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cg3d.errors import UsageError
from cg3d.eval.metrics import classification_metrics
from cg3d.models.checkpoint import read_checkpoint, write_payload
from cg3d.train import loop, resume
from cg3d.train.evaluate import evaluate, held_out_prototypes
from cg3d.train.loop import fit, open_curves, prepare_model
from cg3d.train.resume import resume_folder
from tests.train.helpers import CLASSES, make_batches, tiny_train_config


class ThreeClassModel:
    """Point features that are one-hot of a fixed guess; images that match their own points."""

    def __init__(self, guesses: list[int]):
        self.guesses = torch.as_tensor(guesses)

    def eval(self):
        return self

    def train(self):
        return self

    def device(self):
        return torch.device("cpu")

    def encode_points(self, points):
        return torch.nn.functional.one_hot(self.guesses, 3).float()

    def encode_image(self, images):
        return torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()


def test_held_out_accuracy_is_in_percent_like_eval_top1():
    labels, guesses = [0, 1, 2, 2], [0, 1, 2, 0]  # 3 of 4 right
    batch = {"points": torch.zeros(4, 8, 3), "cls": labels}
    numbers = evaluate(
        ThreeClassModel(guesses),
        [batch],
        torch.eye(3),
        contextlib.nullcontext,
        lambda batch: torch.zeros(4, 3),
    )
    scores = np.eye(3)[guesses]
    assert numbers["point_text_acc"] == classification_metrics(scores, labels, list("abc"))["top1"]
    assert numbers["point_text_acc"] == 75.0
    assert numbers["point_image_acc"] == 75.0  # the 4th shape's view ties with the 1st's


PERCENT = ("test_point_text_acc", "test_point_image_acc", "chance_point_text")


def older_run(out: Path) -> None:
    """Make the finished run in `out` one of cg3d before the accuracies were in %: its numbers
    (checkpoint, metrics.json, run.json) and accuracy curves as fractions, its first epoch's
    point→text accuracy 0.25."""

    def fractions(numbers: dict) -> dict:
        return (
            numbers | {key: numbers[key] / 100 for key in PERCENT} | {"test_point_text_acc": 0.25}
        )

    payload = read_checkpoint(out / "last.pt")
    payload["training"]["metrics"] = fractions(payload["training"]["metrics"])
    write_payload(out / "last.pt", payload)
    for name in ("metrics.json", "run.json"):
        (out / name).write_text(json.dumps(fractions(json.loads((out / name).read_text()))))
    curves = out / "dvclive/plots/metrics/test"
    (curves / "point_text_acc.tsv").write_text("step\tpoint_text_acc\n0\t0.25\n")
    (curves / "point_image_acc.tsv").write_text("step\tpoint_image_acc\n0\t0.5\n")


def test_a_run_of_fractions_extended_continues_in_percent(tmp_path: Path) -> None:
    """A run of an older cg3d (fractions) extended with --resume: its curves went on from 0.25
    to a % (a jump of 100×), and its chance stayed 1 / classes."""
    out = tmp_path / "run"
    model, _ = prepare_model(tiny_train_config(epochs=1), CLASSES, out)
    fit(tiny_train_config(epochs=1), out, model, make_batches(2, 8), make_batches(1, 8))
    older_run(out)

    config = tiny_train_config(epochs=2)
    model, training = prepare_model(config, CLASSES, out, resume="always")
    metrics = fit(config, out, model, make_batches(2, 8), make_batches(1, 8), training)

    assert CLASSES == ["cube", "sphere"]  # chance 50 %, 0.5 as a fraction
    assert metrics["chance_point_text"] == 50.0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["chance_point_text"] == 50.0
    text = (out / "dvclive/plots/metrics/test/point_text_acc.tsv").read_text().splitlines()
    image = (out / "dvclive/plots/metrics/test/point_image_acc.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in text[1:]] == ["0", "1"]
    assert float(text[1].split("\t")[1]) == 25.0 and float(image[1].split("\t")[1]) == 50.0
    assert float(text[2].split("\t")[1]) == saved["test_point_text_acc"]


def test_a_second_resume_of_an_older_run_converts_its_curves_once(tmp_path: Path) -> None:
    """Resumed twice from the same older checkpoint (killed before the next epoch's): the
    curves converted by the first are left as they are by the second."""
    out = tmp_path / "run"
    curve = resume_folder(out) / "dvclive/plots/metrics/test/point_text_acc.tsv"
    curve.parent.mkdir(parents=True)
    curve.write_text("step\tpoint_text_acc\n0\t0.25\n1\t0.5\n")  # an older cg3d's, unfinished
    for _ in range(2):
        open_curves(out, first_epoch=2, classes=3).end()
        assert curve.read_text().splitlines()[1:] == ["0\t25.0", "1\t50.0"]


class Killed(BaseException):
    """A kill at a step of `open_curves` (KeyboardInterrupt's base: no handler catches it)."""


@pytest.mark.parametrize("where, step", [(resume, "_write_curve_rows"), (Path, "rename")])
def test_an_older_run_killed_while_its_curves_are_converted_converts_them_once(
    tmp_path: Path, monkeypatch, where, step: str
) -> None:
    """Killed after the first curve file was converted (the resume after converted it again:
    2500 %), or after the conversion was marked done but before the curves were in place."""
    out = tmp_path / "run"
    curves = resume_folder(out) / "dvclive/plots/metrics/test"
    curves.mkdir(parents=True)
    (curves / "point_text_acc.tsv").write_text("step\tpoint_text_acc\n0\t0.25\n")
    (curves / "point_image_acc.tsv").write_text("step\tpoint_image_acc\n0\t0.5\n")
    real, calls = getattr(where, step), []

    def killed_at_second_file(*args, **options):
        calls.append(args)
        if len(calls) == (2 if step == "_write_curve_rows" else 1):
            raise Killed
        return real(*args, **options)

    with monkeypatch.context() as patch:
        patch.setattr(where, step, killed_at_second_file)
        with pytest.raises(Killed):
            open_curves(out, first_epoch=1, classes=3)
    open_curves(out, first_epoch=1, classes=3).end()
    assert (curves / "point_text_acc.tsv").read_text().splitlines()[1:] == ["0\t25.0"]
    assert (curves / "point_image_acc.tsv").read_text().splitlines()[1:] == ["0\t50.0"]


def test_a_run_in_percent_killed_while_its_extension_copies_its_curves_keeps_them(
    tmp_path: Path, monkeypatch
) -> None:
    """A finished run of this cg3d extended, killed after its curves were copied for the
    extension but before their mark: the resume after took them for an older cg3d's (×100)."""
    out = tmp_path / "run"
    model, _ = prepare_model(tiny_train_config(epochs=1), CLASSES, out)
    fit(tiny_train_config(epochs=1), out, model, make_batches(2, 8), make_batches(1, 8))
    published = (out / "dvclive/plots/metrics/test/point_text_acc.tsv").read_text()

    def killed(*args, **options):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(loop, "truncate_curves", killed)  # right after the copy
        with pytest.raises(Killed):
            open_curves(out, first_epoch=1, classes=len(CLASSES))
    open_curves(out, first_epoch=1, classes=len(CLASSES)).end()
    curve = resume_folder(out) / "dvclive/plots/metrics/test/point_text_acc.tsv"
    assert curve.read_text() == published


def test_numbers_of_fractions_are_told_by_their_chance() -> None:
    from cg3d.train.resume import metrics_in_percent

    older = {"epoch": 2, "chance_point_text": 1 / 3, "test_point_text_acc": 0.5}
    converted = metrics_in_percent(older, 3)
    assert converted["epoch"] == 2 and converted["test_point_text_acc"] == 50.0
    assert converted["chance_point_text"] == pytest.approx(100 / 3)
    assert metrics_in_percent(converted, 3) == converted  # in % already: as they are


class DeadTextModel:
    """A text tower whose features are rows of zeros (an all-zero or damaged checkpoint)."""

    config = {"classes": ["chair", "lamp"]}

    def encode_text(self, texts):
        return torch.zeros(len(texts), 8)


def test_held_out_prototypes_of_a_dead_text_tower_are_refused_before_the_first_epoch():
    # before: zero prototypes scored every class alike, the first won, and the run trained to
    # its end with a chance-level held-out curve
    with pytest.raises(UsageError) as error:
        held_out_prototypes(DeadTextModel(), "cg3d")
    assert str(error.value) == (
        "held-out prototypes: the text feature of the class 'chair' is all zeros (2 of 2 "
        "classes): the text tower's weights are dead or damaged"
    )
