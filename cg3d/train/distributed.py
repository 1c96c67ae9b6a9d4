"""The processes of a torchrun run: who this one is, and the few collectives the loop needs.

Outside torchrun (one process) every function here is a no-op or the local value.
"""

import io
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

from cg3d.errors import UsageError, printable
from cg3d.models.model import check_cuda
from cg3d.stopping import end_with_parent


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# How long the processes may take to meet at MASTER_ADDR:MASTER_PORT before the run stops.
# torch's own bound is its collectives' (30 min): a WORLD_SIZE=2 left in a shell, or a peer
# that never started, held the lone process silent for half an hour, deaf to SIGTERM (it waits
# in C++). Collectives keep torch's bound: a rank saving a checkpoint keeps the others waiting.
JOIN_TIMEOUT_VARIABLE = "CG3D_JOIN_TIMEOUT_S"
JOIN_TIMEOUT_S = 600
# The most it may be: a week. timedelta and torch's C++ clocks overflow past some bound
# (99999999999999999: an OverflowError traceback), and no launcher waits longer for a node.
JOIN_TIMEOUT_MAX_S = 7 * 24 * 3600
LAUNCHER_WORDS = (
    "set by a launcher (torchrun, srun, a job script); unset it to train in one process"
)


def _whole_number(value: str) -> int | None:
    """`value` as written by a launcher or a user: ASCII digits only, else None. `int()` also
    took " 2", "+2", "٢" and "2_0", which no launcher writes."""
    return int(value) if value.isascii() and value.isdigit() else None


def _launch_number(name: str, least: int = 0) -> int | None:
    """Environment variable `name` as a whole number of at least `least`; None when unset.
    torch read it with `int()` (a traceback on "abc", "2.0" or "") and took "-1" as one
    process."""
    value = os.environ.get(name)
    if value is None:
        return None
    number = _whole_number(value)
    if number is None or number < least:
        raise UsageError(
            f"{name}={printable(repr(value))} is not a whole number of at least {least}"
            f" ({LAUNCHER_WORDS})"
        )
    return number


def launch_world() -> tuple[int, int]:
    """(rank, world size) that the launcher's variables describe, checked before any process
    waits for another: one line naming the variable that is malformed, missing or out of range.
    Only torchrun's variables count (WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT); Slurm's (SLURM_PROCID, SLURM_NTASKS) are not read, so an
    `salloc` shell's command runs as one process."""
    size = _launch_number("WORLD_SIZE", least=1) or 1
    rank = _launch_number("RANK")
    local_rank = _launch_number("LOCAL_RANK")
    local_size = _launch_number("LOCAL_WORLD_SIZE", least=1)
    if rank is not None and rank >= size:
        raise UsageError(f"RANK={rank} is not below WORLD_SIZE={size} ({LAUNCHER_WORDS})")
    if local_size is not None and local_size > size:
        raise UsageError(
            f"LOCAL_WORLD_SIZE={local_size} is above WORLD_SIZE={size} ({LAUNCHER_WORDS})"
        )
    if local_rank is not None and local_size is not None and local_rank >= local_size:
        raise UsageError(
            f"LOCAL_RANK={local_rank} is not below LOCAL_WORLD_SIZE={local_size} ({LAUNCHER_WORDS})"
        )
    if size > 1:
        if rank is None:
            raise UsageError(f"RANK is not set, but WORLD_SIZE={size} ({LAUNCHER_WORDS})")
        if not os.environ.get("MASTER_ADDR"):
            raise UsageError(
                f"MASTER_ADDR is not set, but WORLD_SIZE={size}: the host of the first process"
                f" ({LAUNCHER_WORDS})"
            )
        port = os.environ.get("MASTER_PORT")
        if port is None:
            raise UsageError(f"MASTER_PORT is not set, but WORLD_SIZE={size} ({LAUNCHER_WORDS})")
        if not 0 < (_whole_number(port) or 0) < 2**16:
            raise UsageError(
                f"MASTER_PORT={printable(repr(port))} is not a port (1 to 65535) ({LAUNCHER_WORDS})"
            )
    return rank or 0, size


def join_timeout_s() -> int:
    """CG3D_JOIN_TIMEOUT_S, else JOIN_TIMEOUT_S."""
    value = os.environ.get(JOIN_TIMEOUT_VARIABLE)
    if value is None:
        return JOIN_TIMEOUT_S
    seconds = _whole_number(value)
    if seconds is None or not 1 <= seconds <= JOIN_TIMEOUT_MAX_S:
        raise UsageError(
            f"{JOIN_TIMEOUT_VARIABLE}={printable(repr(value))} is not a whole number of seconds"
            f" from 1 to {JOIN_TIMEOUT_MAX_S} (a week)"
        )
    return seconds


def init_distributed() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs.
    The processes meet within `join_timeout_s`; a taken MASTER_PORT, an unreachable MASTER_ADDR
    or peers that never come end the run with one line naming them."""
    rank, size = launch_world()
    end_with_launcher()
    if size == 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"LOCAL_RANK={local_rank}, but this process sees {torch.cuda.device_count()}"
                " GPU(s) (CUDA_VISIBLE_DEVICES, the job's GPUs): one process per GPU"
            )
        torch.cuda.set_device(local_rank)
    timeout = join_timeout_s()
    where = printable(
        f"MASTER_ADDR={os.environ['MASTER_ADDR']} MASTER_PORT={os.environ['MASTER_PORT']}"
    )
    try:
        with _native_stderr_held():
            store = _met(rank, size, timeout)
    except dist.DistError as error:
        raise UsageError(_join_failed_line(error, rank, size, where, timeout)) from None
    store.set_timeout(default_pg_timeout)  # the collectives' bound, as torch's own init sets
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, store=store, rank=rank, world_size=size)


def end_with_launcher() -> None:
    """Under torchrun (TORCHELASTIC_RUN_ID set): this rank stops as on SIGTERM (its checkpoint
    whole, one line, exit 143) the moment torchrun ends. torchrun starts each rank in a
    session of its own and handles no SIGUSR1: a USR1 to it alone (`kill -USR1`, a batch
    script's `trap` forwarding Slurm's `--signal=B:USR1@90`) killed it (-10) and left its
    ranks training on, orphaned, until Slurm's SIGKILL; a `kill -9` of torchrun too. Not
    under another launcher: a shell that starts a rank in the background may end first."""
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
        end_with_parent(os.getppid(), signal.SIGTERM)


def _met(rank: int, size: int, timeout: int) -> Any:
    """The store of the processes' meeting at MASTER_ADDR:MASTER_PORT (torch's env://
    rendezvous), waited for in a thread: torch waits in C++, where this process heard no stop
    signal (a Ctrl-C, `scancel`'s SIGTERM) until the join timed out, ten minutes by default.
    The main thread waits in slices, so that a signal is heard within one, even when the
    kernel gave it to the waiting thread. A stopped run leaves that thread waiting: it is a
    daemon, and ends with the process."""
    met: list[Any] = []

    def meet() -> None:
        try:
            _master_host_found()
            wait = timedelta(seconds=timeout)
            met.append(next(dist.rendezvous("env://", rank, size, timeout=wait))[0])
        except BaseException as error:  # raised in the main thread, below
            met.append(error)

    waiter = threading.Thread(target=meet, name="cg3d-join", daemon=True)
    waiter.start()
    while waiter.is_alive():
        waiter.join(0.5)
    if isinstance(met[0], BaseException):
        raise met[0]
    return met[0]


def _master_host_found() -> None:
    """MASTER_ADDR as a host this machine finds: torch tried to reach one it cannot (a name
    not in the DNS, with a space, "[::1]" with brackets) until the join timed out, and then
    said the other processes had not come."""
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:  # UnicodeError: a name IDNA cannot encode
        hint = ": an IPv6 address goes without brackets (::1)" if host.startswith("[") else ""
        raise UsageError(
            f"MASTER_ADDR={printable(repr(host))} is not a host this machine finds"
            f" ({printable(str(error))}){hint} ({LAUNCHER_WORDS})"
        ) from None


@contextmanager
def _native_stderr_held() -> Iterator[None]:
    """The process's stderr (descriptor 2) into a temp file for the block, written out after
    it when it ends without an error. torch's C++ side logs each failed try to meet, with its
    stack frames, straight to descriptor 2: a page of frames above the one line naming why.
    A stderr that is closed is left so; one that cannot take the held lines (/dev/full, a
    closed pipe) loses them, not the run (it had ended on an OSError, its processes met)."""
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2: torch's lines go nowhere either way
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        try:
            with open(2, "wb", closefd=False) as stderr:  # what torch said on its way to success
                stderr.write(held.read())
        except OSError:
            pass


def _join_failed_line(error: Exception, rank: int, size: int, where: str, timeout: int) -> str:
    """Why the processes did not meet, from torch's error (its first line, which names the
    cause: EADDRINUSE, a timeout, a host not found)."""
    first = printable(
        str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    )
    if "EADDRINUSE" in str(error):
        return (
            f"{where}: the port is taken on this machine (another run, or torchrun's default"
            " 29500 twice on one node): give each run its own (torchrun --master-port, or"
            " torchrun --standalone)"
        )
    if isinstance(error, dist.DistStoreError) or "timed out" in str(error).lower():
        return (
            f"RANK={rank} of WORLD_SIZE={size}: the other processes did not join at {where}"
            f" within {timeout} s ({JOIN_TIMEOUT_VARIABLE}): start all {size}, or unset"
            f" WORLD_SIZE to train in one process ({first})"
        )
    return f"{where}: the processes could not meet ({first})"


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
