"""The DFU the side-by-side benchmarks time (test_spectral.py, authors_compare.py): its fixed weights,
inputs and training step. Imports only torch and models/, so the authors' interpreter can run it too."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from models.edm import EDMPrecond
from models.networks import ArchConfig, DualUNet, get_arch

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "authors_dualunet_fixture.pt"
BATCH = 8
# The grid every whole-DFU comparison runs (test_spectral.py, test_inplace.py, authors_compare.py).
ARCHS = ("fixture", "cpu-small")
RESOLUTIONS = (32, 64)


def rounds(arch: str, res: int) -> int:
    """Timed rounds of ``arch`` at ``res`` px: $DFU_BENCH_ROUNDS (7) at 32 px, two fewer (at least
    3) above; three times as many for the fixture, whose steps take 27-136 ms and whose rounds
    spread widely within one run (per-round ratios 0.59-0.71 in one run, 0.65-0.78 in another),
    too widely for 7 or 5 rounds to tell a median near 0.7 from 0.7."""
    n = int(os.environ.get("DFU_BENCH_ROUNDS", "7"))
    n = n if res <= 32 else max(3, n - 2)
    return 3 * n if arch == "fixture" else n


def build(arch: str, mode: str = "dual") -> EDMPrecond:
    """EDMPrecond(DualUNet) in training mode with fixed weights: the authors' fixture state dict
    (``arch == "fixture"``), or seed 0 for a named config."""
    if arch == "fixture":
        fx = torch.load(FIXTURE, weights_only=True)
        net = EDMPrecond(DualUNet(ArchConfig.from_dict({**fx["arch"], "mode": mode})))
        net.load_state_dict(fx["state_dict"], strict=mode == "dual")
        return net.train()
    torch.manual_seed(0)
    return EDMPrecond(DualUNet(get_arch(arch, mode=mode))).train()


def inputs(res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of BATCH noisy images at ``res`` px and their noise levels, the same for every path."""
    g = torch.Generator().manual_seed(res)
    x = torch.randn(BATCH, 3, res, res, generator=g)
    return x, torch.exp(torch.randn(BATCH, generator=g) * 1.2 - 1.2)


def run_step(net: EDMPrecond, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """One forward + backward of the loss D(x; sigma)^2.mean(); the output."""
    net.zero_grad(set_to_none=True)
    y = net(x, sigma)
    y.square().mean().backward()
    return y
