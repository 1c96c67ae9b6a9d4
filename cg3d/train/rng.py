"""The random states a training step draws from, saved in checkpoints so `--resume` draws on."""

import random
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


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
        torch.cuda.set_rng_state_all(state["cuda"])


def started_apart(items: Iterable[T]) -> Iterator[T]:
    """`items`, its first one made with the global torch RNG set back afterwards.

    torch's DataLoader draws its workers' base seed from the global RNG when its iterator is
    made: with persistent workers, only in the first epoch a process runs. A resumed run makes
    it in the epoch it resumes at, so that draw would leave its RNG (saved in each checkpoint)
    other than an unbroken run's, and the same run would give other `last.pt` bytes. Our
    loaders seed their own draws (`cg3d.train.data`), so the base seed changes no sample.
    """
    iterator = iter(items)
    with torch.random.fork_rng(devices=[]):
        first = next(iterator, _NONE)
    if first is _NONE:
        return
    yield first
    yield from iterator


_NONE = object()
