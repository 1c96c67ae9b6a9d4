"""The timing loops of the benchmarks: `best_seconds` for CPU work (the least of `repeats`
timed calls), `timed_ms` for model work (a warm-up call, then `repeats` timed calls, with the
GPU's queue drained before and after: CUDA runs asynchronously). torch is imported only by
`timed_ms`, so the CPU benches do not load it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def best_seconds(work: Callable[[], object], repeats: int) -> float:
    """The fewest seconds one `work()` took in `repeats` calls (the least disturbed by the
    machine's other work)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def timed_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Mean milliseconds of one `fn()` on `device`, after one untimed warm-up call (kernels
    compile, caches fill)."""
    import torch

    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1000
