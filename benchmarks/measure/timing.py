"""The timing harness of the measurements: medians of synchronized wall times (one callable, or
several interleaved round by round) and peak memory.

Peak memory (:class:`Memory`): on CUDA ``max_memory_allocated`` between ``start`` and ``peak``; on
CPU the growth of the process's peak RSS over its size at ``start`` (a peak RSS never comes
down, so each measurement runs in a fresh process). :func:`release_memory` frees what earlier
measurements left before the next one's ``start``.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time

import torch


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Memory:
    """Peak memory of what runs between ``start`` and ``peak`` (see the module docstring)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.base = rss_mib()

    def peak(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return peak_rss_mib() - self.base


def release_memory(device: str) -> None:
    """Free what earlier measurements left (Avalanche templates hold reference cycles, so their
    CUDA tensors wait for the cycle collector) and restart the CUDA allocator's peak, so a
    strategy's peak is its own."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn, repeats: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def eval_seconds(forwards: dict, repeats: int, warmup: int, device) -> dict[str, float]:
    """Median seconds of each forward, the forwards interleaved round by round."""
    for fn in forwards.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in forwards}
    for _ in range(repeats):
        for name, fn in forwards.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}
