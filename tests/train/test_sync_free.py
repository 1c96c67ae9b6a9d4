"""Issue 24's update levers: nothing in an update reads the device back, the levers (foreach
and fused kernels, uint8 views normalised on the device, the prefetcher) leave the numbers as
they were, the loop reads the losses only every `log_every` updates, and `train.compile`
compiles the two trained towers."""

import numpy as np
import pytest
import torch
import torch.distributed as dist

from cg3d.train import data, loop
from cg3d.train.augment import Draw, augment_after_fps
from cg3d.train.data import CLIP_MEAN, CLIP_STD, ClipPreprocess, prefetch, to_device
from cg3d.train.loop import LossSums, Trainer, prepare_model
from cg3d.train.optim import use_fast_kernels
from cg3d.train.trainer import Levers
from tests.train.helpers import CLASSES, count_host_reads, make_batches, tiny_train_config

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


@pytest.fixture
def host_reads(monkeypatch) -> list[str]:
    """The host reads of tensors made by the project's own code (`count_host_reads`)."""
    return count_host_reads(monkeypatch.setattr)


def uint8_batches(count: int, batch_size: int, seed: int = 0) -> list[dict]:
    """Tiny batches whose views are uint8 pixels, as the loader sends them."""
    batches = make_batches(count, batch_size, seed=seed).batches
    generator = torch.Generator().manual_seed(seed)
    for batch in batches:
        shape = batch["image"].shape
        batch["image"] = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        batch["has_color"] = torch.ones(batch_size, dtype=torch.bool)
    return batches


def make_trainer(tmp_path, levers: Levers, **overrides) -> Trainer:
    config = tiny_train_config(encoder="pointbert-micro", grad_clip=0.05, **overrides)
    model, _ = prepare_model(config, CLASSES, tmp_path)
    return Trainer(model.train(), config, 8, torch.device("cpu"), levers)


@pytest.mark.parametrize("schedule", ["alternating", "joint"])
def test_an_update_reads_nothing_back_from_the_device(tmp_path, host_reads, schedule):
    trainer = make_trainer(tmp_path, Levers(), schedule=schedule, train_logit_scale=True)
    batches = uint8_batches(4, 8)
    trainer.update(batches[:2], 0)  # warm: caches and optimiser states made
    host_reads.clear()
    for step, batch in enumerate(batches[2:], start=1):
        logged = trainer.update([batch], step)
    assert host_reads == []
    assert all(isinstance(value, torch.Tensor) and value.ndim == 0 for value in logged.values())


def with_scale_and_shift(batches: list[dict], seed: int) -> list[dict]:
    """The batches as the loader sends training batches: each sample's scale and shift drawn
    (one sample's left undrawn: 1 and 0), to be applied on the device."""
    rng = np.random.default_rng(seed)
    for batch in batches:
        size = len(batch["points"])
        batch["scale"] = torch.from_numpy(rng.uniform(2 / 3, 3 / 2, (size, 3)).astype(np.float32))
        batch["shift"] = torch.from_numpy(rng.uniform(-0.2, 0.2, (size, 3)).astype(np.float32))
        batch["scale"][0], batch["shift"][0] = 1.0, 0.0
    return batches


def scaled_per_sample(batch: dict) -> dict:
    """The batch as the loader made it before issue 24: scale and shift applied to each
    sample's points in its worker (`augment_after_fps`)."""
    points = []
    for cloud, scale, shift in zip(batch["points"], batch["scale"], batch["shift"], strict=True):
        draw = Draw(scale=scale.numpy(), shift=shift.numpy())
        points.append(torch.from_numpy(augment_after_fps(cloud.numpy().copy(), draw)))
    rest = {k: v for k, v in batch.items() if k not in ("scale", "shift")}
    return rest | {"points": torch.stack(points)}


def test_every_lever_on_gives_the_previous_updates_parameters_to_the_bit(tmp_path):
    """Before issue 24: float views normalised by the loader, points scaled and shifted per
    sample in the loader, clipping and optimiser steps per parameter, the losses read back
    every update. After: uint8 views normalised and points scaled and shifted in the trainer,
    foreach clipping and steps, the prefetcher, the losses read back at the end."""
    raw = with_scale_and_shift(uint8_batches(6, 8, seed=3), seed=3)
    preprocess = ClipPreprocess(raw[0]["image"].shape[-1])
    floats = [
        scaled_per_sample(batch) | {"image": preprocess.normalize(batch["image"])} for batch in raw
    ]
    assert not any(torch.equal(b["points"], f["points"]) for b, f in zip(raw, floats, strict=True))
    old = make_trainer(tmp_path / "old", Levers(foreach=False, fused=False, prefetch=False))
    new = make_trainer(tmp_path / "new", Levers())
    new.model.load_state_dict(old.model.state_dict())
    assert all(g["foreach"] is False for o in old.optimizers.values() for g in o.param_groups)
    assert all(g["foreach"] is True for o in new.optimizers.values() for g in o.param_groups)

    torch.manual_seed(0)  # stochastic depth draws
    old_losses = [
        {k: float(v) for k, v in old.update([b], s).items()} for s, b in enumerate(floats)
    ]
    torch.manual_seed(0)
    batches = prefetch(iter(raw), torch.device("cpu"))
    new_logged = [new.update([batch], step) for step, batch in enumerate(batches)]
    new_losses = [{k: float(v) for k, v in logged.items()} for logged in new_logged]

    assert new_losses == old_losses
    assert not any(torch.equal(b["points"], f["points"]) for b, f in zip(raw, floats, strict=True))
    after = new.model.state_dict()
    for name, value in old.model.state_dict().items():
        assert torch.equal(value, after[name]), name
    for name in ("encoder", "prompts"):  # the optimisers' states too: momenta, moments
        old_state = old.optimizers[name].state_dict()["state"]
        new_state = new.optimizers[name].state_dict()["state"]
        for index, values in old_state.items():
            for key, value in values.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(new_state[index][key]))


def test_uint8_views_normalised_in_the_trainer_equal_the_float_path(tmp_path):
    trainer = make_trainer(tmp_path, Levers())
    pixels = uint8_batches(1, 4)[0]["image"]
    # CLIP's preprocessing written out: to [0, 1], then (x - mean) / std per channel
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    expected = (pixels.double() / 255 - mean.double()) / std.double()
    images = trainer.images({"image": pixels})
    assert images.dtype == torch.float32
    torch.testing.assert_close(images.double(), expected, rtol=1e-5, atol=1e-5)
    # a float batch is taken as already normalised
    assert torch.equal(trainer.images({"image": images}), images)


def test_the_prefetcher_hands_on_the_same_batches_in_order_copying_one_ahead(monkeypatch):
    batches = uint8_batches(5, 2)
    events: list[str] = []
    copy = data.to_device

    def recorded(batch, device):
        events.append(f"copy {batch['caption'][0]}")
        return copy(batch, device)

    monkeypatch.setattr(data, "to_device", recorded)
    out = []
    for batch in prefetch(iter(batches), torch.device("cpu")):
        events.append(f"use {batch['caption'][0]}")
        out.append(batch)
    assert len(out) == len(batches)
    for given, got in zip(batches, out, strict=True):
        assert given.keys() == got.keys()
        assert all(
            torch.equal(given[k], got[k])
            if isinstance(given[k], torch.Tensor)
            else given[k] == got[k]
            for k in given
        )
    names = [b["caption"][0] for b in batches]
    # batch i + 1's copy is issued before batch i is used: on CUDA it overlaps the compute
    assert events == [f"copy {names[0]}"] + [
        event
        for i in range(len(names))
        for event in ([f"copy {names[i + 1]}"] if i + 1 < len(names) else []) + [f"use {names[i]}"]
    ]


def test_only_the_models_inputs_go_to_the_device():
    batch = uint8_batches(1, 2)[0] | {"key": ["a", "b"]}
    moved = to_device(batch, torch.device("meta"))  # a device without memory, on any machine
    assert {k for k, v in moved.items() if isinstance(v, torch.Tensor) and v.is_meta} == {
        "points",
        "image",
        "cls",
    }
    assert moved["has_color"] is batch["has_color"] and moved["caption"] is batch["caption"]
    assert moved["image"].dtype == torch.uint8  # travels as uint8, normalised on arrival


def test_the_loop_reads_the_losses_every_n_updates_and_averages_each_over_its_updates():
    sums = LossSums(every=2)
    updates = [
        {"loss": torch.tensor(1.5), "loss_point_text": torch.tensor(0.5)},
        {"loss": torch.tensor(2.25), "loss_image_text": torch.tensor(2.25)},
        {"loss": torch.tensor(0.75), "loss_point_text": torch.tensor(0.25)},
    ]
    running = [sums.add(update) for update in updates]
    assert running == [None, (1.5 + 2.25) / 2, None]
    assert sums.means() == {
        "loss": (1.5 + 2.25 + 0.75) / 3,
        "loss_point_text": (0.5 + 0.25) / 2,
        "loss_image_text": 2.25,
    }


def test_an_epoch_reads_the_losses_back_once_with_a_long_log_interval(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, Levers(), log_every=1000)
    reads = []
    original = LossSums.means
    monkeypatch.setattr(LossSums, "means", lambda self: reads.append(1) or original(self))
    batches = loop.BatchList(uint8_batches(4, 8))
    record, _, step = loop.train_epoch(trainer, batches, 0, 0, 4)
    assert step == 4 and reads == [1]
    assert record["train/loss"] > 0 and "train/loss_point_text" in record


def test_train_compile_compiles_the_encoder_and_the_prompted_tower(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
    trainer = make_trainer(tmp_path / "on", Levers.of_params(tiny_train_config(compile=True)))
    assert compiled == [trainer.model.point_encoder, trainer.model.visual]
    compiled.clear()
    make_trainer(tmp_path / "off", Levers.of_params(tiny_train_config()))
    assert compiled == []


def test_fused_kernels_are_asked_for_on_cuda_only_and_survive_a_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, Levers())
    use_fast_kernels(trainer.optimizers, torch.device("cuda"))  # flags only: no state yet
    assert all(
        (g["fused"], g["foreach"]) == (True, False)
        for o in trainer.optimizers.values()
        for g in o.param_groups
    )
    state = {"optimizers": {n: o.state_dict() for n, o in trainer.optimizers.items()}}
    state |= {"schedulers": {n: s.state_dict() for n, s in trainer.schedulers.items()}}
    state["text_cache"] = trainer.texts.state()
    trainer.load_state(state)  # on the CPU again: foreach, whatever the checkpoint said
    assert all(
        (g["fused"], g["foreach"]) == (False, True)
        for o in trainer.optimizers.values()
        for g in o.param_groups
    )


def test_under_nccl_host_values_go_over_one_gloo_group_on_cpu_tensors(monkeypatch):
    """Batch counts and flags are exchanged on the host: through nccl they would be copied
    to the GPU and read back, waiting for every kernel queued before."""
    from cg3d.train import distributed, losses

    made, calls = [], []
    monkeypatch.setattr(distributed, "_host_groups", {})
    monkeypatch.setattr(distributed, "world", lambda: (1, 2))
    monkeypatch.setattr(losses, "world", lambda: (1, 2))
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(dist, "new_group", lambda backend: made.append(backend) or "host group")

    def all_reduce(tensor, op=None, group=None):
        calls.append(("all_reduce", tensor.device.type, group))

    def all_gather(out, tensor, group=None):
        calls.append(("all_gather", tensor.device.type, group))
        out[0].fill_(3)
        out[1].copy_(tensor)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "all_gather", all_gather)
    monkeypatch.setattr(losses._GatherWithGrad, "apply", lambda features, counts, rank: counts)

    assert distributed.every_rank(True) is True
    assert distributed.summed([2, 5]) == [2, 5]
    assert losses.gather_features(torch.zeros(4, 8)) == ((3, 4), 3)  # counts, row offset
    assert made == ["gloo"]  # one group, made at the first exchange
    assert calls == [
        ("all_reduce", "cpu", "host group"),
        ("all_reduce", "cpu", "host group"),
        ("all_gather", "cpu", "host group"),
    ]
