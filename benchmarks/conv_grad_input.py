"""A lead for the spatial branch (shared by every model): the input gradient of a 3x3 convolution.

For stride 1 and padding 1 the input gradient of conv2d(x, w) is conv2d(gy, w') with w' the
weights flipped in both spatial axes and with in/out channels swapped. torch's CPU backward
(aten::convolution_backward, oneDNN) computes it with another kernel whose speed depends on
the shape. One thread, CPU time, interleaved:

    .venv/bin/python benchmarks/conv_grad_input.py                      # the two kernels alone
    .venv/bin/python benchmarks/conv_grad_input.py --whole-step [ARCH]  # inside a DFU step

Alone, at the shapes the DFU configs run (batch 8): median of 9 repeats of each call.

``--whole-step`` (ARCH: fixture, the default, or cpu-small): the whole DFU training step of
test_spectral.py (benchmarks/_dfu.py) at 32 and 64 px, with every 3x3 convolution's backward
taken one of two ways -- torch's kernel (``torch``), or, for convolutions with at most 8
output channels, the input gradient as the flipped forward convolution (``flipped``) -- and
each with the reference and the fast spectral layer. Both ways run through the same
autograd function, so they differ only in the kernel. It prints, per resolution, the median
step times, each round's flipped / torch ratio (median and its interval, as ratios.py), and
fast / reference both ways.

Not used by the harness (reports/perf/cpu.md says why).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from _cli import Parser

SHAPES = [(8, 64), (16, 64), (32, 64), (64, 32), (64, 16)]  # (channels, px)
FLIP_MAX_OUT = 8  # --whole-step: output channels up to which the flipped kernel is used


def cpu_ms(fn, n: int = 50) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e3


def alone() -> None:
    print("channels  px  | backward: input grad  weight grad  both | input grad as conv2d(flipped w)  rel. diff")
    for c, r in SHAPES:
        g = torch.Generator().manual_seed(c * 1000 + r)
        x, gy = torch.randn(8, c, r, r, generator=g), torch.randn(8, c, r, r, generator=g)
        w = torch.randn(c, c, 3, 3, generator=g) * 0.1
        flipped = w.flip(2, 3).transpose(0, 1).contiguous()

        def backward(mask):
            return lambda: torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], [1, 1], [1, 1], False,
                                                               [0, 0], 1, mask)

        calls = {"gx": backward([True, False, False]), "gw": backward([False, True, False]),
                 "both": backward([True, True, False]),
                 "alt": lambda: torch.nn.functional.conv2d(gy, flipped, padding=1)}
        for fn in calls.values():  # warm-up
            fn()
        times: dict = {k: [] for k in calls}
        for _ in range(9):
            for k, fn in calls.items():
                times[k].append(cpu_ms(fn, 20))
        med = {k: statistics.median(v) for k, v in times.items()}
        ref = calls["gx"]()[0]
        diff = ((ref - calls["alt"]()).abs().max() / ref.abs().max()).item()
        print(f"{c:8d} {r:3d}  | {med['gx']:9.2f} ms {med['gw']:9.2f} ms {med['both']:7.2f} ms | "
              f"{med['alt']:9.2f} ms ({med['alt'] / med['gx']:.2f}x)  {diff:.1e}")


class _Switch:
    """The convolution backward of a whole step: torch's kernel, or the flipped forward convolution for
    the input gradient (``flipped``), installed for conv2d (Conv2d) and aten's convolution_backward
    (the fused DualConv's backward calls it by name)."""

    def __init__(self):
        self.flipped = False
        self.conv2d = torch.nn.functional.conv2d
        self.conv_backward = torch.ops.aten.convolution_backward
        switch = self

        class Conv(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, w):
                ctx.save_for_backward(x, w)
                return switch.conv2d(x, w, padding=1)

            @staticmethod
            def backward(ctx, gy):
                x, w = ctx.saved_tensors
                gx, gw, _ = switch.backward(gy.contiguous(), x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
                return gx, gw

        self.function = Conv

    def install(self) -> None:
        def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
            if (bias is None and tuple(w.shape[-2:]) == (3, 3) and padding == 1 and stride == 1 and dilation == 1
                    and groups == 1 and x.dim() == 4 and torch.is_grad_enabled()):
                return self.function.apply(x, w)
            return self.conv2d(x, w, bias, stride, padding, dilation, groups)
        torch.nn.functional.conv2d = conv2d
        torch.ops.aten.convolution_backward = self.backward

    def backward(self, gy, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, mask):
        plain = (tuple(w.shape[-2:]) == (3, 3) and list(stride) == [1, 1] and list(padding) == [1, 1]
                 and list(dilation) == [1, 1] and not transposed and groups == 1 and not mask[2])
        if not (self.flipped and plain and mask[0] and w.shape[0] <= FLIP_MAX_OUT):
            return self.conv_backward(gy, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding,
                                      groups, mask)
        gx = self.conv2d(gy, w.flip(2, 3).transpose(0, 1), padding=1)
        gw = self.conv_backward(gy, x, w, None, stride, padding, dilation, False, output_padding, 1,
                                [False, True, False])[1] if mask[1] else None
        return gx, gw, None


def whole_step(arch: str, rounds_scale: int) -> None:
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]
    from _dfu import RESOLUTIONS, build, inputs, rounds, run_step
    from _timing import median_interval
    from models.layers import SpectralConv2d

    switch = _Switch()
    switch.install()
    net = build(arch)
    spectral = [m for m in net.modules() if isinstance(m, SpectralConv2d)]
    print(f"{arch}: whole DFU forward + backward, batch 8, 1 thread, CPU time; 'flipped' = input gradients "
          f"of 3x3 convolutions with <= {FLIP_MAX_OUT} output channels as the flipped forward convolution")
    for res in RESOLUTIONS:
        x, sigma = inputs(res)
        combos = [(flip, impl) for flip in (False, True) for impl in ("reference", "dft")]
        grads = {}
        for flip in (False, True):
            switch.flipped = flip
            run_step(net, x, sigma)
            grads[flip] = [p.grad.clone() for p in net.parameters() if p.grad is not None]
        rel = max(((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()
                  for a, b in zip(grads[False], grads[True]))
        times: dict = {c: [] for c in combos}
        n = rounds(arch, res) * rounds_scale
        for r in range(n + 2):  # two warm-up rounds
            for flip, impl in combos:
                switch.flipped = flip
                for m in spectral:
                    m.impl = impl
                t = time.process_time()
                run_step(net, x, sigma)
                if r >= 2:
                    times[(flip, impl)].append(time.process_time() - t)
        print(f"  {res} px, {n} rounds, largest relative gradient difference {rel:.1e}")
        for impl, name in (("reference", "reference layer"), ("dft", "fast layer")):
            each = [f / t for f, t in zip(times[(True, impl)], times[(False, impl)], strict=True)]
            lo, hi, cov = median_interval(each)
            print(f"    {name:15s} torch {statistics.median(times[(False, impl)]) * 1e3:7.1f} ms   flipped "
                  f"{statistics.median(times[(True, impl)]) * 1e3:7.1f} ms   flipped / torch, median round "
                  f"{statistics.median(each):.3f} [{lo:.3f}, {hi:.3f}] ({cov:.0%})")
        for flip in (False, True):
            each = [f / t for f, t in zip(times[(flip, "dft")], times[(flip, "reference")], strict=True)]
            lo, hi, _ = median_interval(each)
            way = "flipped" if flip else "torch"
            print(f"    fast / reference, {way:7s}: median round {statistics.median(each):.3f} [{lo:.3f}, {hi:.3f}]")


def main(argv: list[str]) -> None:
    parser = Parser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--whole-step", metavar="ARCH", nargs="?", const="fixture", choices=("fixture", "cpu-small"),
                        help="time the whole DFU step of ARCH (fixture or cpu-small) both ways")
    parser.add_argument("--rounds-scale", type=int, default=2, metavar="K",
                        help="--whole-step: K times test_spectral.py's rounds (default 2)")
    args = parser.parse_args(argv)
    if args.rounds_scale < 1:
        parser.error(f"--rounds-scale must be at least 1, got {args.rounds_scale}")
    torch.set_num_threads(1)
    if args.whole_step:
        whole_step(args.whole_step, args.rounds_scale)
    else:
        alone()


if __name__ == "__main__":
    main(sys.argv[1:])
