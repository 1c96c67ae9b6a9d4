"""`loop.restore` on each process: its own RNG states and caption cache from the checkpoint's
`other_ranks`, or fresh seeds and an empty cache where the checkpoint holds none for it (a
resume on more processes, a checkpoint from before `other_ranks`), with one line saying the
resumed run goes other than an unbroken one."""

import random

import numpy as np
import pytest
import torch

from cg3d.train import loop
from cg3d.train.rng import rng_state


class Trainer:
    """What `restore` touches of a trainer: the state it is given."""

    def __init__(self) -> None:
        self.loaded: dict | None = None

    def load_state(self, state: dict) -> None:
        self.loaded = state


def seeded_state(seed: int) -> dict:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return rng_state()


def cache(*captions: str) -> dict:
    return {"captions": list(captions), "features": torch.ones(len(captions), 4)}


def checkpoint(processes: int, other_ranks: bool = True) -> dict:
    """A checkpoint of `processes` processes at epoch 2, rank r's RNGs seeded 100 + r."""
    training = {"epoch": 2, "step": 7, "rng": seeded_state(100), "text_cache": cache("r0")}
    if other_ranks and processes > 1:
        training["other_ranks"] = [
            {"rng": seeded_state(100 + r), "text_cache": cache(f"r{r}")}
            for r in range(1, processes)
        ]
    return training


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.random_sample()), float(torch.rand(()))


def reference_draws(seed: int) -> tuple[float, float, float]:
    generator = torch.Generator().manual_seed(seed)
    return (
        random.Random(seed).random(),
        float(np.random.RandomState(seed).random_sample()),
        float(torch.rand((), generator=generator)),
    )


@pytest.mark.parametrize(
    ("saved", "resumed", "rank", "seed", "captions"),
    [
        (2, 2, 1, 100 + 1, ["r1"]),  # its own
        (2, 3, 1, 100 + 1, ["r1"]),
        (2, 3, 2, 7 + 2, []),  # none saved for rank 2: fresh seeds (train.seed + rank)
        (2, 1, 0, 100, ["r0"]),  # fewer processes: rank 0's own
        (3, 2, 1, 100 + 1, ["r1"]),  # a 3-process checkpoint on 2: rank 2's dropped
    ],
)
def test_each_process_resumes_its_own_state_or_fresh_seeds(
    monkeypatch, capsys, saved, resumed, rank, seed, captions
):
    monkeypatch.setattr(loop, "world", lambda: (rank, resumed))
    trainer = Trainer()
    position = loop.restore(trainer, checkpoint(saved), 7 + rank)
    assert position == (2, 7)
    assert draws() == reference_draws(seed)
    assert trainer.loaded["text_cache"]["captions"] == captions
    assert trainer.loaded["epoch"] == 2  # the rest is the checkpoint's, as before
    err = capsys.readouterr().err
    assert ("resuming" in err) == (rank == 0 and saved != resumed)  # said by rank 0 only


def test_a_checkpoint_from_before_other_ranks_resumes_rank_1_from_fresh_seeds(monkeypatch):
    monkeypatch.setattr(loop, "world", lambda: (1, 2))
    trainer = Trainer()
    loop.restore(trainer, checkpoint(2, other_ranks=False), 7 + 1)
    assert draws() == reference_draws(7 + 1)
    assert trainer.loaded["text_cache"]["captions"] == []


def test_the_world_size_change_is_said_in_one_line(monkeypatch, capsys):
    """On rank 0 only, one line, whatever the log's width (torchrun's and SLURM's logs are no
    terminal: rich wrapped it at 80 columns, three lines)."""
    monkeypatch.setattr(loop, "world", lambda: (0, 3))
    loop.restore(Trainer(), checkpoint(2), 7)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "3 process(es) from the checkpoint of 2" in lines[0]
