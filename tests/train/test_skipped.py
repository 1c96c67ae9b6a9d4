"""Training on real shards (`pack` output) holding a sample that does not decode.

The index promises 16 training samples; one has a pickled points.npy (np.load refuses it), so
the loader yields fewer batches than `num_batches`. Training must still finish every epoch,
count the sample, and keep two processes in step.
"""

import io
import json
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cg3d.train.loop import train_stage
from tests.pipeline.fakes import fake_pipeline
from tests.train.helpers import replace_member, tiny_train_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning"),
]


def pickled_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"not": "points"}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """16 training samples in 4 shards of 4, the first sample's points undecodable."""
    root = tmp_path_factory.mktemp("data")
    fake_pipeline(
        root, per_class=8, shard_size=4, views=2, n=256
    )  # the tiny model takes 256 points, never repeated
    index = json.loads((root / "shards/index.json").read_text())
    assert index["splits"]["train"]["counts"] == [4, 4, 4, 4]
    replace_member(root / "shards/train/shard-000000.tar", "points.npy", pickled_npy())
    return root / "shards"


def test_an_epoch_with_a_corrupt_sample_finishes_and_counts_it(shards, tmp_path):
    # 16 promised, 15 decode: 3 batches of 4 instead of the 4 the index counts
    config = tiny_train_config(epochs=2, batch_size=4, workers=2, shuffle_buffer=4)
    metrics = train_stage(shards, tmp_path / "run", config)
    assert metrics["epoch"] == 2 and metrics["step"] == 2 * 3
    assert metrics["skipped_samples"] == 1
    saved = json.loads((tmp_path / "run/metrics.json").read_text())
    assert saved["skipped_samples"] == 1 and saved["held_out_samples"] == 6


def worker(rank: int, shards: str, tmp: str) -> None:
    from cg3d.train import loop

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    models, fit = [], loop.fit

    def keeping_the_model(config, out, model, *args):
        models.append(model)
        return fit(config, out, model, *args)

    loop.fit = keeping_the_model
    # rank 0 reads shards 0 and 2 (7 samples decode: one batch), rank 1 shards 1 and 3 (two)
    config = tiny_train_config(epochs=2, batch_size=4, workers=2, shuffle_buffer=4)
    loop.train_stage(shards, f"{tmp}/run", config)
    trained = {k: v.detach() for k, v in models[0].named_parameters() if v.requires_grad}
    torch.save(trained, f"{tmp}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_stop_together_when_one_runs_out(shards, tmp_path):
    mp.spawn(worker, args=(str(shards), str(tmp_path)), nprocs=2, join=True)
    metrics = json.loads((tmp_path / "run/run.json").read_text())  # untracked: world size, step
    assert metrics["world_size"] == 2
    # both processes made one update per epoch: rank 0 had only one batch of 4
    assert metrics["epoch"] == 2 and metrics["step"] == 2
    assert metrics["skipped_samples"] == 1
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert any(name.startswith("point_encoder.") for name in ranks[0])
    for name, tensor in ranks[0].items():
        assert torch.equal(tensor, ranks[1][name]), name
