"""Model and layer kernels (forward, forward+backward, one Heun step, SpectralConv2d, Inception).

Each is also reported as a ratio to the calibration GEMM measured in the same
run (`benchmarks/ratios.py`), so machine-speed drift cancels.
"""
from __future__ import annotations

import pytest
import torch

from bench.perf import CALIBRATION, KERNELS

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.benchmark(group="kernels")
@pytest.mark.parametrize("name", list(KERNELS))
def test_kernel(benchmark, name):
    fn = KERNELS[name].make(DEVICE)

    def call():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(call, rounds=5, iterations=1, warmup_rounds=1)
