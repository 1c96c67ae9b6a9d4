"""Fixtures shared by the test folders: a tiny checkpoint, the headless browser."""

import os
import shutil
import warnings
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


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


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (no browser download)."""
    if not Path(CHROMIUM).is_file() or shutil.which("chromium") is None:
        message = f"no {CHROMIUM}: apt-get install chromium (.ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()
