"""The one timing loop of the benchmarks: a warm-up call, then `repeats` timed calls, with the
GPU's queue drained before and after (CUDA runs asynchronously)."""

import time
from collections.abc import Callable

import torch


def timed_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Mean milliseconds of one `fn()` on `device`, after one untimed warm-up call (kernels
    compile, caches fill)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1000
