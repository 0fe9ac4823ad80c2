"""Model card: parameters (spectral vs spatial), FLOPs per forward by resolution, and
peak memory of one training step -- facts of an architecture, so they live with it.

Parameters and FLOPs are counted on the meta device (no memory, no compute), so
`bench model-card paper-large` costs nothing. FLOPs come from torch's
FlopCounterMode on the computation as it runs: convolutions, matmuls, and the
spectral layer's truncated DFTs and mode mixing, which its default path computes as
matrix products; where FFTs run (the layer's reference path) they are counted as
2.5 N log2 N per real 2-D transform of N points (FlopCounterMode does not count them). Peak memory is measured on the real
device: torch.cuda.max_memory_allocated on CUDA; on a CPU, the allocations
torch.profiler records during one training step (replayed in order for the
peak) plus weights, gradients and Adam state.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Sequence

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from models.edm import EDMPrecond, edm_loss
from models.networks import ArchConfig, DualUNet, get_arch, parameter_breakdown, resolution_problem


def _fft_flops(shape: Sequence[int], dims: Sequence[int]) -> int:
    n = math.prod(shape[d] for d in dims)
    batch = math.prod(shape) // n
    return int(2.5 * n * math.log2(max(n, 2)) * batch)


def _r2c(input_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_flops(input_shape, dim)


def _c2r(input_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_flops(out_shape, dim)


def flops_per_forward(arch: ArchConfig, resolution: int, batch: int = 1) -> int:
    """Floating-point operations of one denoiser evaluation at `resolution` (per batch)."""
    with torch.device("meta"):
        net = EDMPrecond(DualUNet(arch))
        x = torch.zeros(batch, arch.img_channels, resolution, resolution)
        sigma = torch.ones(batch)
    aten = torch.ops.aten
    counter = FlopCounterMode(display=False, custom_mapping={aten._fft_r2c: _r2c, aten._fft_c2r: _c2r})
    with counter, torch.no_grad():
        net(x, sigma)
    return int(counter.get_total_flops())


def _train_step_memory_child(arch_json: str, resolution: int, batch: int) -> None:
    """Runs in a child process (keeps the profiler's own log lines out of the run log).

    One warm-up step, then one profiled step: the profiler's per-op allocations and
    frees, replayed in order, give the step's transient peak; weights, gradients and
    Adam state that live across steps are added from their sizes.
    """
    arch = ArchConfig.from_dict(json.loads(arch_json))
    torch.manual_seed(0)
    net = EDMPrecond(DualUNet(arch)).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    images = torch.rand(batch, arch.img_channels, resolution, resolution) * 2 - 1

    def step():
        opt.zero_grad(set_to_none=True)
        edm_loss(net, images).mean().backward()
        opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    live = peak = 0
    for e in sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    state = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values()
                if torch.is_tensor(t))
    print(json.dumps({"transient": peak, "weights": weights, "optimizer_state": state}))


def train_step_peak_memory(arch: ArchConfig, resolution: int, batch: int, device: torch.device) -> dict:
    """Peak memory of one training step (forward, backward, Adam) at `resolution` x `batch`."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        net = EDMPrecond(DualUNet(arch)).to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        base = torch.cuda.memory_allocated(device)
        images = torch.rand(batch, arch.img_channels, resolution, resolution, device=device) * 2 - 1
        gen = torch.Generator(device=device).manual_seed(0)
        edm_loss(net, images, gen).mean().backward()
        opt.step()
        peak = torch.cuda.max_memory_allocated(device)
        del net, opt, images
        return {"method": "torch.cuda.max_memory_allocated", "peak_bytes": int(peak),
                "model_bytes": int(base), "resolution": resolution, "batch": batch}
    code = ("import sys; from models.card import _train_step_memory_child as f; "
            "f(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(arch.to_dict()), str(resolution), str(batch)],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe failed: {out.stderr.strip().splitlines()[-1:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # weights + gradients (same size as weights, freed at zero_grad) + Adam state + step peak
    static = 2 * r["weights"] + r["optimizer_state"]
    return {"method": "torch.profiler CPU allocations of one step + weights, grads, Adam state",
            "peak_bytes": int(static + r["transient"]), "transient_bytes": int(r["transient"]),
            "resolution": resolution, "batch": batch}


def model_card(arch: str | ArchConfig, resolutions: Sequence[int], memory: dict | None = None) -> dict:
    """Everything but memory is computed on the meta device; pass `memory` to include it."""
    cfg = get_arch(arch)
    with torch.device("meta"):
        counts = parameter_breakdown(EDMPrecond(DualUNet(cfg)))
    flops = {}
    for r in resolutions:
        problem = resolution_problem(cfg, r)
        flops[str(r)] = None if problem else flops_per_forward(cfg, r)
    card = {"arch": arch if isinstance(arch, str) else "custom", "mode": cfg.mode,
            # how the spectral layers mix channels: the authors' componentwise, or the complex ablation
            "spectral_product": cfg.spectral_product if counts["spectral"] else None,
            "params_total": counts["total"], "params_spectral": counts["spectral"],
            "params_spatial": counts["spatial"], "flops_per_forward": flops,
            "flops_note": "per image, one denoiser evaluation, as computed (spectral layers: truncated DFTs "
                          "as matrix products); FFTs, where run, as 2.5 N log2 N"}
    if memory is not None:
        card["train_step_memory"] = memory
    return card
