"""The paper's optimisers: AdamW weight decay on weight matrices only, prompt SGD with weight
decay, and gradient-norm clipping."""

from pathlib import Path

import pytest
import torch
from torch import nn

from cg3d.params import TrainConfig, load_section
from cg3d.train.loop import Trainer, prepare_model
from cg3d.train.optim import make_optimizers
from tests.train.helpers import CLASSES, make_batches, tiny_train_config

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


def undecayed_names(encoder: nn.Module) -> set[str]:
    """What the public add_weight_decay leaves alone: biases, every normalisation layer's
    parameters, and the learned CLS token and its position."""
    names = {"cls_token", "cls_pos"}
    for prefix, module in encoder.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{prefix}.{name}" if prefix else name
            if name.endswith("bias") or isinstance(module, nn.LayerNorm | nn.BatchNorm1d):
                names.add(full)
    return names


@pytest.mark.parametrize("encoder", ["pointbert-micro", "pointtransformer-micro"])
def test_weight_decay_shrinks_weights_only_and_the_prompts_by_their_own(tmp_path, encoder):
    config = tiny_train_config(
        encoder=encoder,
        encoder_lr=0.1,
        encoder_weight_decay=0.5,
        prompt_lr=0.1,
        prompt_weight_decay=0.2,
    )
    model, _ = prepare_model(config, CLASSES, tmp_path)
    with torch.no_grad():  # no zero left (a zero is its own decay): cls_token, biases start so
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizers = make_optimizers(model, config)
    # zero gradients: whatever moves, weight decay moved it
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    for optimizer in optimizers.values():
        optimizer.step()
    undecayed = undecayed_names(model.point_encoder)
    assert {"cls_token", "cls_pos", "norm.weight", "norm.bias"} <= undecayed
    for name, parameter in model.point_encoder.named_parameters():
        old = before[f"point_encoder.{name}"]
        # AdamW's decoupled decay: p ← p (1 − lr·wd)
        expected = old if name in undecayed else old * (1 - 0.1 * 0.5)
        assert torch.allclose(parameter, expected, rtol=1e-6), name
    # SGD's decay on the prompts (the public VPT optimiser's 1e-4 by default): p ← p (1 − lr·wd)
    assert torch.allclose(model.visual.prompts, before["visual.prompts"] * (1 - 0.1 * 0.2))


def test_the_paper_config_decays_the_prompts_and_clips_at_10():
    root = Path(__file__).resolve().parents[2]
    for config in (
        TrainConfig(),  # the defaults are the paper's
        load_section(TrainConfig, "train", root / "configs" / "paper.yaml"),
    ):
        assert (config.prompt_weight_decay, config.grad_clip) == (1e-4, 10.0)
        assert config.encoder_weight_decay == 0.05


def update_gradient_norms(tmp_path, grad_clip: float) -> tuple[float, float]:
    """Gradient norms left by an encoder update and a prompt update of a tiny model."""
    config = tiny_train_config(encoder="pointbert-micro", grad_clip=grad_clip)
    model, _ = prepare_model(config, CLASSES, tmp_path)
    model.train()
    trainer = Trainer(model, config, 2, torch.device("cpu"))
    batches = list(make_batches(2, 8, seed=1))
    trainer.update([batches[0]], 0)
    encoder = torch.cat([p.grad.flatten() for p in model.point_encoder.parameters()]).norm()
    trainer.update([batches[1]], 1)
    return float(encoder), float(model.visual.prompts.grad.norm())


def test_gradient_norms_are_clipped_per_optimiser(tmp_path):
    free = update_gradient_norms(tmp_path / "free", 0.0)
    clipped = update_gradient_norms(tmp_path / "clipped", 1e-4)
    assert min(free) > 1e-3  # large enough that a clip at 1e-4 has something to do
    for norm in clipped:
        assert norm == pytest.approx(1e-4, rel=1e-4)
