import json

import pytest
import torch

from cg3d.errors import UsageError
from cg3d.models.checkpoint import read_checkpoint
from cg3d.models.model import tiny_model_config
from cg3d.train.loop import TrainConfig, Trainer, fit, prepare_model
from tests.train.helpers import make_batches

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")
CLASSES = ["cube", "sphere"]


def tiny_train_config(**overrides) -> TrainConfig:
    tiny = tiny_model_config()
    values = dict(
        epochs=2,
        batch_size=8,
        encoder=tiny.encoder,
        encoder_params=tiny.encoder_params,
        clip_model=tiny.clip_model,
        clip_pretrained="none",
        prompts=tiny.prompts,
        n_points=tiny.n_points,
        encoder_lr=1e-3,
        prompt_lr=1e-2,
        warmup_epochs=0.5,
        device="cpu",
    )
    return TrainConfig(**values | overrides)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def changed(before, model) -> set[str]:
    """The top-level groups of weights that differ from `before`."""
    after = model.state_dict()
    names = {name for name in before if not torch.equal(before[name], after[name])}
    return {"encoder" if n.startswith("point_encoder.") else n for n in names}


def make_trainer(tmp_path, updates=4, **overrides):
    config = tiny_train_config(**overrides)
    model, _ = prepare_model(config, CLASSES, tmp_path)
    model.train()
    return model, Trainer(model, config, updates_per_epoch=updates, device=torch.device("cpu"))


def test_alternating_schedule_trains_the_encoder_then_only_the_prompts(tmp_path):
    model, trainer = make_trainer(tmp_path, schedule="alternating")
    batch = next(iter(make_batches(1, 8)))
    before = snapshot(model)
    logged = trainer.update([batch], step=0)
    assert changed(before, model) == {"encoder"}
    assert set(logged) == {"loss", "loss_point_text", "loss_point_image"}
    before = snapshot(model)
    logged = trainer.update([batch], step=1)
    assert changed(before, model) == {"visual.prompts"}
    assert set(logged) == {"loss", "loss_image_text"}


def test_joint_step_changes_only_the_prompts_and_the_encoder(tmp_path):
    model, trainer = make_trainer(tmp_path, schedule="joint")
    before = snapshot(model)
    trainer.update(list(make_batches(2, 8)), step=0)  # two accumulated batches
    assert changed(before, model) == {"encoder", "visual.prompts"}


def test_loss_falls_on_a_tiny_overfit_set(tmp_path):
    model, trainer = make_trainer(
        tmp_path, updates=25, epochs=1, schedule="joint", warmup_epochs=0.0
    )
    batch = next(iter(make_batches(1, 8)))  # eight objects, eight distinct captions
    losses = [trainer.update([batch], step)["loss_point_text"] for step in range(25)]
    assert losses[-1] < 0.5 * losses[0]


class KilledAfterFirstEpoch:
    """Batches that die like a killed process when the second epoch starts."""

    def __init__(self, batches):
        self.batches, self.num_batches = batches, batches.num_batches

    def set_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        self.batches.set_epoch(epoch)

    def __iter__(self):
        return iter(self.batches)


@pytest.mark.slow
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    config = tiny_train_config(epochs=2)
    test_batches = make_batches(1, 8, seed=9)
    whole = tmp_path / "whole"
    model, _ = prepare_model(config, CLASSES, whole)
    fit(config, whole, model, make_batches(4, 8), test_batches)

    killed = tmp_path / "killed"
    model, _ = prepare_model(config, CLASSES, killed)
    with pytest.raises(KeyboardInterrupt):
        fit(config, killed, model, KilledAfterFirstEpoch(make_batches(4, 8)), test_batches)
    assert read_checkpoint(killed / "last.pt")["training"]["epoch"] == 1
    model, training = prepare_model(config, CLASSES, killed, resume=True)
    metrics = fit(config, killed, model, make_batches(4, 8), test_batches, training)

    expected, got = read_checkpoint(whole / "last.pt"), read_checkpoint(killed / "last.pt")
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    assert metrics["epoch"] == 2 and metrics["clip_pretrained"] is False
    saved = json.loads((killed / "metrics.json").read_text())
    assert saved["clip_pretrained"] is False
    assert (
        saved["test_point_text_acc"]
        == json.loads((whole / "metrics.json").read_text())["test_point_text_acc"]
    )
    # dvclive logged one row per epoch across the kill
    rows = (killed / "dvclive/plots/metrics/test/point_text_acc.tsv").read_text().splitlines()
    assert len(rows) == 1 + 2


def test_resume_rejects_a_corrupt_or_mismatched_checkpoint(tmp_path):
    config = tiny_train_config()
    (tmp_path / "last.pt").write_bytes(b"\x00garbage")
    with pytest.raises(UsageError, match="last.pt"):
        prepare_model(config, CLASSES, tmp_path, resume=True)
    model, _ = prepare_model(config, CLASSES, tmp_path / "run")
    fit(
        tiny_train_config(epochs=1), tmp_path / "run", model, make_batches(2, 8), make_batches(1, 8)
    )
    with pytest.raises(UsageError, match="prompts"):
        prepare_model(tiny_train_config(prompts=3), CLASSES, tmp_path / "run", resume=True)


def test_wrong_train_parameters_are_named():
    with pytest.raises(UsageError, match="schedule"):
        tiny_train_config(schedule="sometimes")
    with pytest.raises(UsageError, match="train.batch_size"):
        tiny_train_config(batch_size=0)
