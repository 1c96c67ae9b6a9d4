"""The processes of a torchrun run: who this one is, and the few collectives the loop needs.

Outside torchrun (one process) every function here is a no-op or the local value.
"""

import io
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cg3d.models.model import check_cuda


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def pick_device(name: str) -> torch.device:
    """`train.device` as a torch device ("auto": cuda if available); under DDP, this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    check_cuda(name, "train.device")
    device = torch.device(name)
    if device.type == "cuda" and dist.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


_host_groups: dict[int, Any] = {}


def host_group() -> Any:
    """The process group for values the host needs (batch counts, flags): gloo, on CPU
    tensors, so exchanging them never waits for the GPU; nccl's would copy them to the device
    and read them back, which waits for every kernel queued before. None: the default group,
    when that is gloo already. Made by every process at the same point (at the first exchange,
    which the processes reach in the same order)."""
    if dist.get_backend() == "gloo":
        return None
    key = id(dist.group.WORLD)  # a new default group (a test's second run) gets its own
    if key not in _host_groups:
        _host_groups[key] = dist.new_group(backend="gloo")
    return _host_groups[key]


def all_gather_ints(value: int) -> list[int]:
    """`value` of every process, in rank order (over the host group): a tensor all_gather of
    one int64 each, not `all_gather_object` (a pickle of each value over the group)."""
    size = world()[1]
    if size == 1:
        return [value]
    # The tensors are views of a numpy array: host memory by construction, read as numpy
    # (no tensor read, which on a device tensor would wait for the GPU's queued kernels).
    values = np.zeros(size, dtype=np.int64)
    gathered = [torch.from_numpy(values[rank : rank + 1]) for rank in range(size)]
    mine = torch.from_numpy(np.array([value], dtype=np.int64))
    dist.all_gather(gathered, mine, group=host_group())
    return [int(v) for v in values.tolist()]


def gather_to_first(state: dict[str, Any]) -> list[dict[str, Any]]:
    """`state` of every process, in rank order, on the first process ([] on the others); the
    first's own is `state` itself. Sent over the host group as `torch.save` bytes and read
    with `weights_only=True`, as a checkpoint is: tensors and plain values only, never
    `all_gather_object`'s pickle.

    Each rank's bytes are sent to the first on their own, of their own length, and read there
    one at a time: a caption cache is hundreds of MB per rank, and a `dist.gather` held every
    rank's bytes at once, each padded to the longest, beside the first's own state saved for
    nothing (2 ranks of 195 MB each: 1.2 GB more on the first process at its peak, 0.6 GB
    now)."""
    rank, size = world()
    if size == 1:
        return [state]
    if rank != 0:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        all_gather_ints(buffer.tell())
        dist.send(
            torch.frombuffer(buffer.getbuffer(), dtype=torch.uint8), dst=0, group=host_group()
        )
        return []
    lengths = all_gather_ints(0)  # the first's own state is not sent
    states = [state]
    for other in range(1, size):
        data = torch.empty(lengths[other], dtype=torch.uint8)
        dist.recv(data, src=other, group=host_group())
        states.append(torch.load(io.BytesIO(data.numpy().tobytes()), weights_only=True))
        del data  # this rank's bytes, before the next rank's come
    return states


def _all_reduce(values: list[int], op: "dist.ReduceOp") -> list[int]:
    """`values` reduced over every process (over the host group)."""
    if world()[1] == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(tensor, op=op, group=host_group())
    return [int(value) for value in tensor.tolist()]


def every_rank(flag: bool) -> bool:
    """True when `flag` is true on every process: all of them get the same answer."""
    return bool(_all_reduce([int(flag)], dist.ReduceOp.MIN)[0])


def smallest(value: int) -> int:
    """The least of `value` over the processes."""
    return _all_reduce([value], dist.ReduceOp.MIN)[0]


def summed(values: list[int]) -> list[int]:
    """`values` added up over the processes, element by element."""
    return _all_reduce(values, dist.ReduceOp.SUM)


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """All-reduce-average the grads of parameters that DDP does not manage (the prompts, a
    trained temperature)."""
    _, size = world()
    if size == 1:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= size


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()
