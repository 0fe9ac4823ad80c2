"""Mixed-resolution EDM training loop, deterministic per step and exactly resumable.

What a step trains on (``schedule``):

* ``round-robin``: one optimizer step per resolution, cycling through
  ``resolutions`` in the order given -- the authors' published runs
  (96 -> 80 -> 64 -> 48 -> 32, each step's global batch from one resolution).
* ``weighted``: each step draws one resolution for the whole global batch with
  probabilities ``weights`` (uniform when None); independent of the process count.
* ``weighted-per-rank``: every process draws its own resolution each step, as the
  authors' later code does (each GPU with its own generator), so one global step
  mixes resolutions across processes and the results depend on the process count.

Images of each resolution are drawn without replacement, like EDM's infinite
sampler: a seeded shuffled pass over the dataset, then the next pass
(``stream_indices``). Learning-rate warm-up and the EMA are evaluated on the image
count *before* the step, as EDM does, so the LR is 0 at step 0.

Every random choice of step k (resolution, sigma, noise, augmentation, dropout)
is seeded from (seed, k) alone and the stream positions are replayed from the
schedule, so a run killed after a checkpoint and resumed follows the same
trajectory as one that was never interrupted; no RNG state needs saving.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from models.augment import AugmentPipe

BatchFn = Callable[[np.ndarray, int], torch.Tensor]  # (indices, resolution) -> NCHW float in [-1, 1]
SCHEDULES = ("round-robin", "weighted", "weighted-per-rank")


@dataclass(frozen=True)
class TrainSettings:
    resolutions: tuple[int, ...]  # in round-robin order
    steps: int
    batch_size: int
    lr: float
    dataset_size: int
    weights: Optional[tuple[float, ...]] = None
    schedule: str = "round-robin"
    lr_warmup_nimg: float = 0.0  # linear LR ramp over this many images (EDM's lr_rampup_kimg * 1000)
    ema_halflife_kimg: float = 2.0
    ema_rampup: Optional[float] = 0.05
    checkpoint_every: int = 200
    seed: int = 0
    # data warm-up: while fewer than `data_warmup_kimg` thousand images have been
    # seen, only resolutions <= `data_warmup_max_resolution` are trained on
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

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; use one of {SCHEDULES}")
        if self.schedule == "round-robin" and self.weights is not None:
            raise ValueError("weights apply to the weighted schedules, not round-robin")

    def to_dict(self) -> dict:
        return asdict(self)


def step_seed(seed: int, step: int) -> int:
    """One 63-bit seed per (run seed, step), independent of process count."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


@functools.lru_cache(maxsize=16)
def _pass_order(seed: int, key: int, n: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, key, epoch, 7]).permutation(n)


def stream_indices(seed: int, key: int, n: int, start: int, count: int) -> np.ndarray:
    """Positions start .. start+count-1 of an endless stream over n images: pass e is a
    permutation seeded by (seed, key, e), so every pass draws each image exactly once."""
    pos = np.arange(start, start + count)
    out = np.empty(count, dtype=np.int64)
    for epoch in np.unique(pos // n):
        sel = pos // n == epoch
        out[sel] = _pass_order(seed, key, n, int(epoch))[pos[sel] % n]
    return out


def rank_slice(batch: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of a global batch that a rank trains on."""
    return batch * rank // world, batch * (rank + 1) // world


class DataSchedule:
    """Resolution and image indices of every optimizer step, for one process.

    ``draw(step)`` must be called for consecutive steps (it advances the per-resolution
    stream positions); ``skip_to(step)`` replays the schedule after a resume.
    """

    def __init__(self, settings: TrainSettings, rank: int = 0, world: int = 1):
        self.s, self.rank, self.world = settings, rank, world
        self.position: dict[int, int] = {}  # images drawn so far from each resolution's stream
        self.step = 0

    def _allowed(self, step: int) -> list[int]:
        s = self.s
        res = list(s.resolutions)
        if s.data_warmup_max_resolution is not None and step * s.batch_size < s.data_warmup_kimg * 1000:
            res = [r for r in res if r <= s.data_warmup_max_resolution]
        return res

    def resolution(self, step: int) -> int:
        """The resolution this process trains on at ``step``."""
        s = self.s
        allowed = self._allowed(step)
        if s.schedule == "round-robin":
            return allowed[step % len(allowed)]
        w = np.ones(len(s.resolutions)) if s.weights is None else np.asarray(s.weights, dtype=np.float64)
        p = np.array([wi for r, wi in zip(s.resolutions, w) if r in allowed])
        key = [s.seed, step, 1] if s.schedule == "weighted" else [s.seed, step, 1, self.rank]
        return int(np.random.default_rng(key).choice(allowed, p=p / p.sum()))

    def _batch_rows(self) -> tuple[int, int]:
        """(rows this process draws from the stream, offset of its slice in them)."""
        b = self.s.batch_size
        if self.s.schedule == "weighted-per-rank":
            lo, hi = rank_slice(b, self.rank, self.world)
            return hi - lo, 0
        return b, 0

    def draw(self, step: int) -> tuple[int, np.ndarray]:
        """(resolution, indices of the rows this step's batch needs) -- the whole global
        batch for the global schedules (each rank slices it), this rank's own rows for
        weighted-per-rank."""
        if step != self.step:
            raise ValueError(f"DataSchedule.draw({step}) out of order; expected step {self.step}")
        res = self.resolution(step)
        rows, _ = self._batch_rows()
        start = self.position.get(res, 0)
        # one stream per resolution (and per process for weighted-per-rank)
        key = res if self.s.schedule != "weighted-per-rank" else res * 100003 + self.rank
        idx = stream_indices(self.s.seed, key, self.s.dataset_size, start, rows)
        self.position[res] = start + rows
        self.step += 1
        return res, idx

    def skip_to(self, step: int) -> None:
        """Replay the resolutions of steps self.step .. step-1 (no image is loaded)."""
        rows, _ = self._batch_rows()
        for k in range(self.step, step):
            res = self.resolution(k)
            self.position[res] = self.position.get(res, 0) + rows
        self.step = step


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

    ``spectral-only`` is the authors' ``--finetune_spectral``: every parameter of a
    spatial conv (``spatial_conv`` in its name: weights and biases) is frozen, the
    rest trains. ``spectral-weights-only`` freezes everything but the spectral
    weights. ``freeze`` maps a level (0 = finest) or ``"misc"`` (parameters outside
    the encoder/decoder: the noise embedding) to the parts frozen there: ``all``,
    ``norm`` (GroupNorm) or ``spectral`` (the FNO branch of a DualConv). Raises
    ValueError if nothing is left to train or a level does not exist.
    """
    names = [n for n, _ in net.named_parameters()]
    levels = {parameter_level(n) for n in names} - {None}
    for key in (freeze or {}):
        if key != "misc" and key not in levels:
            raise ValueError(f"freeze names level {key}, but the network has levels {sorted(levels)} (and misc)")
    if strategy in ("spectral-only", "spectral-weights-only") and not any("spectral_conv" in n for n in names):
        raise ValueError(f"{strategy} fine-tuning needs a network with spectral convolutions (adapter dfu)")
    out = []
    for n in names:
        level = parameter_level(n)
        parts = set((freeze or {}).get("misc" if level is None else level, ()))
        if (strategy == "spectral-only" and "spatial_conv" in n) \
                or (strategy == "spectral-weights-only" and "spectral_conv" not in n) or "all" in parts \
                or ("norm" in parts and "norm" in n.rsplit(".", 2)[-2]) \
                or ("spectral" in parts and "spectral_conv" in n):
            out.append(n)
    if len(out) == len(names):
        raise ValueError("the freeze settings leave no parameter to train")
    return tuple(out)


def lr_at(settings: TrainSettings, step: int) -> float:
    """EDM's linear LR ramp on the images seen before the step: 0 at step 0."""
    nimg = step * settings.batch_size
    return settings.lr * min(nimg / max(settings.lr_warmup_nimg, 1e-8), 1.0)


def ema_beta(settings: TrainSettings, step: int) -> float:
    """EDM's EMA decay on the images seen before the step: half-life in images,
    optionally capped by ``ema_rampup`` x images seen (so the EMA copies the net at step 0)."""
    nimg = step * settings.batch_size
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
        self.schedule = DataSchedule(settings, self.rank, self.world)
        self.step = 0
        self.losses: list[float] = []

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings.precision == "bf16")

    def train_step(self, batch_fn: BatchFn) -> float:
        """One optimizer step on the step's global batch; under torch.distributed each rank
        takes a contiguous slice of it and DDP averages the gradients."""
        s = self.settings
        per_rank = s.schedule == "weighted-per-rank"
        res, idx = self.schedule.draw(self.step)
        b = s.batch_size
        # rows of the global batch this rank trains on; per-rank schedules draw only their own
        lo, hi = rank_slice(b, self.rank, self.world)
        rows = slice(None) if per_rank else slice(lo, hi)
        images = batch_fn(idx[rows], res).to(self.device)
        # the random draws of one step: for the global schedules over the whole global batch
        # (so the process count does not change them), per rank for weighted-per-rank
        draw_rows = hi - lo if per_rank else b
        key = self.step if not per_rank else self.step * 65537 + self.rank
        extra = {}
        if s.augment:
            pipe = AugmentPipe(p=s.augment)
            agen = torch.Generator(device=self.device).manual_seed(step_seed(s.seed + 2, key))
            par = {k: v[rows] for k, v in pipe.draw(draw_rows, agen, self.device).items()}
            images, extra["augment_labels"] = pipe.apply(images, par)
        torch.manual_seed(step_seed(s.seed, key))  # dropout
        # sigma and noise: drawn on the training device (a CUDA run differs from a CPU
        # run, but each is reproducible and independent of the process count)
        gen = torch.Generator(device=self.device).manual_seed(step_seed(s.seed + 1, key))
        for g in self.opt.param_groups:
            g["lr"] = lr_at(s, self.step)
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
            rnd = torch.randn([draw_rows, 1, 1, 1], generator=gen, device=self.device)
            unit = torch.randn((draw_rows, *images.shape[1:]), generator=gen, device=self.device,
                               dtype=images.dtype)
            rnd, unit = rnd[rows], unit[rows]
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
        self.schedule = DataSchedule(self.settings, self.rank, self.world)
        self.schedule.skip_to(step)
        self.losses = list(losses)
