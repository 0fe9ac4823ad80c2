"""In-place sums in the UNet block and the convolutions, against the same network with a new
tensor for each (what models/layers.py did before 2026-11-30), side by side in one run.

``DualUNetBlock``, ``Conv2d``, ``Linear`` and the fused ``DualConv`` add biases, the
embedding, the skip and the attention residual into the fresh outputs of their products and
scale them in place, as EDM and the authors' code do. ``out_of_place`` replays the same code
with every ``Tensor.add_`` / ``Tensor.mul_`` turned into ``torch.add`` / ``torch.mul`` (a
torch function mode), which is what the block computed before; the in-place run goes through a
mode that changes nothing, so both pay the same interception cost. Outputs and gradients are
checked to be bit-identical before timing.

Whole DFU (fast spectral path) = EDMPrecond(DualUNet), forward + backward, batch 8, one thread,
CPU time; ``benchmarks/ratios.py`` prints in-place / out-of-place.
"""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from _dfu import ARCHS, RESOLUTIONS, build, inputs, rounds, run_step
from _timing import interleaved

pytestmark = pytest.mark.usefixtures("bench_threads")


class Replay(TorchFunctionMode):
    """Calls every torch function as given, or (``out_of_place``) ``Tensor.add_`` / ``mul_`` as
    ``torch.add`` / ``torch.mul``: a new tensor, the same values."""

    SWAP = {torch.Tensor.add_: torch.add, torch.Tensor.mul_: torch.mul}

    def __init__(self, out_of_place: bool):
        super().__init__()
        self.swap = self.SWAP if out_of_place else {}
        self.swapped = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.swap:
            self.swapped += 1
            func = self.swap[func]
        return func(*args, **(kwargs or {}))


@pytest.mark.benchmark(group="inplace-sums")
@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("arch", ARCHS)
def test_inplace_sums(benchmark, arch, res):
    net = build(arch)
    x, sigma = inputs(res)

    def step(out_of_place: bool):
        def call():
            with Replay(out_of_place) as mode:
                y = run_step(net, x, sigma)
            return y, mode
        return call

    results = {}
    for out_of_place in (False, True):
        y, mode = step(out_of_place)()
        results[out_of_place] = (y.detach(), [p.grad.clone() for p in net.parameters()], mode.swapped)
    (y_in, g_in, _), (y_out, g_out, swapped) = results[False], results[True]
    assert swapped > 0, "no in-place sum was replayed: the benchmark compares nothing"
    assert torch.equal(y_in, y_out) and all(torch.equal(a, b) for a, b in zip(g_in, g_out))

    benchmark.extra_info.update(arch=arch, resolution=res, replayed_sums_per_step=swapped)
    interleaved(benchmark, step(False), {"out_of_place": step(True)}, rounds=rounds(arch, res))
