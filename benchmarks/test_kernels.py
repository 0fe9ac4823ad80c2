"""Model and layer kernels (forward, forward+backward, one Heun step, SpectralConv2d, Inception),
each as a ratio to the calibration GEMM (``bench.perf.CALIBRATION``, gemm-512) timed right before
it in every round, as `bench regress` times them: one torch thread (``bench_threads``), CPU time,
interleaved (``_timing.interleaved``), so machine-speed drift and other jobs cancel.
``benchmarks/ratios.py`` prints kernel / gemm-512 per kernel with an interval for the median round.
"""
from __future__ import annotations

import pytest
import torch

from _timing import interleaved
from bench.perf import CALIBRATION, KERNELS

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.usefixtures("bench_threads")


def synced(fn):
    def call():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
    return call


@pytest.mark.benchmark(group="kernels")
@pytest.mark.parametrize("name", [n for n in KERNELS if n != CALIBRATION])
def test_kernel(benchmark, name):
    interleaved(benchmark, synced(KERNELS[name].make(DEVICE)),
                {CALIBRATION.replace("-", "_"): synced(KERNELS[CALIBRATION].make(DEVICE))}, rounds=5)
