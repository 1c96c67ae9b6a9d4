"""Two CPU processes (gloo) train as one: global-batch loss, identical weights on both ranks."""

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cg3d.train.losses import contrastive_loss
from tests.train.helpers import count_host_reads, two_updates

pytestmark = pytest.mark.slow


def features(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, 6, 8, generator=generator)
    return torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)


def worker(rank: int, tmp: str) -> None:
    from cg3d.train.loop import fit, prepare_model
    from tests.train.helpers import CLASSES, make_batches, tiny_train_config

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    a, b = features(0)
    half = slice(3 * rank, 3 * rank + 3)
    loss, _ = contrastive_loss(a[half], b[half], torch.tensor(10.0))
    config = tiny_train_config(epochs=1)
    model, _ = prepare_model(config, CLASSES, f"{tmp}/run")
    # each rank sees its own half of the data
    fit(config, f"{tmp}/run", model, make_batches(2, 4, seed=rank), make_batches(1, 4, seed=5))
    # parameters (not BatchNorm statistics: DDP broadcasts rank 0's before every forward)
    trained = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    torch.save({"loss": loss.detach(), "weights": trained}, f"{tmp}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_processes_share_negatives_and_stay_in_sync(tmp_path):
    mp.spawn(worker, args=(str(tmp_path),), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    a, b = features(0)
    whole, _ = contrastive_loss(a, b, torch.tensor(10.0))
    # the mean of the two local losses over gathered features is the global-batch loss
    assert torch.allclose((ranks[0]["loss"] + ranks[1]["loss"]) / 2, whole, atol=1e-6)
    assert any(name.startswith("point_encoder.") for name in ranks[0]["weights"])
    for name, tensor in ranks[0]["weights"].items():
        assert torch.equal(tensor, ranks[1]["weights"][name]), name
    metrics = json.loads((tmp_path / "run/run.json").read_text())  # untracked: world size, step
    assert metrics["world_size"] == 2 and metrics["step"] == 2


def gradient_worker(rank: int, world: int, tmp: str) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    grads = two_updates(world, rank, f"{tmp}/run{rank}")
    torch.save(grads, f"{tmp}/grads{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")
@pytest.mark.parametrize("world", [2, 4])
def test_processes_get_the_gradient_of_one_process_on_the_whole_batch(tmp_path, world):
    single = two_updates(1, 0, str(tmp_path / "single"))
    mp.spawn(gradient_worker, args=(world, str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"grads{r}.pt", weights_only=True) for r in range(world)]
    for grads in ranks:
        # the encoder (averaged by DDP) and the prompts (by the trainer) on every process
        for phase in ("encoder", "prompts", "temperature_grad"):
            error = (grads[phase] - single[phase]).norm() / single[phase].norm()
            assert error < 1e-5, (phase, float(error))
        # one temperature, stepped alike on every process
        assert torch.equal(grads["temperature"], ranks[0]["temperature"])
    assert torch.allclose(ranks[0]["temperature"], single["temperature"], rtol=1e-6)


def uneven_worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    a, b = features(1)
    rows = slice(0, 4) if rank == 0 else slice(4, 6)  # 4 rows here, 2 there
    a, b = a[rows].clone().requires_grad_(), b[rows].clone().requires_grad_()
    loss, _ = contrastive_loss(a, b, torch.tensor(10.0))
    # weighted by the rows, the processes' losses add up to the whole batch's summed loss
    (loss * a.shape[0]).backward()
    torch.save({"a": a.grad, "b": b.grad}, f"{tmp}/uneven{rank}.pt")
    dist.destroy_process_group()


def test_the_gather_passes_gradients_back_when_batches_differ_in_size(tmp_path):
    mp.spawn(uneven_worker, args=(str(tmp_path),), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"uneven{r}.pt", weights_only=True) for r in range(2)]
    a, b = (x.clone().requires_grad_() for x in features(1))
    whole, _ = contrastive_loss(a, b, torch.tensor(10.0))
    (whole * 6).backward()
    for name, grad in (("a", a.grad), ("b", b.grad)):
        gathered = torch.cat([parts[0][name], parts[1][name]])
        assert torch.allclose(gathered, grad, atol=1e-6), name


def sync_free_worker(rank: int, tmp: str) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    counting: dict[str, list[str]] = {}  # from the first update on (the model is built)
    two_updates(
        2, rank, f"{tmp}/run{rank}", lambda: counting.setdefault("reads", count_host_reads())
    )
    (Path(tmp) / f"reads{rank}.json").write_text(json.dumps(counting["reads"]))
    dist.destroy_process_group()


def test_an_update_of_two_processes_reads_nothing_back_from_the_device(tmp_path):
    """The batch counts of the gathered negatives travel as host values: a read of a device
    tensor there would make every loss wait for the GPU's queued kernels."""
    mp.spawn(sync_free_worker, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in range(2):
        assert json.loads((tmp_path / f"reads{rank}.json").read_text()) == [], rank


def gather_ints_worker(rank: int, tmp: str) -> None:
    from cg3d.train.distributed import all_gather_ints

    def no_pickle(*args, **kwargs):
        raise AssertionError("all_gather_object: a pickle over the process group")

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    dist.all_gather_object = no_pickle  # this process's module only
    values = [all_gather_ints(value) for value in ((rank + 1) * 7, 2**40 + rank, 0)]
    (Path(tmp) / f"ints{rank}.json").write_text(json.dumps(values))
    dist.destroy_process_group()


def test_the_row_counts_are_gathered_as_a_tensor_not_pickled(tmp_path):
    mp.spawn(gather_ints_worker, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in range(2):
        assert json.loads((tmp_path / f"ints{rank}.json").read_text()) == [
            [7, 14],
            [2**40, 2**40 + 1],
            [0, 0],
        ], rank


CACHE_MB = 64


def gather_state_worker(rank: int, tmp: str) -> None:
    import resource

    from cg3d.train.distributed import gather_to_first

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=3)
    rows = {0: 5, 1: CACHE_MB * 2**20 // 2048, 2: 3}[rank]  # one large cache, two small
    generator = torch.Generator().manual_seed(rank)
    torch.manual_seed(100 + rank)
    state = {
        "rng": {"torch": torch.get_rng_state(), "python": (3, tuple(range(rank, rank + 4)))},
        "text_cache": {
            "captions": [f"rank {rank} caption {i}" for i in range(rows)],
            "features": torch.randn(rows, 512, generator=generator),
        },
    }
    dist.barrier()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    states = gather_to_first(state)
    rise_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    if rank == 0:
        torch.save({"states": states, "rise_mb": rise_mb}, Path(tmp) / "gathered.pt")
    else:
        assert states == []
    dist.destroy_process_group()


def test_every_ranks_state_reaches_the_first_whole_and_without_padded_copies(tmp_path):
    """Each rank's RNG state and caption cache, of unequal sizes, reach rank 0 as they were.
    Rank 0's memory grows by about what it receives (the bytes of one rank, then their
    tensors): a padded `dist.gather` held every rank's bytes padded to the longest, twice,
    and rank 0's own state saved for nothing: 3 ranks, one cache of 64 MB, rose 360 MB (now
    about 170)."""
    mp.spawn(gather_state_worker, args=(str(tmp_path),), nprocs=3, join=True)
    gathered = torch.load(tmp_path / "gathered.pt", weights_only=True)
    states = gathered["states"]
    assert len(states) == 3
    for rank, rows in enumerate([5, CACHE_MB * 2**20 // 2048, 3]):
        cache = states[rank]["text_cache"]
        assert cache["captions"] == [f"rank {rank} caption {i}" for i in range(rows)]
        expected = torch.randn(rows, 512, generator=torch.Generator().manual_seed(rank))
        assert torch.equal(cache["features"], expected)
        assert list(states[rank]["rng"]["python"][1]) == list(range(rank, rank + 4))
        generator_state = torch.Generator().manual_seed(100 + rank).get_state()
        assert torch.equal(states[rank]["rng"]["torch"], generator_state)
    # the received bytes, a copy read from, their tensors: about 3 x 64 MB
    assert gathered["rise_mb"] < 4 * CACHE_MB, gathered["rise_mb"]
