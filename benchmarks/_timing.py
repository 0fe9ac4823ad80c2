"""Interleaved timing for side-by-side benchmarks: a fast path and its references, round by round.

pytest-benchmark times the fast path; each reference runs, timed here, in the round's
``setup`` right before it, so every path sees the same machine state. ``extra_info``
gets every time (wall and CPU) and minor page-fault count, the ratios fast / reference,
the ratio of each round (the fast path over the reference run right before it) with a
distribution-free interval for their median, and the target a ratio must stay under where a
benchmark states one;
``benchmarks/ratios.py`` prints them and says whether each target is met.
"""
from __future__ import annotations

import math
import statistics
import time

import torch

from bench.allocator import state as allocator_state

try:
    import resource
except ImportError:  # Windows
    resource = None


def minor_faults() -> int | None:
    """The process's minor page faults so far (first touches of fresh memory), or None where the
    platform does not count them (no ``resource`` module: Windows)."""
    return None if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn, log: dict, key: str):
    """fn, recording its wall-clock and CPU (process) time and its minor page faults under ``key``.

    Faults are recorded because they are part of the CPU time: a computation that allocates more
    fresh memory pays the kernel for each new page, and how often memory is fresh depends on the
    allocator's state (reports/perf/cpu.md: glibc hands large freed blocks back to the system)."""
    def call():
        f, w, c = minor_faults(), time.perf_counter(), time.process_time()
        fn()
        wall, cpu, f_end = time.perf_counter() - w, time.process_time() - c, minor_faults()
        log.setdefault(key, []).append((wall, cpu, None if f is None else f_end - f))
    return call


def median_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, coverage): the order-statistic (sign-test) interval for the median of
    ``values``, the narrowest whose coverage is at least ``level`` for any continuous
    distribution. With too few values for ``level`` (fewer than 6 at 0.95) it is their whole
    range, whose coverage 1 - 2 / 2**n is then less (0.94 for 5 values)."""
    x, n = sorted(values), len(values)
    if n == 0:
        raise ValueError("no values")
    # k: the 1-based rank of the interval's lower end (k - 1 values dropped from each end);
    # P(Binomial(n, 1/2) < k) must stay <= (1 - level) / 2
    k, tail = 0, 0.0
    while k < (n - 1) // 2 and tail + math.comb(n, k) / 2 ** n <= (1 - level) / 2:
        tail += math.comb(n, k) / 2 ** n
        k += 1
    k = max(k, 1)
    return x[k - 1], x[n - k], 1 - 2 * sum(math.comb(n, j) for j in range(k)) / 2 ** n


def interleaved(benchmark, fast, references: dict, rounds: int = 7, warmup: int = 1,
                targets: dict | None = None) -> dict:
    """Benchmark ``fast``; every entry of ``references`` (name -> call) runs, timed by us, right
    before each round. Ratios use CPU time (immune to being descheduled on a shared machine;
    with 1 thread it equals the wall time of an idle machine) and wall time. ``targets``
    (reference name -> ratio) records what fast / that reference must stay at or under."""
    log: dict = {}
    calls = [timed(fn, log, name) for name, fn in references.items()]
    def setup():
        for call in calls:
            call()

    benchmark.pedantic(timed(fast, log, "fast"), setup=setup, rounds=rounds, warmup_rounds=warmup)
    info = {"threads": torch.get_num_threads(), "rounds": rounds, "allocator": allocator_state()}
    if benchmark.disabled:
        return info
    for name, samples in log.items():
        samples = samples[warmup:]
        info[f"{name}_seconds"] = [w for w, _, _ in samples]
        info[f"{name}_cpu_seconds"] = [c for _, c, _ in samples]
        if all(f is not None for _, _, f in samples):
            info[f"{name}_minor_faults"] = [f for _, _, f in samples]
    fast_cpu = info["fast_cpu_seconds"]
    for name in references:
        ref_cpu, ref_wall = info[f"{name}_cpu_seconds"], info[f"{name}_seconds"]
        info[f"fast_over_{name}_cpu_median"] = statistics.median(fast_cpu) / statistics.median(ref_cpu)
        info[f"fast_over_{name}_cpu_min"] = min(fast_cpu) / min(ref_cpu)
        info[f"fast_over_{name}_wall_median"] = statistics.median(info["fast_seconds"]) / statistics.median(ref_wall)
        per_round = [f / r for f, r in zip(fast_cpu, ref_cpu, strict=True)]  # setup runs in warm-up rounds too
        low, high, coverage = median_interval(per_round)
        info[f"fast_over_{name}_cpu_rounds"] = per_round
        info[f"fast_over_{name}_cpu_interval"] = [low, high, coverage]
    for name, target in (targets or {}).items():
        info[f"fast_over_{name}_target"] = target
    benchmark.extra_info.update(info)
    return info
