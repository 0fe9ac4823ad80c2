"""Interleaved timing for side-by-side benchmarks: a fast path and its references, round by round.

pytest-benchmark times the fast path; each reference runs, timed here, in the round's
``setup`` right before it, so every path sees the same machine state. ``extra_info``
gets every time (wall and CPU) and the ratios fast / reference, which
``benchmarks/ratios.py`` prints.
"""
from __future__ import annotations

import statistics
import time

import torch


def timed(fn, log: dict, key: str):
    """fn, recording its wall-clock and CPU (process) time under ``key``."""
    def call():
        w, c = time.perf_counter(), time.process_time()
        fn()
        log.setdefault(key, []).append((time.perf_counter() - w, time.process_time() - c))
    return call


def interleaved(benchmark, fast, references: dict, rounds: int = 7, warmup: int = 1) -> dict:
    """Benchmark ``fast``; every entry of ``references`` (name -> call) runs, timed by us, right
    before each round. Ratios use CPU time (immune to being descheduled on a shared machine;
    with 1 thread it equals the wall time of an idle machine) and wall time."""
    log: dict = {}
    calls = [timed(fn, log, name) for name, fn in references.items()]
    def setup():
        for call in calls:
            call()

    benchmark.pedantic(timed(fast, log, "fast"), setup=setup, rounds=rounds, warmup_rounds=warmup)
    info = {"threads": torch.get_num_threads(), "rounds": rounds}
    if benchmark.disabled:
        return info
    for name, samples in log.items():
        samples = samples[warmup:]
        info[f"{name}_seconds"] = [w for w, _ in samples]
        info[f"{name}_cpu_seconds"] = [c for _, c in samples]
    fast_cpu = info["fast_cpu_seconds"]
    for name in references:
        ref_cpu, ref_wall = info[f"{name}_cpu_seconds"], info[f"{name}_seconds"]
        info[f"fast_over_{name}_cpu_median"] = statistics.median(fast_cpu) / statistics.median(ref_cpu)
        info[f"fast_over_{name}_cpu_min"] = min(fast_cpu) / min(ref_cpu)
        info[f"fast_over_{name}_wall_median"] = statistics.median(info["fast_seconds"]) / statistics.median(ref_wall)
    benchmark.extra_info.update(info)
    return info
