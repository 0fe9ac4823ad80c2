"""Mixed-resolution EDM training loop, deterministic per step and exactly resumable.

Each optimizer step draws ONE resolution (uniform or weighted) and the whole batch
comes from it, as in the authors' code. Every random choice of step k (resolution,
image indices, sigma, noise, dropout) is seeded from (seed, k) alone, so a run
killed after a checkpoint and resumed follows the same trajectory as one that
was never interrupted; no RNG state needs saving.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

BatchFn = Callable[[np.ndarray, int], torch.Tensor]  # (indices, resolution) -> NCHW float in [-1, 1]


@dataclass(frozen=True)
class TrainSettings:
    resolutions: tuple[int, ...]
    steps: int
    batch_size: int
    lr: float
    dataset_size: int
    weights: Optional[tuple[float, ...]] = None
    lr_warmup_steps: int = 0
    ema_halflife_kimg: float = 2.0
    ema_rampup: Optional[float] = 0.05
    checkpoint_every: int = 200
    seed: int = 0
    # data warm-up: for the first `data_warmup_kimg` thousand images, draw only
    # resolutions <= `data_warmup_max_resolution` (weights renormalised)
    data_warmup_kimg: float = 0.0
    data_warmup_max_resolution: Optional[int] = None
    # per-resolution micro-batch caps: the batch is split and gradients accumulated
    micro_batch: Optional[tuple[tuple[int, int], ...]] = None
    # fine-tuning: (target, source) resolutions whose batches are upsampled from the
    # source resolution (the caller's batch function does it), and the frozen parameters
    upsampled: Optional[tuple[tuple[int, int], ...]] = None
    frozen: tuple[str, ...] = ()
    precision: str = "fp32"  # or "bf16": autocast of the forward pass (weights, Adam and EMA stay fp32)
    compile_backend: Optional[str] = None  # torch.compile the training forward with this backend
    augment: Optional[float] = None  # EDM's geometric augmentation with probability p (models/augment.py)

    def to_dict(self) -> dict:
        return asdict(self)


def step_seed(seed: int, step: int) -> int:
    """One 63-bit seed per (run seed, step), independent of process count."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def draw_step(settings: TrainSettings, step: int) -> tuple[int, np.ndarray]:
    """The resolution and dataset indices of optimizer step `step`."""
    rng = np.random.default_rng([settings.seed, step, 1])
    res_all = np.asarray(settings.resolutions)
    p = np.ones(len(res_all)) if settings.weights is None else np.asarray(settings.weights, dtype=np.float64)
    if (settings.data_warmup_max_resolution is not None
            and step * settings.batch_size < settings.data_warmup_kimg * 1000):
        p = p * (res_all <= settings.data_warmup_max_resolution)
    if settings.weights is None and p.all():
        p = None  # the plain uniform draw (kept as is so existing runs replay exactly)
    else:
        p = p / p.sum()
    res = int(rng.choice(res_all, p=p))
    idx = rng.integers(0, settings.dataset_size, size=settings.batch_size)
    return res, idx


def parameter_level(name: str) -> Optional[int]:
    """UNet level of a parameter (0 = finest), or None outside the encoder/decoder."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("enc", "dec"):
            return int(parts[i + 1].split("_")[0])
    return None


def frozen_parameters(net: torch.nn.Module, strategy: str = "mixed",
                      freeze: Optional[dict] = None) -> tuple[str, ...]:
    """Names of the parameters a fine-tuning run keeps fixed.

    ``spectral-only`` freezes everything but the spectral weights; ``freeze`` maps a
    level (0 = finest) or ``"misc"`` (parameters outside the encoder/decoder: the
    noise embedding) to the parts frozen there: ``all``, ``norm`` (GroupNorm) or
    ``spectral`` (the FNO branch of a DualConv). Raises ValueError if nothing is left
    to train or a level does not exist.
    """
    names = [n for n, _ in net.named_parameters()]
    levels = {parameter_level(n) for n in names} - {None}
    for key in (freeze or {}):
        if key != "misc" and key not in levels:
            raise ValueError(f"freeze names level {key}, but the network has levels {sorted(levels)} (and misc)")
    if strategy == "spectral-only" and not any("spectral_conv" in n for n in names):
        raise ValueError("spectral-only fine-tuning needs a network with spectral convolutions (adapter dfu)")
    out = []
    for n in names:
        level = parameter_level(n)
        parts = set((freeze or {}).get("misc" if level is None else level, ()))
        if (strategy == "spectral-only" and "spectral_conv" not in n) or "all" in parts \
                or ("norm" in parts and "norm" in n.rsplit(".", 2)[-2]) \
                or ("spectral" in parts and "spectral_conv" in n):
            out.append(n)
    if len(out) == len(names):
        raise ValueError("the freeze settings leave no parameter to train")
    return tuple(out)


def ema_beta(settings: TrainSettings, step: int) -> float:
    """EDM's EMA: half-life in images, optionally ramped up with images seen."""
    nimg = (step + 1) * settings.batch_size
    halflife = settings.ema_halflife_kimg * 1000
    if settings.ema_rampup is not None:
        halflife = min(halflife, nimg * settings.ema_rampup)
    return 0.5 ** (settings.batch_size / max(halflife, 1e-8))


class Trainer:
    """Holds the network, its EMA and Adam; `run` trains from `self.step` to `settings.steps`."""

    def __init__(self, net: torch.nn.Module, settings: TrainSettings, loss_fn, device: torch.device):
        self.net = net.to(device).train()
        self.ema = copy.deepcopy(net).eval().requires_grad_(False)
        self.settings = settings
        self.loss_fn = loss_fn
        self.device = device
        frozen = set(settings.frozen)
        for n, p in self.net.named_parameters():
            p.requires_grad_(n not in frozen)
        trained = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(trained, lr=settings.lr, betas=(0.9, 0.999), eps=1e-8)
        # data parallel when a process group is up (torchrun): the module every forward
        # goes through is the DDP wrapper; self.net stays the plain network
        dist = torch.distributed
        self.rank, self.world = ((dist.get_rank(), dist.get_world_size())
                                 if dist.is_available() and dist.is_initialized() else (0, 1))
        self.model = self.net
        self._ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = self._ddp = DistributedDataParallel(
                self.net, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False)
        if settings.compile_backend:
            self.model = torch.compile(self.model, backend=settings.compile_backend, dynamic=False)
        self.step = 0
        self.losses: list[float] = []

    def lr_at(self, step: int) -> float:
        warm = self.settings.lr_warmup_steps
        return self.settings.lr * (min(1.0, (step + 1) / warm) if warm > 0 else 1.0)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings.precision == "bf16")

    def train_step(self, batch_fn: BatchFn) -> float:
        """One optimizer step on the step's global batch; under torch.distributed each rank
        takes a contiguous slice of it and DDP averages the gradients."""
        s = self.settings
        res, idx = draw_step(s, self.step)
        b = len(idx)
        lo, hi = b * self.rank // self.world, b * (self.rank + 1) // self.world
        images = batch_fn(idx[lo:hi], res).to(self.device)
        extra = {}
        if s.augment:  # parameters drawn for the whole global batch, applied to this rank's slice
            from models.augment import AugmentPipe

            pipe = AugmentPipe(p=s.augment)
            agen = torch.Generator(device=self.device).manual_seed(step_seed(s.seed + 2, self.step))
            par = {k: v[lo:hi] for k, v in pipe.draw(b, agen, self.device).items()}
            images, extra["augment_labels"] = pipe.apply(images, par)
        torch.manual_seed(step_seed(s.seed, self.step))  # dropout
        # sigma and noise: drawn on the training device (a CUDA run differs from a CPU
        # run, but each is reproducible and independent of the process count)
        gen = torch.Generator(device=self.device).manual_seed(step_seed(s.seed + 1, self.step))
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        self.opt.zero_grad(set_to_none=True)
        cap = dict(s.micro_batch or ()).get(res)
        if self.world == 1 and (cap is None or cap >= b):
            with self._autocast():
                loss = self.loss_fn(self.model, images, gen, **extra).mean()
            loss.backward()
        else:
            # draw sigma and noise for the whole global batch first, so that micro-batches
            # and ranks see exactly the draws of one full batch; each part's loss is scaled
            # so that the gradients, summed over parts and averaged over ranks by DDP, are
            # those of the global batch mean
            rnd = torch.randn([b, 1, 1, 1], generator=gen, device=self.device)
            unit = torch.randn((b, *images.shape[1:]), generator=gen, device=self.device, dtype=images.dtype)
            rnd, unit = rnd[lo:hi], unit[lo:hi]
            cap = min(cap or len(images), len(images))
            starts = list(range(0, len(images), cap))
            loss = images.new_zeros(())
            for j, start in enumerate(starts):
                sl = slice(start, start + cap)
                sync = j == len(starts) - 1 or self.world == 1
                ctx = contextlib.nullcontext() if sync else self._ddp.no_sync()
                with ctx:
                    with self._autocast():
                        part = self.loss_fn(self.model, images[sl], rnd_normal=rnd[sl], unit_noise=unit[sl],
                                            **{k: v[sl] for k, v in extra.items()}).sum()
                    (part * self.world / b).backward()
                loss = loss + part.detach() / b
            if self.world > 1:
                torch.distributed.all_reduce(loss)
        for p in self.net.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        self.opt.step()
        beta = ema_beta(s, self.step)
        with torch.no_grad():
            for pe, pn in zip(self.ema.parameters(), self.net.parameters()):
                pe.copy_(pn.detach().lerp(pe, beta))
        self.step += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {self.step}; lower lr")
        self.losses.append(value)
        return value

    # -- checkpoint state as flat tensors (safetensors-friendly, no pickle) --
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in self.net.state_dict().items():
            out[f"net.{k}"] = v
        for k, v in self.ema.state_dict().items():
            out[f"ema.{k}"] = v
        names = {id(p): n for n, p in self.net.named_parameters()}
        for p, st in self.opt.state.items():
            n = names[id(p)]
            for key in ("exp_avg", "exp_avg_sq"):
                out[f"adam.{n}.{key}"] = st[key]
            out[f"adam.{n}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
        return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], step: int,
                           losses: Sequence[float] = ()) -> None:
        def sub(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.net.load_state_dict(sub("net."), strict=True)
        self.ema.load_state_dict(sub("ema."), strict=True)
        adam = sub("adam.")
        for n, p in self.net.named_parameters():
            if f"{n}.exp_avg" in adam:
                self.opt.state[p] = {
                    "step": torch.tensor(float(adam[f"{n}.step"][0])),
                    "exp_avg": adam[f"{n}.exp_avg"].to(self.device),
                    "exp_avg_sq": adam[f"{n}.exp_avg_sq"].to(self.device),
                }
        self.step = step
        self.losses = list(losses)
