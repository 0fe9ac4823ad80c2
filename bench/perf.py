"""Throughput kernels, normalised by a calibration GEMM measured in the same run.

A shared CPU's speed drifts from run to run (other tenants, frequency scaling),
so a single absolute time says little. Every kernel here is timed interleaved
with a fixed float32 GEMM and reported as a ratio to it; drift that slows both
cancels. The same kernels back `make bench` (pytest-benchmark) and the
throughput half of `bench regress`.

On a CPU, `measure` runs every kernel on one torch thread and reads CPU time
(process_time), not wall time: with other jobs on the cores, two OpenMP threads
waiting for each other made single calls 10-20x slower and a CI run failed on a
+54% that was the neighbours' load, not the code. One thread's CPU time is what an
idle machine's wall time would be. On CUDA the clock is wall time after a sync.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from bench.datasets import ToyFaces
from bench.dist import machine_kind
from bench.features import FeatureExtractor
from models.adapters import DFUAdapter, UNetAdapter
from models.edm import heun_sample
from models.layers import SpectralConv2d

CALIBRATION = "gemm-512"


@dataclass(frozen=True)
class Kernel:
    name: str
    make: Callable[[torch.device], Callable[[], None]]  # builds state once, returns the timed call


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gemm(device):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, 512, generator=g).to(device)
    b = torch.randn(512, 512, generator=g).to(device)
    return lambda: a @ b


def _net(cls, res: int, batch: int, backward: bool):
    def make(device):
        torch.manual_seed(0)
        net = cls("cpu-tiny", device=device).denoiser()
        x = torch.randn(batch, 3, res, res, device=device)
        sigma = torch.full((batch,), 1.0, device=device)
        if backward:
            net.train()

            def step():
                net.zero_grad(set_to_none=True)
                net(x, sigma).square().mean().backward()
            return step
        net.eval()

        def fwd():
            with torch.no_grad():
                net(x, sigma)
        return fwd
    return make


def _heun_step(cls, res: int, batch: int):
    def make(device):
        torch.manual_seed(0)
        net = cls("cpu-tiny", device=device).denoiser().eval()
        z = torch.randn(batch, 3, res, res, device=device)
        return lambda: heun_sample(net, z, num_steps=2)  # 3 evaluations: one Heun step + final Euler
    return make


def _spectral(device):
    torch.manual_seed(0)
    layer = SpectralConv2d(32, 32, 8, 5).to(device)
    x = torch.randn(8, 32, 64, 64, device=device)

    def call():
        with torch.no_grad():
            layer(x)
    return call


def _inception(device):
    ex = FeatureExtractor(device, batch_size=8)
    images = ToyFaces(size=8).images(range(8), 64)
    return lambda: ex._run(list(images))


KERNELS: dict[str, Kernel] = {k.name: k for k in [
    Kernel(CALIBRATION, _gemm),
    Kernel("unet-fwd-32", _net(UNetAdapter, 32, 8, False)),
    Kernel("dfu-fwd-32", _net(DFUAdapter, 32, 8, False)),
    Kernel("unet-fwdbwd-32", _net(UNetAdapter, 32, 8, True)),
    Kernel("dfu-fwdbwd-32", _net(DFUAdapter, 32, 8, True)),
    Kernel("dfu-fwd-64", _net(DFUAdapter, 64, 4, False)),
    Kernel("unet-heun-48", _heun_step(UNetAdapter, 48, 4)),
    Kernel("dfu-heun-48", _heun_step(DFUAdapter, 48, 4)),
    Kernel("spectralconv-64", _spectral),
    Kernel("inception-8", _inception),
]}


def time_call(fn: Callable[[], None], device: torch.device, repeats: int) -> list[float]:
    """Seconds per call: CPU time of this process on a CPU, wall time after a sync on CUDA."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = clock()
        fn()
        _sync(device)
        out.append(clock() - t0)
    return out


def measure(names: list[str] | None = None, device: torch.device | None = None, repeats: int = 7,
            rounds: int = 3) -> dict:
    """Median seconds per kernel and its ratio to the calibration GEMM, interleaved in `rounds`."""
    device = device or torch.device("cpu")
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # see the module docstring
    try:
        return _measure(names, device, repeats, rounds)
    finally:
        torch.set_num_threads(threads)


def _measure(names: list[str] | None, device: torch.device, repeats: int, rounds: int) -> dict:
    names = [n for n in (names or list(KERNELS)) if n != CALIBRATION]
    calls = {n: KERNELS[n].make(device) for n in [CALIBRATION, *names]}
    for fn in calls.values():  # warm-up: allocator, caches, lazy init
        time_call(fn, device, 2)
    times: dict[str, list[float]] = {n: [] for n in calls}
    for _ in range(rounds):
        for n, fn in calls.items():
            times[n] += time_call(fn, device, repeats)
            times[CALIBRATION] += time_call(calls[CALIBRATION], device, repeats)
    calib = statistics.median(times[CALIBRATION])
    return {
        "device": str(device), "machine": machine_kind(device),
        "calibration": CALIBRATION, "calibration_seconds": calib,
        "clock": "wall" if device.type == "cuda" else "cpu, 1 thread",
        "kernels": {n: {"seconds": statistics.median(times[n]), "ratio": statistics.median(times[n]) / calib}
                    for n in names},
    }
