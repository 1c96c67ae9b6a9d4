"""Fixtures shared by the test folders."""

import warnings
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from cg3d.models.checkpoint import save_checkpoint
    from cg3d.models.model import build_model
    from tests.models.helpers import tiny_model_config

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    # Seeded: the same random weights every run, whatever ran before (a chance init once left
    # the linear probe test one shape short of 100%).
    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        save_checkpoint(
            path, build_model(tiny_model_config(n_points=64, classes=["cube", "sphere", "cone"]))
        )
    return path
