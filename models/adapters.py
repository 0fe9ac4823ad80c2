"""Model adapters: one interface for everything a suite can benchmark.

    adapter.resolution_problem(r) -> str | None   # can it generate at r?
    adapter.sample(n, resolution, seed)           # NHWC uint8, sample j seeded by seed + j
    trainer = adapter.trainer(settings)           # trainable adapters only
    adapter.state() / Adapter.from_state(...)     # tensors + JSON metadata for a checkpoint

Registered by name in ADAPTERS:
  unet      EDM DDPM++-style UNet (spatial convs). Trained on one resolution it is
            the single-res UNet, on several the multi-res UNet.
  dfu       the same UNet with DualConv (3x3 conv + spectral conv, summed).
  bilinear  another adapter's (or the real data's) images at a base resolution,
            upsampled bilinearly.

Per-sample seeds make a sample independent of batch size and process count: the
latent of sample j is drawn on the CPU from a generator seeded with seed + j.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from models.edm import EDMPrecond, edm_loss, heun_sample
from models.images import resize_bilinear, to_uint8
from models.networks import ArchConfig, DualUNet, get_arch, resolution_problem
from models.training import Trainer, TrainSettings

ADAPTERS: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        cls.kind = name
        ADAPTERS[name] = cls
        return cls
    return deco


def latents(n: int, resolution: int, seed: int, channels: int = 3) -> torch.Tensor:
    """N(0, I) latents; sample j from its own generator seeded with seed + j."""
    out = torch.empty(n, channels, resolution, resolution)
    for j in range(n):
        g = torch.Generator().manual_seed(seed + j)
        out[j] = torch.randn(channels, resolution, resolution, generator=g)
    return out


class Adapter:
    kind = "base"
    trainable = False

    def resolution_problem(self, resolution: int) -> Optional[str]:
        return None

    def sample(self, n: int, resolution: int, seed: int, batch_size: int = 32) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"adapter": self.kind}


class EDMAdapter(Adapter):
    """A DualUNet behind EDM preconditioning; `mode` picks spatial (UNet) or dual (DFU)."""

    trainable = True
    mode = "spatial"

    def __init__(self, arch: str | ArchConfig = "cpu-tiny", arch_overrides: Optional[dict] = None,
                 device: torch.device | str = "cpu", sample_steps: int = 18, precision: str = "fp32",
                 compile_backend: Optional[str] = None):
        overrides = dict(arch_overrides or {})
        overrides.setdefault("mode", self.mode)
        self.arch = get_arch(arch, **overrides)
        self.arch_name = arch if isinstance(arch, str) else "custom"
        self.device = torch.device(device)
        self.sample_steps = sample_steps
        self.net = EDMPrecond(DualUNet(self.arch)).to(self.device)
        self.train_resolutions: tuple[int, ...] = ()
        self.step = 0
        # bf16 autocast and torch.compile (a wrapper, so checkpoints keep plain keys)
        self.precision = precision
        self.compile_backend = compile_backend
        self._compiled: Optional[torch.nn.Module] = None

    def resolution_problem(self, resolution: int) -> Optional[str]:
        return resolution_problem(self.arch, resolution)

    def trainer(self, settings: TrainSettings) -> Trainer:
        self.train_resolutions = tuple(settings.resolutions)
        return Trainer(self.net, settings, edm_loss, self.device)

    def adopt(self, trainer: Trainer) -> None:
        """Use the trainer's EMA weights for sampling (as EDM does)."""
        self.net = trainer.ema
        self.step = trainer.step
        self._compiled = None

    def _denoiser(self) -> torch.nn.Module:
        if self.compile_backend is None:
            return self.net
        if self._compiled is None:
            self._compiled = torch.compile(self.net, backend=self.compile_backend, dynamic=False)
        return self._compiled

    @torch.no_grad()
    def sample(self, n: int, resolution: int, seed: int, batch_size: int = 32) -> np.ndarray:
        problem = self.resolution_problem(resolution)
        if problem:
            raise ValueError(problem)
        self.net.eval()
        out = []
        for lo in range(0, n, batch_size):
            k = min(batch_size, n - lo)
            z = latents(k, resolution, seed + lo, self.arch.img_channels).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                x = heun_sample(self._denoiser(), z, num_steps=self.sample_steps)
            out.append(to_uint8(x))
        return np.concatenate(out)

    def describe(self) -> dict:
        from models.networks import count_parameters

        return {"adapter": self.kind, "arch": self.arch_name, "arch_config": self.arch.to_dict(),
                "params": count_parameters(self.net), "train_resolutions": list(self.train_resolutions),
                "step": self.step}

    # -- checkpoint content: flat tensors + JSON-safe metadata (the harness writes
    #    them as safetensors + JSON, atomically); nothing is pickled --
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        return tensors, self.describe()

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Trained weights from a checkpoint; sampling settings (steps, precision) stay this adapter's."""
        self.net.load_state_dict({k: v.to(self.device) for k, v in tensors.items()}, strict=True)
        self.train_resolutions = tuple(meta["train_resolutions"])
        self.step = int(meta["step"])
        self._compiled = None

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict,
                   device: torch.device | str = "cpu", **options) -> "EDMAdapter":
        kind = meta.get("adapter")
        if kind not in ADAPTERS or not issubclass(ADAPTERS[kind], EDMAdapter):
            raise ValueError(f"checkpoint adapter {kind!r} is not a trainable adapter")
        adapter = ADAPTERS[kind](ArchConfig.from_checkpoint(meta["arch_config"]), device=device, **options)
        adapter.arch_name = meta["arch"]
        adapter.load_state(tensors, meta)
        return adapter


@register("unet")
class UNetAdapter(EDMAdapter):
    mode = "spatial"


@register("dfu")
class DFUAdapter(EDMAdapter):
    mode = "dual"


@register("bilinear")
class BilinearAdapter(Adapter):
    """Images from `source(n, base_resolution, seed)` resized bilinearly to any resolution."""

    def __init__(self, source: Callable[[int, int, int], np.ndarray], base_resolution: int,
                 source_name: str = "data"):
        self.source = source
        self.base_resolution = base_resolution
        self.source_name = source_name

    def sample(self, n: int, resolution: int, seed: int, batch_size: int = 32) -> np.ndarray:
        return resize_bilinear(self.source(n, self.base_resolution, seed), resolution)

    def describe(self) -> dict:
        return {"adapter": self.kind, "source": self.source_name, "base_resolution": self.base_resolution}
