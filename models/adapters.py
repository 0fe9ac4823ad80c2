"""Model adapters: the one interface through which the harness sees a model.

Every adapter:
    Cls.build(setup) -> adapter                   # from plain values a suite gives (Setup)
    adapter.role                                  # what it is, for reports: see ROLES
    adapter.resolution_problem(r) -> str | None   # can it generate at r?
    adapter.sample(n, resolution, seed)           # NHWC uint8, sample j seeded by seed + j
    adapter.describe() -> dict                    # JSON-safe
    adapter.model_card(resolutions, ...)          # dict or None: parameters, FLOPs, memory
Trainable adapters (`trainable = True`, EDMAdapter):
    trainer = adapter.trainer(settings); adapter.adopt(trainer)
    adapter.train_resolutions                     # what it was trained at
    adapter.state() / adapter.load_state(...)     # tensors + JSON metadata for a checkpoint
    Cls.pretrained(tensors, meta, device)         # a network trained elsewhere, from its checkpoint
    adapter.sample_seeds(seeds, resolution)       # NHWC uint8, image j from the latent seeded with seeds[j]
    adapter.start_from(base)                      # a fine-tune's start: the base's EMA weights
    adapter.same_network(other)                   # can it start from `other`?
    adapter.frozen_parameters(strategy, freeze)   # what a fine-tune keeps fixed
    adapter.augment_dim                           # augmentation labels the network takes
Adapters that resize another model's (or the data's) images (`uses_source = True`):
    adapter.with_source(images) -> adapter        # images(n, base_resolution, seed): the source

Registered by name in ADAPTERS (`register`); the harness knows adapters only
through this registry and the interface above, so a new adapter is a class here
(or anywhere that calls `register`), and nothing in bench/ changes:
  unet      EDM DDPM++-style UNet (spatial convs). Trained on one resolution it is
            the single-res UNet, on several the multi-res UNet.
  dfu       the same UNet with DualConv (3x3 conv + spectral conv, summed).
  bilinear  another adapter's (or the real data's) images at a base resolution,
            upsampled bilinearly.

Per-sample seeds make a sample independent of batch size and process count: the
latent of sample j is drawn on the CPU from a generator seeded with seed + j.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from models.augment import LABEL_DIM
from models.card import model_card, train_step_peak_memory
from models.edm import EDMPrecond, edm_loss, heun_sample
from models.images import resize_bilinear, to_uint8
from models.networks import ArchConfig, DualUNet, count_parameters, get_arch, resolution_problem
from models.training import Trainer, TrainSettings, frozen_parameters

# What an adapter is, as reports compare models: baselines are drawn against, trained
# networks with and without spectral convolutions are compared with each other.
ROLES = {
    "baseline": "not a trained network: another model's or the data's images, resized (bilinear)",
    "spatial": "a trained network without spectral convolutions (UNet)",
    "spectral": "a trained network with spectral convolutions (DFU, FNO-UNet)",
}

ADAPTERS: dict[str, type] = {}


def register(name: str):
    """Class decorator: make an adapter class available to suites as `adapter: name`."""
    def deco(cls):
        cls.kind = name
        ADAPTERS[name] = cls
        return cls
    return deco


@dataclass(frozen=True)
class Setup:
    """What the harness passes `Adapter.build`: plain values from a suite's model entry and runtime."""

    arch: Optional[str | ArchConfig] = None  # a named architecture, or a config (a pretrained network's)
    arch_overrides: Mapping = field(default_factory=dict)
    device: torch.device = torch.device("cpu")
    sample_steps: int = 18
    precision: str = "fp32"
    compile_backend: Optional[str] = None
    source: Optional[str] = None  # uses_source adapters: a model name or "data"
    base_resolution: Optional[int] = None  # uses_source adapters: the resolution of the source's images


def latents(n: int, resolution: int, seed: int, channels: int = 3) -> torch.Tensor:
    """N(0, I) latents; sample j from its own generator seeded with seed + j."""
    out = torch.empty(n, channels, resolution, resolution)
    for j in range(n):
        g = torch.Generator().manual_seed(seed + j)
        out[j] = torch.randn(channels, resolution, resolution, generator=g)
    return out


class Adapter:
    kind = "base"
    role: Optional[str] = None  # a key of ROLES; every adapter says which (the plan refuses one that does not)
    trainable = False
    uses_source = False

    @classmethod
    def build(cls, setup: Setup) -> "Adapter":
        return cls()

    def resolution_problem(self, resolution: int) -> Optional[str]:
        return None

    def sample(self, n: int, resolution: int, seed: int, batch_size: int = 32) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"adapter": self.kind}

    def model_card(self, resolutions: Sequence[int], memory_resolution: Optional[int] = None, batch: int = 8,
                   device: Optional[torch.device] = None) -> Optional[dict]:
        """Parameters, FLOPs per resolution and training-step memory; None: nothing to say."""
        return None


class EDMAdapter(Adapter):
    """A DualUNet behind EDM preconditioning; `mode` picks spatial (UNet), spectral (FNO-UNet) or dual (DFU)."""

    trainable = True
    mode = "spatial"

    @classmethod
    def build(cls, setup: Setup) -> "EDMAdapter":
        return cls(setup.arch or "cpu-tiny", setup.arch_overrides, device=setup.device,
                   sample_steps=setup.sample_steps, precision=setup.precision,
                   compile_backend=setup.compile_backend)

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

    @property
    def role(self) -> str:
        """spectral when the network has spectral convolutions (mode spectral or dual), else spatial."""
        return "spatial" if self.arch.mode == "spatial" else "spectral"

    @property
    def augment_dim(self) -> int:
        """How many augmentation labels the network is conditioned on (0: none; EDM's pipe gives LABEL_DIM)."""
        return self.arch.augment_dim

    def resolution_problem(self, resolution: int) -> Optional[str]:
        return resolution_problem(self.arch, resolution)

    def same_network(self, other: "Adapter") -> bool:
        """Same adapter and architecture, so `start_from(other)` fits; dropout is a training setting,
        not part of the weights, and may differ."""
        same = lambda a: a.replace(dropout=0.0)  # noqa: E731
        return type(other) is type(self) and same(other.arch) == same(self.arch)

    def start_from(self, base: "EDMAdapter") -> None:
        """A fine-tune's transfer start: the base's trained (EMA) weights, as the authors' resume does."""
        self.net.load_state_dict(base.net.state_dict(), strict=True)
        self._compiled = None

    def frozen_parameters(self, strategy: str = "mixed", freeze: Optional[dict] = None) -> tuple[str, ...]:
        """Names of the parameters a fine-tune keeps fixed (models.training.frozen_parameters);
        ValueError when the settings do not fit this network."""
        return frozen_parameters(self.net, strategy, freeze)

    def parameter_names(self) -> list[str]:
        return [n for n, _ in self.net.named_parameters()]

    def denoiser(self) -> torch.nn.Module:
        """The preconditioned denoiser D(x; sigma) it samples with (compiled when the runtime says so)."""
        if self.compile_backend is None:
            return self.net
        if self._compiled is None:
            self._compiled = torch.compile(self.net, backend=self.compile_backend, dynamic=False)
        return self._compiled

    def model_card(self, resolutions: Sequence[int], memory_resolution: Optional[int] = None, batch: int = 8,
                   device: Optional[torch.device] = None) -> dict:
        """models.card.model_card of this network (arch named as given); with memory_resolution,
        the peak memory of one training step of `batch` images there, measured on `device`."""
        memory = None
        if memory_resolution is not None:
            memory = train_step_peak_memory(self.arch, memory_resolution, batch, device or self.device)
        card = model_card(self.arch, resolutions, memory)
        card["arch"] = self.arch_name
        return card

    def trainer(self, settings: TrainSettings) -> Trainer:
        self.train_resolutions = tuple(settings.resolutions)
        return Trainer(self.net, settings, edm_loss, self.device)

    def adopt(self, trainer: Trainer) -> None:
        """Use the trainer's EMA weights for sampling (as EDM does)."""
        self.net = trainer.ema
        self.step = trainer.step
        self._compiled = None

    def sample(self, n: int, resolution: int, seed: int, batch_size: int = 32) -> np.ndarray:
        return self.sample_seeds(range(seed, seed + n), resolution, batch_size)

    @torch.no_grad()
    def sample_seeds(self, seeds: Sequence[int], resolution: int, batch_size: int = 32) -> np.ndarray:
        """NHWC uint8, image j from the latent seeded with seeds[j] (`latents`' rule), in batches
        of batch_size taken in order: sample(n, r, seed) is sample_seeds(range(seed, seed + n), r)."""
        problem = self.resolution_problem(resolution)
        if problem:
            raise ValueError(problem)
        self.net.eval()
        seeds = [int(s) for s in seeds]
        out = []
        for lo in range(0, len(seeds), batch_size):
            z = torch.cat([latents(1, resolution, s, self.arch.img_channels) for s in seeds[lo:lo + batch_size]])
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                x = heun_sample(self.denoiser(), z.to(self.device), num_steps=self.sample_steps)
            out.append(to_uint8(x))
        return np.concatenate(out) if out else np.zeros((0, resolution, resolution, self.arch.img_channels), np.uint8)

    def describe(self) -> dict:
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



    @classmethod
    def pretrained(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping, device: torch.device | str = "cpu",
                   **options) -> "EDMAdapter":
        """A network someone trained elsewhere, from a checkpoint's tensors and metadata (a run's
        model checkpoint, or `bench import-checkpoint`'s output): its architecture comes from
        `meta["arch_config"]`, its training resolutions from `meta["train_resolutions"]` when
        recorded (else empty). Called on EDMAdapter itself, the adapter class follows the
        checkpoint (the one it records, else by mode: spatial -> unet, otherwise dfu); called on
        a subclass, the network must be of that kind. ValueError names any mismatch.
        `options`: sample_steps, precision, compile_backend."""
        try:
            arch = ArchConfig.from_checkpoint(dict(meta["arch_config"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"its metadata holds no valid arch_config ({str(exc).splitlines()[0][:80]})") from None
        if cls is EDMAdapter:
            kind = meta.get("adapter")
            if kind in ADAPTERS and issubclass(ADAPTERS[kind], EDMAdapter):
                cls = ADAPTERS[kind]
            else:
                cls = ADAPTERS["unet"] if arch.mode == "spatial" else ADAPTERS["dfu"]
        elif (arch.mode == "spatial") != (cls.mode == "spatial"):
            fits = sorted(k for k, c in ADAPTERS.items()
                          if isinstance(c, type) and issubclass(c, EDMAdapter) and (c.mode == "spatial") == (arch.mode == "spatial"))
            raise ValueError(f"it holds a {arch.mode}-mode network, which adapter {cls.kind} does not run "
                             f"(a {cls.mode} one); use adapter {' or '.join(fits)}")
        adapter = cls(arch, {"mode": arch.mode}, device=device, **options)
        adapter.arch_name = str(meta.get("arch", "custom"))
        ours = adapter.net.state_dict()
        missing, extra = sorted(set(ours) - set(tensors)), sorted(set(tensors) - set(ours))
        shapes = sorted(k for k in set(ours) & set(tensors) if tuple(ours[k].shape) != tuple(tensors[k].shape))
        problems = [f"{len(keys)} {label} (e.g. {', '.join(keys[:2])})"
                    for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes)) if keys]
        if problems:
            raise ValueError("its tensors do not fit the architecture its metadata records: " + "; ".join(problems))
        adapter.net.load_state_dict({k: v.to(device=adapter.device, dtype=ours[k].dtype) for k, v in tensors.items()},
                                    strict=True)
        rec = meta.get("train_resolutions") or ()
        if not (isinstance(rec, (list, tuple)) and all(isinstance(r, int) and not isinstance(r, bool) and r > 0
                                                       for r in rec)):
            raise ValueError(f"its metadata's train_resolutions {rec!r} is not a list of resolutions")
        adapter.train_resolutions = tuple(rec)
        step = meta.get("step", 0)
        adapter.step = step if isinstance(step, int) else 0
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

    role = "baseline"
    uses_source = True

    def __init__(self, source: Optional[Callable[[int, int, int], np.ndarray]], base_resolution: int,
                 source_name: str = "data"):
        self.source = source
        self.base_resolution = base_resolution
        self.source_name = source_name

    @classmethod
    def build(cls, setup: Setup) -> "BilinearAdapter":
        return cls(None, setup.base_resolution, setup.source)

    def with_source(self, source: Callable[[int, int, int], np.ndarray]) -> "BilinearAdapter":
        """This adapter reading `source(n, base_resolution, seed)`: the images of its source model or data."""
        return type(self)(source, self.base_resolution, self.source_name)

    def sample(self, n: int, resolution: int, seed: int, batch_size: int = 32) -> np.ndarray:
        if self.source is None:
            raise ValueError("a bilinear adapter samples from its source; bind one with with_source()")
        return resize_bilinear(self.source(n, self.base_resolution, seed), resolution)

    def describe(self) -> dict:
        return {"adapter": self.kind, "source": self.source_name, "base_resolution": self.base_resolution}
