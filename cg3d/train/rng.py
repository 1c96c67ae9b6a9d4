"""The random states a training step draws from, saved in checkpoints so `--resume` draws on."""

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as weights_only-loadable values."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state a GPU the saving process saw; a job requeued on a node with fewer GPUs
        # restores those it has (`set_rng_state_all` raised "invalid device ordinal")
        states = state["cuda"][: torch.cuda.device_count()]
        for device, device_state in enumerate(states):
            torch.cuda.set_rng_state(device_state, device)
