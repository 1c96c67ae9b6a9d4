"""A job requeued on a node with fewer CPUs goes on with its checkpoint's loader workers: the
run it finishes must be the one an unbroken run trains, not only a run that does not restart."""

import pytest

import cg3d.params
from cg3d.params import TrainConfig, load_section
from cg3d.train import loop
from cg3d.train.loop import train_stage
from tests.train.helpers import params_file


def killed_at_the_second_save(monkeypatch) -> None:
    """`save_checkpoint` raises KeyboardInterrupt on its second call: a time limit in epoch 2."""
    original, calls = loop.save_checkpoint, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", dying)


def published(out) -> dict[str, bytes]:
    """What `train_stage` publishes (params.yaml is the command's), by name."""
    files = [out / "last.pt", out / "about.json", out / "metrics.json"]
    files += sorted((out / "dvclive" / "plots").rglob("*.tsv"))
    return {str(path.relative_to(out)): path.read_bytes() for path in files}


def test_a_run_requeued_on_fewer_cpus_ends_as_the_unbroken_run(shards, tmp_path, monkeypatch):
    """2 loader workers deal other batches than 1: the loader bound the kept count by the new
    node's CPUs again, and the run went on with other batches (epoch 2's loss 2.15, not 2.337),
    while the stage said it went on with those it began with. (torch's own thread count, which
    a smaller node lowers, moves the last bits of a sum, not the batches: kept here.)"""
    config = load_section(TrainConfig, "train", params_file(tmp_path, epochs=2, workers=2))
    monkeypatch.setattr(cg3d.params, "cpu_count", lambda: 2)
    train_stage(shards, tmp_path / "whole", config, resume="auto")
    broken = tmp_path / "broken"
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        killed_at_the_second_save(patch)
        train_stage(shards, broken, config, resume="auto")

    monkeypatch.setattr(cg3d.params, "cpu_count", lambda: 1)  # requeued on a smaller node
    resumed = train_stage(shards, broken, config, resume="auto")
    assert resumed["epoch"] == 2
    whole, ended = published(tmp_path / "whole"), published(broken)
    assert len(whole) > 4
    assert [name for name in whole if whole[name] != ended.get(name)] == []
