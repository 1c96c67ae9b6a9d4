"""What the ranks of one run print: rank 0 speaks for the run."""

import dataclasses

import pytest

import cg3d.train.loop as loop
from cg3d.params import TrainConfig


@pytest.mark.parametrize("rank,shown", [(0, True), (1, False)])
def test_the_loader_workers_line_is_said_by_rank_0_only(monkeypatch, capsys, rank, shown):
    """Every rank printed 'train.workers is 8, but ...': an 8-GPU node's log showed it 8 times."""
    monkeypatch.setattr(loop, "world", lambda: (rank, 2))
    config = dataclasses.replace(TrainConfig(), workers=8)
    kept = loop.say_loader_workers(config, 2, resumed=False)
    assert kept.workers == 2  # every rank still runs with the workers it may use
    said = " ".join(capsys.readouterr().err.split())
    assert ("train.workers is 8, but this process may use" in said) is shown
