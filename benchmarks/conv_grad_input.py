"""A lead for the spatial branch (shared by every model): the input gradient of a 3x3 convolution.

For stride 1 and padding 1 the input gradient of conv2d(x, w) is conv2d(gy, w') with w' the
weights flipped in both spatial axes and with in/out channels swapped. torch's CPU backward
(aten::convolution_backward, oneDNN) computes it with another kernel whose speed depends on
the shape; this prints both, one thread, CPU time, median of 9 repeats, interleaved, at the
shapes the DFU configs run (batch 8).

    .venv/bin/python benchmarks/conv_grad_input.py

Not used by the harness (see reports/perf/cpu.md for why).
"""
from __future__ import annotations

import statistics
import time

import torch

SHAPES = [(8, 64), (16, 64), (32, 64), (64, 32), (64, 16)]  # (channels, px)


def cpu_ms(fn, n: int = 50) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e3


def main() -> None:
    torch.set_num_threads(1)
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


if __name__ == "__main__":
    main()
