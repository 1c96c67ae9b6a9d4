"""The random states a checkpoint saves and a resume restores (cg3d.train.rng)."""

import torch

from cg3d.train.rng import rng_state, set_rng_state


def test_a_resume_on_a_node_with_fewer_gpus_restores_the_states_of_those_it_has(monkeypatch):
    """A checkpoint saved on a node with 2 GPUs holds a CUDA random state for each; requeued on
    a node with 1 (Slurm's requeue, preemption), `set_rng_state_all` set device 1 too and
    raised "invalid device ordinal"."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append(device))
    first, second = torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [first, second])
    state = rng_state()
    torch.manual_seed(1)  # moved on: the restore must bring the CPU state back
    set_rng_state(state)
    assert restored == [0]
    assert torch.equal(torch.get_rng_state(), state["torch"])
