"""`bench run`: suite -> validated plan -> train -> sample -> features/FID -> report.

Each stage reads the previous stage's files in the run directory and writes its
own, atomically; finished work (a trained model, a sample shard, a feature file)
is never redone, so re-running with the same --run-id resumes an interrupted
run. All validation happens before the run directory is created: a bad suite
leaves nothing behind.
"""
from __future__ import annotations

import csv
import datetime as dt
import platform
import shutil
import subprocess
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from bench import checkpoint, grf, openmoji
from bench.config import ModelConfig, SuiteConfig
from bench.datasets import RESIZE_FILTER, build_dataset, to_float_tensor
from bench.errors import BenchError
from bench.io import PROJECT_ROOT, atomic_path, pick_device, rank_info, write_json, write_text
from bench.progress import console, progress
from models.adapters import ADAPTERS, BilinearAdapter, EDMAdapter
from models.images import resize_bilinear
from models.training import TrainSettings, frozen_parameters

METRIC_COLUMNS = ["model", "adapter", "train_resolutions", "sample_resolution", "seed_set", "n", "n_ref",
                  "fid", "kid", "precision", "recall", "patch_fid", "patch_kid", "spectral_lsd",
                  "fid_mode", "seconds", "feature_seconds"]


@dataclass
class Plan:
    """A validated suite, bound to its dataset, device and adapters."""

    cfg: SuiteConfig
    device: torch.device
    dataset: object
    adapters: dict[str, object] = field(default_factory=dict)

    def train_resolutions(self, m: ModelConfig) -> list[int]:
        """Resolutions of real data a model was trained on (a fine-tune inherits its base's;
        its upsampled target resolution is not real data and is not listed)."""
        if m.finetune is not None:
            return self.train_resolutions(self.cfg_model(m.finetune.base))
        if m.train is not None:
            return list(m.train.resolutions)
        if m.adapter == "bilinear":
            src = self.cfg_model(m.source) if m.source != "data" else None
            return self.train_resolutions(src) if src else [m.base_resolution]
        return []

    def upsample_source(self, m: ModelConfig) -> int:
        """The resolution whose data a fine-tune upsamples to its target."""
        return m.finetune.upsample_from or max(self.train_resolutions(self.cfg_model(m.finetune.base)))

    def cfg_model(self, name: str) -> ModelConfig:
        return next(m for m in self.cfg.models if m.name == name)


def _dataset_kwargs(cfg: SuiteConfig) -> dict:
    d = cfg.dataset
    if d.kind == "toyfaces":
        return {"size": d.size or 10000, "seed": d.seed}
    if d.kind == "prepared":
        return {"name": d.name, "root": d.root, "source": d.source, "filter": d.filter}
    if d.kind == "grf":
        return grf.options_from_config(d)
    if d.kind == "openmoji":
        return openmoji.options_from_config(d)
    return {"path": d.path, "filter": d.filter or RESIZE_FILTER}


def data_resolutions(cfg: SuiteConfig) -> list[int]:
    """Resolutions the suite reads from its dataset: training sets, bilinear bases, FID references.

    A fine-tune's target resolution is not here: it is made by upsampling
    `finetune.upsample_from` images, which are.
    """
    needed = set(cfg.sample.resolutions)
    for m in cfg.models:
        if m.train is not None:
            needed.update(m.train.resolutions)
        if m.source == "data" and m.base_resolution is not None:
            needed.add(m.base_resolution)
        if m.finetune is not None and m.finetune.upsample_from is not None:
            needed.add(m.finetune.upsample_from)
    return sorted(needed)


def plan_suite(cfg: SuiteConfig) -> Plan:
    """Check everything that can be checked without training; raise BenchError listing problems."""
    problems: list[str] = []
    dataset = build_dataset(cfg.dataset.kind, **_dataset_kwargs(cfg))
    if hasattr(dataset, "validate"):
        dataset.validate(data_resolutions(cfg))  # missing data fails here, in well under a second
    plan = Plan(cfg, pick_device(cfg.device), dataset)
    rn = cfg.metrics.reference_n
    if isinstance(rn, int) and rn > len(dataset):
        problems.append(f"metrics.reference_n: {rn} is more than the {len(dataset)} images of the dataset; "
                        "lower it or use all")
    names = [m.name for m in cfg.models]
    for i, m in enumerate(cfg.models):
        where = f"models.{i} ({m.name})"
        if m.adapter not in ADAPTERS:
            problems.append(f"{where}.adapter: unknown model {m.adapter!r}; known: {', '.join(sorted(ADAPTERS))}")
            continue
        cls = ADAPTERS[m.adapter]
        if issubclass(cls, EDMAdapter):
            if m.train is None:
                problems.append(f"{where}.train: {m.adapter} needs a train section (resolutions, steps)")
                continue
            if m.source or m.base_resolution:
                problems.append(f"{where}: source/base_resolution only apply to bilinear; remove them")
            try:
                overrides = dict(m.arch_overrides)
                if m.train.dropout is not None:
                    overrides["dropout"] = m.train.dropout
                if _augmented(cfg, m):  # EDM's pipe conditions the network on 9 augmentation labels
                    overrides.setdefault("augment_dim", 9)
                # initial weights depend on the suite seed and the model's name only
                torch.manual_seed(zlib.crc32(f"{cfg.seed}:{m.name}".encode()))
                adapter = cls(m.arch or "cpu-tiny", overrides, device=plan.device,
                              sample_steps=cfg.sample.steps, precision=cfg.runtime.precision,
                              compile_backend=cfg.runtime.compile_backend if cfg.runtime.compile else None)
            except (KeyError, ValueError, TypeError) as exc:
                problems.append(f"{where}.arch: {str(exc).strip(chr(39))}")
                continue
            if m.finetune is not None:
                problems += _finetune_problems(plan, m, i, adapter)
            if m.train.augment and adapter.arch.augment_dim != 9:
                problems.append(f"{where}.arch_overrides.augment_dim: train.augment needs the 9-dim augmentation "
                                f"label embedding, not {adapter.arch.augment_dim}; remove the override")
            for r in sorted(set(m.train.resolutions) | set(cfg.sample.resolutions)):
                p = adapter.resolution_problem(r)
                if p:
                    key = "train.resolutions" if r in m.train.resolutions else "sample.resolutions"
                    problems.append(f"{where}.{key}: {p}")
            plan.adapters[m.name] = adapter
        elif m.adapter == "bilinear":
            if m.train is not None:  # the runner would train it, and it has no network
                problems.append(f"{where}.train: bilinear is not trained; remove the train section")
            if m.base_resolution is None or m.source is None:
                problems.append(f"{where}: bilinear needs source (a model name or 'data') and base_resolution")
            elif m.source != "data" and m.source not in names[:i]:
                problems.append(f"{where}.source: {m.source!r} is not a model listed before it (or 'data')")
            elif m.source != "data" and m.base_resolution not in plan.train_resolutions(plan.cfg_model(m.source)):
                problems.append(f"{where}.base_resolution: {m.base_resolution} is not a training resolution "
                                f"of {m.source}")
    world = rank_info()[1]
    for i, m in enumerate(cfg.models):
        if m.train is not None and m.train.batch_size < world:
            problems.append(f"models.{i} ({m.name}).train.batch_size: {m.train.batch_size} is smaller than the "
                            f"{world} processes; raise it or run fewer processes")
    if cfg.runtime.precision == "bf16" and plan.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        problems.append(f"runtime.precision: bf16 is not supported on {torch.cuda.get_device_name(plan.device)}; "
                        "use fp32")
    if problems:
        raise BenchError("\n".join(problems))
    from bench.inception import resolve

    resolve(cfg.metrics.inception_path)  # fail now, not after training
    return plan


def _augmented(cfg: SuiteConfig, m: ModelConfig) -> bool:
    """Trained with augmentation, or fine-tuning a model that was (same network)."""
    if m.train is not None and m.train.augment:
        return True
    before = cfg.models[:cfg.models.index(m)]  # a base must come first (checked elsewhere); no cycles
    base = next((b for b in before if m.finetune is not None and b.name == m.finetune.base), None)
    return base is not None and _augmented(cfg, base)


def _finetune_problems(plan: Plan, m: ModelConfig, i: int, adapter: EDMAdapter) -> list[str]:
    """A fine-tune must start from a trainable model listed before it with the same network."""
    ft, where = m.finetune, f"models.{i} ({m.name}).finetune"
    before = {b.name: b for b in plan.cfg.models[:i]}
    base = before.get(ft.base)
    if base is None:
        return [f"{where}.base: {ft.base!r} is not a model listed before {m.name}"]
    if base.train is None:
        return [f"{where}.base: {ft.base!r} is not trained (adapter {base.adapter}); name a unet or dfu model"]
    if ft.base not in plan.adapters:
        return []  # the base's own problems are reported already
    same = lambda a: a.replace(dropout=0.0)  # dropout is a training setting, not part of the weights
    if base.adapter != m.adapter or same(plan.adapters[ft.base].arch) != same(adapter.arch):
        return [f"{where}.base: {ft.base!r} has another adapter or architecture; a fine-tune continues "
                "the same network, so copy its adapter, arch and arch_overrides"]
    problems = []
    base_res = plan.train_resolutions(base)
    src = plan.upsample_source(m)
    if src not in base_res:
        problems.append(f"{where}.upsample_from: {src} is not a training resolution of {ft.base} ({base_res})")
    if ft.target_resolution in base_res:
        problems.append(f"{where}.target_resolution: {ft.target_resolution} is already a training resolution "
                        f"of {ft.base}; pick a higher one")
    p = adapter.resolution_problem(ft.target_resolution)
    if p:
        problems.append(f"{where}.target_resolution: {p}")
    t = m.train
    if t.weights is not None and len(t.weights) != len(base_res):
        problems.append(f"models.{i} ({m.name}).train.weights: give one weight per base resolution {base_res}")
    stray = sorted(set(t.micro_batch) - set(base_res) - {ft.target_resolution})
    if stray:
        problems.append(f"models.{i} ({m.name}).train.micro_batch: {stray} are not training resolutions")
    try:
        frozen_parameters(adapter.net, ft.strategy, ft.freeze)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
    return problems


def train_settings(plan: Plan, m: ModelConfig, dataset_size: int) -> TrainSettings:
    """The TrainSettings of a model's training (or fine-tuning) run."""
    t, ft = m.train, m.finetune
    resolutions, weights, seed = list(t.resolutions), t.weights, plan.cfg.seed
    schedule = t.schedule or ("weighted" if weights else "round-robin")
    upsampled, frozen = None, ()
    ema_rampup, augment = t.ema_rampup, t.augment
    if ft is not None:
        base = plan.cfg_model(ft.base)
        base_res = plan.train_resolutions(base)
        if ft.strategy == "spectral-only":  # the authors' --finetune_spectral: all data at the target
            resolutions, weights = [ft.target_resolution], None
            schedule = t.schedule or "round-robin"
        else:
            share = list(weights) if weights else [1.0] * len(base_res)
            weights = [w / sum(share) * (1 - ft.target_weight) for w in share] + [ft.target_weight]
            resolutions = base_res + [ft.target_resolution]
            schedule = t.schedule or "weighted"
        upsampled = ((ft.target_resolution, plan.upsample_source(m)),)
        frozen = frozen_parameters(plan.adapters[m.name].net, ft.strategy, ft.freeze)
        seed = zlib.crc32(f"{plan.cfg.seed}:finetune:{m.name}".encode())  # other draws than the base's
        # a transfer start: the EMA continues the base's EMA without a ramp-up, and the
        # augmentation is the base's, unless the suite says otherwise
        if "ema_rampup" not in t.model_fields_set:
            ema_rampup = None
        if "augment" not in t.model_fields_set:
            augment = _base_augment(plan.cfg, m)
    return TrainSettings(resolutions=tuple(resolutions), steps=t.total_steps, batch_size=t.batch_size,
                         lr=t.lr, dataset_size=dataset_size, weights=tuple(weights) if weights else None,
                         schedule=schedule, lr_warmup_nimg=t.warmup_nimg, ema_halflife_kimg=t.ema_halflife_kimg,
                         ema_rampup=ema_rampup, checkpoint_every=t.checkpoint_steps, seed=seed,
                         data_warmup_kimg=t.data_warmup_kimg,
                         data_warmup_max_resolution=t.data_warmup_max_resolution,
                         micro_batch=tuple(sorted(t.micro_batch.items())) or None,
                         upsampled=upsampled, frozen=frozen, augment=augment, precision=plan.cfg.runtime.precision,
                         compile_backend=plan.cfg.runtime.compile_backend if plan.cfg.runtime.compile else None)


def _base_augment(cfg: SuiteConfig, m: ModelConfig) -> Optional[float]:
    """The augmentation probability a fine-tune inherits: its base's (or the base's base's)."""
    while m.finetune is not None:
        m = next(b for b in cfg.models if b.name == m.finetune.base)
        if m.train is not None and m.train.augment:
            return m.train.augment
    return None


def environment(device: torch.device) -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                  timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "numpy", "clean-fid", "torch-fidelity", "pillow", "dfu-bench"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
        "python": platform.python_version(), "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch_threads": torch.get_num_threads(), "versions": versions,
        "world_size": rank_info()[1],
    }


class Runner:
    """Executes a plan in a run directory; every stage skips what is already on disk."""

    def __init__(self, plan: Plan, run_dir: Path):
        self.plan, self.cfg, self.dir = plan, plan.cfg, run_dir
        self.rank, self.world = rank_info()
        self._caches = None
        self.timings: dict[tuple[str, int, int], float] = {}

    # ---------------------------------------------------------------- train
    def train(self, m: ModelConfig) -> None:
        adapter: EDMAdapter = self.plan.adapters[m.name]
        final = self.dir / "checkpoints" / m.name / "model.safetensors"
        if checkpoint.exists(final):
            tensors, meta = checkpoint.load(final)
            adapter.load_state(tensors, meta)  # keeps the suite's sampling settings
            console.log(f"{m.name}: trained model found, not retraining")
            return
        settings = train_settings(self.plan, m, len(self.plan.dataset))
        if m.finetune is not None:
            # start from the base's trained (EMA) weights, as the authors' resume does
            base = self.plan.adapters[m.finetune.base]
            adapter.net.load_state_dict(base.net.state_dict(), strict=True)
            console.log(f"{m.name}: fine-tuning {m.finetune.base} ({m.finetune.strategy}; "
                        f"{len(settings.frozen)} of {sum(1 for _ in adapter.net.parameters())} parameter "
                        f"tensors frozen; {settings.upsampled[0][1]} px upsampled to {settings.upsampled[0][0]} px)")
        trainer = adapter.trainer(settings)
        state = self.dir / "checkpoints" / m.name / "train_state.safetensors"
        if checkpoint.exists(state):
            tensors, meta = checkpoint.load(state)
            trainer.load_state_tensors(tensors, meta["step"], meta.get("losses", []))
            console.log(f"{m.name}: resuming training from step {trainer.step}")
        dataset = self.plan.dataset
        upsampled = dict(settings.upsampled or ())

        def batch_fn(idx: np.ndarray, res: int) -> torch.Tensor:
            if res in upsampled:  # mixed fine-tuning: the data at a lower resolution, upsampled
                return to_float_tensor(resize_bilinear(dataset.images([int(i) for i in idx], upsampled[res]), res))
            return to_float_tensor(dataset.images([int(i) for i in idx], res))

        def save_state():
            if self.rank == 0:
                checkpoint.save(state, trainer.state_tensors(),
                                {"step": trainer.step, "losses": trainer.losses, "settings": settings.to_dict()})

        start = time.perf_counter()
        with progress() as p:
            task = p.add_task(f"train {m.name}", total=settings.steps, completed=trainer.step, unit="step")
            while trainer.step < settings.steps:
                loss = trainer.train_step(batch_fn)
                p.update(task, advance=1, description=f"train {m.name} loss {loss:.3f}")
                if trainer.step % settings.checkpoint_every == 0 and trainer.step < settings.steps:
                    save_state()
        adapter.adopt(trainer)
        if self.rank == 0:
            tensors, meta = adapter.state()
            meta.update(train_settings=settings.to_dict(), losses=trainer.losses,
                        train_seconds=round(time.perf_counter() - start, 2))
            checkpoint.save(final, tensors, meta)

    def model_card(self, m: ModelConfig) -> None:
        """checkpoints/<model>/model_card.json: parameters, FLOPs on the grid, training-step memory."""
        from bench.modelcard import model_card, train_step_peak_memory

        path = self.dir / "checkpoints" / m.name / "model_card.json"
        if path.is_file() or self.rank != 0:
            return
        adapter = self.plan.adapters[m.name]
        top = max(self.plan.train_resolutions(m) + ([m.finetune.target_resolution] if m.finetune else []))
        memory = train_step_peak_memory(adapter.arch, top, m.train.batch_size, self.plan.device)
        card = model_card(adapter.arch, self.cfg.sample.resolutions, memory)
        card["arch"] = m.arch or "cpu-tiny"
        write_json(path, card)

    # --------------------------------------------------------------- sample
    def _sample_path(self, name: str, res: int, seed_set: int) -> Path:
        return self.dir / "samples" / name / f"r{res:03d}_s{seed_set}.npz"

    def samples(self, name: str, res: int, seed_set: int = 0) -> np.ndarray:
        """Samples of `name` at `res` for one seed set (seeds s*n .. (s+1)*n-1), made once.

        Batch k (seeds s*n + k*bs ...) is made by rank k % world and saved as its own part
        file, so an interrupted set resumes from its finished batches (with any number of
        processes); rank 0 then merges the parts into one .npz that every rank reads.
        """
        from bench import dist

        path = self._sample_path(name, res, seed_set)
        dist.barrier()
        if not path.is_file():
            self._make_samples(name, res, seed_set, path)
        with np.load(path) as z:
            self.timings[(name, res, seed_set)] = float(z["seconds"])
            return z["images"]

    def _make_samples(self, name: str, res: int, seed_set: int, path: Path) -> None:
        from bench import dist

        m = self.plan.cfg_model(name)
        n, bs = self.cfg.sample.n, self.cfg.sample.batch_size
        seed = seed_set * n
        parts = path.with_name(path.stem + ".parts")
        n_batches = -(-n // bs)
        mine = set(dist.my_batches(n_batches, self.rank, self.world))
        if m.adapter == "bilinear":
            adapter = BilinearAdapter(self._source(m, seed_set), m.base_resolution, m.source)
        else:
            adapter = self.plan.adapters[name]
        if self.world > 1:
            console.log(f"(rank {self.rank}/{self.world}) sample {name}@{res}: batches "
                        f"{dist.describe_batches(mine)} of {n_batches}")
        with progress() as p:
            task = p.add_task(f"sample {name} @{res} seeds {seed}-{seed + n - 1}", total=n, unit="img")
            for k in range(n_batches):
                lo, k_n = k * bs, min(bs, n - k * bs)
                part = parts / f"b{k:05d}.npz"
                if k in mine and not part.is_file():
                    t0 = time.perf_counter()
                    images = adapter.sample(k_n, res, seed + lo, k_n)
                    with atomic_path(part) as tmp:
                        with open(tmp, "wb") as f:
                            np.savez(f, images=images, seconds=time.perf_counter() - t0)
                p.advance(task, k_n)
        dist.barrier()
        if self.rank == 0:
            images, seconds = [], 0.0
            for k in range(n_batches):
                with np.load(parts / f"b{k:05d}.npz") as z:
                    images.append(z["images"])
                    seconds += float(z["seconds"])  # device-seconds, summed over ranks
            images = np.concatenate(images)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, images=images, seeds=np.arange(seed, seed + n), seconds=seconds)
            shutil.rmtree(parts, ignore_errors=True)
            if seed_set == self.cfg.sample.seeds[0]:
                self._preview(name, res, images)
        dist.barrier()

    def _source(self, m: ModelConfig, seed_set: int):
        if m.source == "data":
            # real images that are not in the default FID reference set (indices 0..n-1),
            # or the baseline would score ~0 at its own base resolution; with
            # metrics.reference_n: all (the paper's protocol) every real image is in it
            offset = self.cfg.sample.n

            def real(n, res, seed):
                idx = [(offset + seed + j) % len(self.plan.dataset) for j in range(n)]
                return self.plan.dataset.images(idx, res)
            return real
        # another model's samples at the base resolution, sample j of the set <- seed s*n + j;
        # fetched here, before the per-rank batch loop (fetching is collective)
        made, first = self.samples(m.source, m.base_resolution, seed_set), seed_set * self.cfg.sample.n
        return lambda n, res, seed: made[seed - first:seed - first + n]

    def _preview(self, name: str, res: int, images: np.ndarray) -> None:
        from PIL import Image

        from bench.images import image_grid

        grid = image_grid(images[:16], cols=8)
        with atomic_path(self.dir / "previews" / f"{name}_r{res:03d}.png") as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")

    # -------------------------------------------------------------- metrics
    def caches(self) -> dict:
        """One feature cache per FID mode of the suite, the primary mode first."""
        if self._caches is None:
            from bench.features import build_feature_extractor, feature_cache

            mc = self.cfg.metrics
            self._caches = {mode: feature_cache(build_feature_extractor(
                mode, self.plan.device, mc.batch_size, mc.inception_path)) for mode in mc.fid_modes}
        return self._caches

    def reference_n(self) -> int:
        """Real images per resolution: metrics.reference_n (`all`: the whole dataset), or by default
        as many as the generated sets have (at most the dataset)."""
        rn = self.cfg.metrics.reference_n
        if rn is None:
            return min(self.cfg.sample.n, len(self.plan.dataset))
        return len(self.plan.dataset) if rn == "all" else rn

    def reference(self, res: int):
        """The reference set at `res` (bench.refset): held in memory by default, streamed when
        metrics.reference_n is given."""
        from bench import refset

        mc = self.cfg.metrics
        from bench.metrics import needs

        patches = ((mc.patch_size, mc.patches_per_image)
                   if "patches" in needs(mc.metrics) and res >= mc.patch_size else None)
        if mc.reference_n is None:
            return refset.held(self.plan.dataset, res, self.reference_n(), self.caches(), patches)
        return refset.streamed(self.plan.dataset, res, self.reference_n(), self.caches(), mc.batch_size, patches)

    def _keep_references(self, ref) -> None:
        """references/rNNN.npz: a few real images, so reports (Fig. 5) never reopen the dataset."""
        path = self.dir / "references" / f"r{ref.resolution:03d}.npz"
        if self.rank == 0 and not path.is_file():
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, images=ref.first, indices=np.arange(len(ref.first)))

    def _scores(self, ref, fake: np.ndarray, res: int, label: str) -> dict[str, dict]:
        """Every requested metric of one generated set against the reference set, per FID mode.

        Inception metrics come from each mode's features; the spectral distance is
        mode-independent and repeats in every mode's scores."""
        from bench.metrics import Pixels
        from bench.scoring import score, set_stats

        mc = self.cfg.metrics
        names, options = mc.metrics, mc.options
        pixels = Pixels(fake)
        out = {}
        for mode, cache in self.caches().items():
            t0 = time.perf_counter()
            real = ref.stats(mode)
            stats = set_stats(fake, cache, names, options, "generated", f"{label} ({mode})",
                              patches=real.patches is not None, pixels=pixels)
            scores = score(names, real, stats, options)
            scores["feature_seconds"] = time.perf_counter() - t0
            out[mode] = scores
        return out

    def evaluate(self) -> list[dict]:
        """metrics.csv: one row per (model, sampled resolution, seed set, FID mode)."""
        rows = []
        for res in self.cfg.sample.resolutions:
            ref = self.reference(res)
            self._keep_references(ref)
            for m in self.cfg.models:
                for s in self.cfg.sample.seeds:
                    fake = self.samples(m.name, res, s)
                    for mode, scores in self._scores(ref, fake, res, f"{m.name}@{res} s{s}").items():
                        row = {"model": m.name, "adapter": m.adapter,
                               "train_resolutions": "/".join(map(str, self.plan.train_resolutions(m))),
                               "sample_resolution": res, "seed_set": s, "n": len(fake), "n_ref": ref.n,
                               "fid_mode": mode, "seconds": self.timings.get((m.name, res, s), float("nan"))}
                        row.update(scores)
                        rows.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
        for mode, cache in self.caches().items():
            ex = cache.extractor
            if ex.images_done:
                console.log(f"Inception features ({mode}): {ex.images_done} images at "
                            f"{ex.images_per_second:.1f} img/s")
            console.log(f"reference feature sets: {cache.computed.get('reference', 0)} computed, "
                        f"{cache.reused.get('reference', 0)} reused from cache; generated: "
                        f"{cache.computed.get('generated', 0)} computed, {cache.reused.get('generated', 0)} "
                        f"reused ({mode} mode)")
        if self.rank == 0:
            cols = [c for c in METRIC_COLUMNS if any(c in r for r in rows)]
            with atomic_path(self.dir / "metrics.csv") as tmp:
                with open(tmp, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=cols)
                    w.writeheader()
                    w.writerows(rows)
        return rows


def set_cuda_precision(precision: str) -> None:
    """fp32 means fp32 on CUDA too: PyTorch's default lets cuDNN convolutions use TF32,
    which the authors' training code switches off."""
    tf32 = precision != "fp32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def new_run_id() -> str:
    """A run id from the local clock, e.g. 20261127-142725."""
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def new_run_dir(cfg: SuiteConfig, results: Path, run_id: Optional[str]) -> Path:
    return Path(results) / cfg.name / (run_id or new_run_id())


def run_suite(cfg: SuiteConfig, results: Path = PROJECT_ROOT / "results", run_id: Optional[str] = None,
              report_dir: Optional[Path] = None) -> Path:
    """Validate, then run every stage; returns the run directory."""
    from bench import dist

    plan = plan_suite(cfg)
    set_cuda_precision(cfg.runtime.precision)
    rank, world = dist.init(plan.device)
    # one run directory for all ranks: rank 0's clock names it
    run_dir = new_run_dir(cfg, results, dist.broadcast(run_id or new_run_id()))
    resolved = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    config_file = run_dir / "suite.yaml"
    if config_file.is_file() and config_file.read_text() != resolved:
        raise BenchError(f"run {run_dir} was started with a different suite; use another --run-id")
    if rank == 0:
        write_text(config_file, resolved)
        write_json(run_dir / "environment.json", environment(plan.device))
    if world > 1:
        console.log(f"(rank {rank}/{world}) joined ({dist.tdist.get_backend()}, device {plan.device})")
    dist.barrier()
    console.log(f"run directory: {run_dir}  device: {plan.device}")
    runner = Runner(plan, run_dir)
    for m in cfg.models:
        if m.train is not None:
            runner.train(m)
            runner.model_card(m)
    rows = runner.evaluate()
    if rank == 0:
        from bench.report import summary_table, write_report

        write_report(run_dir, cfg, rows, report_dir)
        console.print(summary_table(cfg, rows))
        console.log(f"results in {run_dir}")
    dist.barrier()
    dist.shutdown()
    return run_dir
