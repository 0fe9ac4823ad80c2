"""Sampling many images fast: batch size from free GPU memory, a Heun loop that can run a
compiled (CUDA-graph) denoiser, and the precision it runs in. Model-side helpers for the
harness's FID grids; nothing here reads suites or writes files.

* ``seeded_latents(n, resolution, seed)`` -- sample j is N(0, I) drawn on the CPU from a
  generator seeded with ``seed + j`` (the adapters' rule), so a sample does not depend on
  batch size, padding, device or process count.
* ``auto_batch_size(denoiser, resolution, device)`` -- on CUDA, the largest batch whose Heun
  step fits in free memory, from the peak memory (``torch.cuda.max_memory_allocated``) of
  probe steps at two batch sizes, fitted as fixed + per-sample and kept under a safety
  margin; on a CPU a fixed default (``CPU_BATCH``).
* ``HeunSampler`` -- EDM's deterministic Heun sampler (the arithmetic of
  ``models.edm.heun_sample``: float64 ODE state, float32 denoiser calls), optionally with
  the denoiser under ``torch.compile`` for fixed shapes: mode "reduce-overhead" on CUDA
  (inductor + CUDA graphs), any backend elsewhere ("aot_eager" in the CPU tests). Batches
  are padded to one size so a compiled denoiser sees one shape per resolution.
* ``precision(name, device)`` -- the arithmetic of sampling (``PRECISIONS``):

  - ``fp32``: float32 everywhere, TF32 off for cuDNN convolutions and CUDA matmuls (PyTorch's
    default lets convolutions use TF32; the authors' code and ``bench run`` turn it off);
  - ``tf32``: float32 tensors, TF32 tensor-core arithmetic (10-bit mantissa products) for
    every convolution and matmul on CUDA, the spectral layer's DFT matrices included;
  - ``bf16``: bf16 autocast for the network; the spectral layer still computes in float32
    (it leaves autocast, by design), with TF32 off; the sampler's ODE state stays float64.

  On a CPU only ``bf16`` changes anything (CPU autocast); ``tf32`` is ``fp32`` there.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from models.edm import edm_sigma_steps

PRECISIONS = ("fp32", "tf32", "bf16")
CPU_BATCH = 32  # today's default batch on every device; on a CPU larger batches gain nothing


def seeded_latents(n: int, resolution: int, seed: int, channels: int = 3, first: int = 0) -> torch.Tensor:
    """(n, channels, R, R) N(0, I) latents on the CPU; row k is sample ``first + k``, drawn from a
    generator seeded with ``seed + first + k`` (exactly ``models.adapters.latents`` for first=0)."""
    out = torch.empty(n, channels, resolution, resolution)
    for k in range(n):
        g = torch.Generator().manual_seed(seed + first + k)
        out[k] = torch.randn(channels, resolution, resolution, generator=g)
    return out


@contextlib.contextmanager
def precision(name: str, device: torch.device | str) -> Iterator[None]:
    """Run the enclosed sampling in ``name``'s arithmetic (see the module docstring); the TF32
    flags are restored afterwards."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown sampling precision {name!r}; use one of {PRECISIONS}")
    device = torch.device(device)
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        if device.type == "cuda":
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=name == "bf16"):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _heun_step(D: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_cur: torch.Tensor, t_cur: torch.Tensor,
               t_next: torch.Tensor, last: bool) -> torch.Tensor:
    """One step of models.edm.heun_sample: Euler from t_cur to t_next, trapezoid correction unless last."""
    d_cur = (x_cur - D(x_cur, t_cur)) / t_cur
    x_next = x_cur + (t_next - t_cur) * d_cur
    if not last:
        d_prime = (x_next - D(x_next, t_next)) / t_next
        x_next = x_cur + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


class HeunSampler:
    """EDM's Heun sampler (``models.edm.heun_sample``) with an optionally compiled denoiser.

    ``compile``: None (eager), ``"reduce-overhead"`` (torch.compile mode: inductor + CUDA graphs
    on CUDA), or a torch.compile backend name (e.g. ``"aot_eager"``, ``"inductor"``). The
    denoiser is compiled for fixed shapes (``dynamic=False``): one compilation per resolution
    and batch size, which ``sample`` keeps to one by padding the last batch.
    """

    def __init__(self, denoiser: nn.Module, num_steps: int = 18, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, rho: float = 7.0, compile: Optional[str] = None):
        self.denoiser = denoiser
        self.num_steps = num_steps
        self.sigmas = dict(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
        self.compile = compile
        self._cudagraphs = False
        self._net: nn.Module = denoiser
        if compile == "reduce-overhead":
            self._net = torch.compile(denoiser, mode="reduce-overhead", dynamic=False)
            self._cudagraphs = True
        elif compile:
            self._net = torch.compile(denoiser, backend=compile, dynamic=False)

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Float32 images, nominally in [-1, 1], from latents ~ N(0, I) (any device the denoiser is on)."""
        t_steps = edm_sigma_steps(self.num_steps, device=latents.device, **self.sigmas)
        b = latents.shape[0]

        def D(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if self._cudagraphs and x.is_cuda:
                # a new graph replay; its outputs may be overwritten by the next one, so the
                # float64 copy below is taken before then
                torch.compiler.cudagraph_mark_step_begin()
            sigma = t.to(torch.float32).expand(b)
            return self._net(x.to(torch.float32), sigma, class_labels=class_labels).to(torch.float64)

        x = latents.to(torch.float64) * t_steps[0]
        for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
            x = _heun_step(D, x, t_cur, t_next, last=i == self.num_steps - 1)
        return x.to(torch.float32)

    def sample(self, n: int, resolution: int, seed: int, batch_size: int, device: torch.device | str,
               precision_name: str = "fp32", channels: int = 3, pad: Optional[bool] = None) -> torch.Tensor:
        """n images (float32, on the CPU), sample j seeded with seed + j, in batches of batch_size.

        ``pad`` (default: whenever the denoiser is compiled) fills the last batch up to
        batch_size with further seeds, whose images are dropped."""
        device = torch.device(device)
        pad = self.compile is not None if pad is None else pad
        self.denoiser.eval()
        out = []
        with precision(precision_name, device):
            for lo in range(0, n, batch_size):
                k = min(batch_size, n - lo)
                z = seeded_latents(batch_size if pad else k, resolution, seed, channels, first=lo)
                out.append(self(z.to(device))[:k].cpu())
        return torch.cat(out) if out else torch.empty(0, channels, resolution, resolution)


def auto_batch_size(denoiser: nn.Module, resolution: int, device: torch.device | str, channels: int = 3,
                    precision_name: str = "fp32", safety: float = 0.85, probe: tuple[int, int] = (4, 8),
                    multiple: int = 8, max_batch: int = 4096, cpu_batch: int = CPU_BATCH,
                    free_bytes: Optional[int] = None) -> int:
    """Largest batch whose Heun step (two denoiser calls plus the float64 ODE state) fits in
    ``safety`` x the free memory of a CUDA ``device``; ``cpu_batch`` on any other device.

    Two probe steps (batch sizes ``probe``) measure the peak allocation above what was
    allocated before; a line through them gives fixed + per-sample bytes (the fixed part:
    cuDNN workspaces, the spectral layer's bases). Free memory is the driver's free memory
    plus what PyTorch's caching allocator holds unused (``free_bytes`` overrides both, for
    tests). The result is rounded down to a multiple of ``multiple`` (tensor-core friendly)
    when that leaves at least one multiple, and capped at ``max_batch``. Memory use is close
    to linear in the batch for this network (activations), so the fit is conservative for
    larger batches only by the margin. A compiled (CUDA-graph) denoiser keeps its own memory
    pool of about one eager step's peak; probe with the denoiser you will sample with.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return max(1, min(cpu_batch, max_batch))
    denoiser.eval()
    t = edm_sigma_steps(2, device=device)

    def peak(batch: int) -> int:
        """Bytes one Heun step at ``batch`` needs: its peak above the memory in use before, plus
        the float64 state it starts from."""
        x = torch.randn(batch, channels, resolution, resolution, device=device, dtype=torch.float64)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad(), precision(precision_name, device):
            def D(z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
                return denoiser(z.to(torch.float32), s.to(torch.float32).expand(batch)).to(torch.float64)
            _heun_step(D, x * t[0], t[0], t[1], last=False)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base + x.numel() * x.element_size()

    p1, p2 = peak(probe[0]), peak(probe[1])
    if free_bytes is None:
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(device)
        free_bytes = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return batch_from_probes(probe, (p1, p2), free_bytes, safety, multiple, max_batch)


def batch_from_probes(batches: tuple[int, int], peaks: tuple[int, int], free_bytes: int, safety: float = 0.85,
                      multiple: int = 8, max_batch: int = 4096) -> int:
    """The batch ``auto_batch_size`` picks from two probes' peak bytes: a line fixed + b * per_sample
    through them, solved for ``safety * free_bytes``; if the probes disagree (per-sample <= 0),
    the larger probe's bytes per sample. Rounded down to a multiple of ``multiple`` when that
    leaves at least one, at least 1, at most ``max_batch``."""
    (b1, b2), (p1, p2) = batches, peaks
    per_sample = (p2 - p1) / (b2 - b1)
    if per_sample <= 0:
        per_sample, fixed = p2 / b2, 0.0
    else:
        fixed = max(0.0, p1 - per_sample * b1)
    batch = int(max(0.0, free_bytes * safety - fixed) // per_sample)
    if batch >= multiple:
        batch = batch // multiple * multiple
    return max(1, min(batch, max_batch))


__all__ = ["PRECISIONS", "CPU_BATCH", "seeded_latents", "precision", "HeunSampler", "auto_batch_size",
           "batch_from_probes"]
