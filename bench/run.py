"""`bench run`: suite -> plan -> train -> sample -> features and metrics -> report, as plain functions.

`run_suite` reads top to bottom: plan the suite (bench.plan: every check, before
anything is written), open the run directory (bench.rundir), train each trainable
model (once per training seed of a suite with `seeds:`) and write its model card,
then for each sampled resolution score every model's seed sets against the
reference set (`evaluate`, which samples on demand), write metrics.csv and the
report.

Each stage reads the previous stage's files in the run directory and writes its
own, atomically; finished work (a trained model, a sample batch, a feature set in
the cache) is never redone, so re-running with the same --run-id resumes an
interrupted run. Under torchrun every rank runs every stage (bench.dist): sample
and feature batches are dealt round-robin, rank 0 writes the shared files.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import yaml
from PIL import Image

from bench import checkpoint, dist, integrity, refset
from bench.config import SuiteConfig
from bench.datasets import to_float_tensor
from bench.errors import BenchError
from bench.features import FeatureCache, build_feature_extractor, feature_cache
from bench.images import image_grid
from bench.io import PROJECT_ROOT, atomic_path, rank_info, sha256_file, write_json, write_text
from bench.metrics import BOOTSTRAP_RESAMPLES, Pixels, needs
from bench.plan import ModelPlan, Plan, plan_suite
from bench.progress import console, progress
from bench.report import summary_table, write_report
from bench.results import format_resolutions, row, write_metrics
from bench.rundir import RunDir, environment, new_run_id
from bench.scoring import score, set_stats
from models.images import resize_bilinear


def run_suite(cfg: SuiteConfig, results: Path = PROJECT_ROOT / "results", run_id: Optional[str] = None,
              report_dir: Optional[Path] = None) -> RunDir:
    """Validate, then run every stage; returns the run directory."""
    plan = plan_suite(cfg)
    set_cuda_precision(cfg.runtime.precision)
    rank, world = dist.init(plan.device)
    run = RunDir.of(results, cfg.name, dist.broadcast(run_id or new_run_id()))  # rank 0's clock names it
    open_run_dir(run, plan)
    if world > 1:
        console.log(f"(rank {rank}/{world}) joined ({dist.tdist.get_backend()}, device {plan.device})")
    dist.barrier()
    console.log(f"run directory: {run}  device: {plan.device}")
    for model in plan.models:
        if model.train is not None:
            train(plan, run, model)
        if (model.train is not None or model.checkpoint is not None) and \
                model.train_seed in (None, plan.train_seeds[0]):  # one card per model: seeds share the network
            write_model_card(plan, run, model)
    rows = evaluate(plan, run)
    if rank == 0:
        write_json(run.environment_json, {**environment(plan.device), **_started(run)})  # what ran it last
        write_report(run, cfg, rows, report_dir)
        console.print(summary_table(cfg, rows))
        console.log(f"results in {run}")
        integrity.close_run(run)
    dist.barrier()
    dist.shutdown()
    return run


def set_cuda_precision(precision: str) -> None:
    """fp32 means fp32 on CUDA too: PyTorch's default lets cuDNN convolutions use TF32,
    which the authors' training code switches off."""
    tf32 = precision != "fp32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def open_run_dir(run: RunDir, plan: Plan) -> None:
    """Lock the run directory and check the files a resume trusts (bench.integrity), then
    suite.yaml and environment.json; a run id started with another suite is refused."""
    resolved = yaml.safe_dump(plan.cfg.model_dump(mode="json"), sort_keys=False)
    if rank_info()[0] == 0:
        integrity.open_run(run)
    if run.suite_yaml.is_file() and run.suite_yaml.read_text() != resolved:
        raise BenchError(f"run {run} was started with a different suite; use another --run-id")
    if rank_info()[0] == 0:
        write_text(run.suite_yaml, resolved)
        if not _readable_json(run.environment_json):  # a resume rewrites it at the end
            write_json(run.environment_json, environment(plan.device))


def _started(run: RunDir) -> dict:
    """{'time': ...} of the run's first start, from the environment record written then ({} if none)."""
    try:
        return {"time": json.loads(run.environment_json.read_text())["time"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


# ----------------------------------------------------------------------- train


def train(plan: Plan, run: RunDir, model: ModelPlan) -> None:
    """Train (or fine-tune) a model from its last checkpoint; a trained model is loaded instead."""
    adapter, settings, final = model.adapter, model.train, run.checkpoint(model.key)
    if checkpoint.exists(final):
        adapter.load_state(*checkpoint.load(final))  # keeps the suite's sampling settings
        console.log(f"{model.name}: trained model found, not retraining")
        return
    if model.finetune_base is not None:
        adapter.start_from(plan.model(model.finetune_base, model.train_seed).adapter)
        (target, source), = settings.upsampled
        console.log(f"{model.name}: fine-tuning {model.finetune_base} ({model.config.finetune.strategy}; "
                    f"{len(settings.frozen)} of {len(adapter.parameter_names())} parameter tensors frozen; "
                    f"{source} px upsampled to {target} px)")
    trainer = adapter.trainer(settings)
    state = run.train_state(model.key)
    if checkpoint.exists(state):
        tensors, meta = checkpoint.load(state)
        trainer.load_state_tensors(tensors, meta["step"], meta.get("losses", []))
        console.log(f"{model.name}: resuming training from step {trainer.step}")
    batch = training_batches(plan, model)

    def save_state():
        if rank_info()[0] == 0:
            checkpoint.save(state, trainer.state_tensors(),
                            {"step": trainer.step, "losses": trainer.losses, "settings": settings.to_dict()})

    t0 = time.perf_counter()
    with progress() as p:
        task = p.add_task(f"train {model.key}", total=settings.steps, completed=trainer.step, unit="step")
        while trainer.step < settings.steps:
            loss = trainer.train_step(batch)
            p.update(task, advance=1, description=f"train {model.key} loss {loss:.3f}")
            if trainer.step % settings.checkpoint_every == 0 and trainer.step < settings.steps:
                save_state()
    adapter.adopt(trainer)
    if rank_info()[0] == 0:
        tensors, meta = adapter.state()
        meta.update(train_settings=settings.to_dict(), losses=trainer.losses,
                    train_seconds=round(time.perf_counter() - t0, 2))
        checkpoint.save(final, tensors, meta)


def training_batches(plan: Plan, model: ModelPlan) -> Callable[[np.ndarray, int], torch.Tensor]:
    """(image indices, resolution) -> the network's input batch; a mixed fine-tune's target
    resolution is the data at a lower resolution, upsampled."""
    dataset, upsampled = plan.dataset, dict(model.train.upsampled or ())

    def batch(idx: np.ndarray, res: int) -> torch.Tensor:
        if res in upsampled:
            return to_float_tensor(resize_bilinear(dataset.images([int(i) for i in idx], upsampled[res]), res))
        return to_float_tensor(dataset.images([int(i) for i in idx], res))
    return batch


def write_model_card(plan: Plan, run: RunDir, model: ModelPlan) -> None:
    """checkpoints/<model>/model_card.json: parameters, FLOPs on the grid, training-step memory
    (a pretrained model's: its checkpoint's network, which file that was, no training step)."""
    path = run.model_card(model.key)
    if path.is_file() or rank_info()[0] != 0:
        return
    if model.train is None:
        card = model.adapter.model_card(plan.sample.resolutions)
        if card is not None:
            card.update(checkpoint=str(model.checkpoint), checkpoint_sha256=sha256_file(Path(model.checkpoint)),
                        train_resolutions=list(model.train_resolutions))
    else:
        card = model.adapter.model_card(plan.sample.resolutions, memory_resolution=model.largest_trained_resolution,
                                        batch=model.train.batch_size, device=plan.device)
    if card is not None:
        write_json(path, card)


# ---------------------------------------------------------------------- sample


def samples(plan: Plan, run: RunDir, model: ModelPlan, res: int, seed_set: int) -> tuple[np.ndarray, float]:
    """(images, seconds) of `model` at `res` for one seed set (seeds s*n .. (s+1)*n-1), made once.

    Batch k (seeds s*n + k*bs ...) is made by rank k % world and saved as its own part
    file, so an interrupted set resumes from its finished batches (with any number of
    processes); rank 0 then merges the parts into one .npz that every rank reads.
    """
    path = run.samples(model.key, res, seed_set)
    dist.barrier()
    if not path.is_file():
        make_samples(plan, run, model, res, seed_set)
    with np.load(path) as z:
        return z["images"], float(z["seconds"])


def make_samples(plan: Plan, run: RunDir, model: ModelPlan, res: int, seed_set: int) -> None:
    rank, world = rank_info()
    n, bs = plan.sample.n, plan.sample.batch_size
    seed = seed_set * n
    n_batches = -(-n // bs)
    mine = set(dist.my_batches(n_batches, rank, world))
    adapter = model.adapter
    if model.source is not None:
        adapter = adapter.with_source(source_images(plan, run, model, seed_set))
    if world > 1:
        console.log(f"(rank {rank}/{world}) sample {model.key}@{res}: batches "
                    f"{dist.describe_batches(mine)} of {n_batches}")
    with progress() as p:
        task = p.add_task(f"sample {model.key} @{res} seeds {seed}-{seed + n - 1}", total=n, unit="img")
        for k in range(n_batches):
            lo, k_n = k * bs, min(bs, n - k * bs)
            part = run.sample_part(model.key, res, seed_set, k)
            if k in mine and not part.is_file():
                t0 = time.perf_counter()
                images = adapter.sample(k_n, res, seed + lo, k_n)
                with atomic_path(part) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, images=images, seconds=time.perf_counter() - t0)
            p.advance(task, k_n)
    dist.barrier()
    if rank == 0:
        images, seconds = [], 0.0
        for k in range(n_batches):
            with np.load(run.sample_part(model.key, res, seed_set, k)) as z:
                images.append(z["images"])
                seconds += float(z["seconds"])  # device-seconds, summed over ranks
        images = np.concatenate(images)
        trained_with = {} if model.train_seed is None else {"train_seed": model.train_seed}
        with atomic_path(run.samples(model.key, res, seed_set)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=images, seeds=np.arange(seed, seed + n), seconds=seconds, **trained_with)
        shutil.rmtree(run.sample_parts(model.key, res, seed_set), ignore_errors=True)
        if seed_set == plan.sample.seeds[0]:
            preview(run, model, res, images)
    dist.barrier()


def source_images(plan: Plan, run: RunDir, model: ModelPlan, seed_set: int) -> Callable:
    """(n, resolution, seed) -> the images a resizing model starts from, for one seed set."""
    if model.source == "data":
        # real images that are not in the default FID reference set (indices 0..n-1),
        # or the baseline would score ~0 at its own base resolution; with
        # metrics.reference_n: all (the paper's protocol) every real image is in it
        offset, dataset = plan.sample.n, plan.dataset

        def real(n, res, seed):
            return dataset.images([(offset + seed + j) % len(dataset) for j in range(n)], res)
        return real
    # another model's samples at the base resolution, sample j of the set <- seed s*n + j;
    # fetched here, before the per-rank batch loop (fetching is collective)
    made, _ = samples(plan, run, plan.model(model.source, model.train_seed), model.base_resolution, seed_set)
    first = seed_set * plan.sample.n
    return lambda n, res, seed: made[seed - first:seed - first + n]


def preview(run: RunDir, model: ModelPlan, res: int, images: np.ndarray) -> None:
    grid = image_grid(images[:16], cols=8)
    with atomic_path(run.preview(model.key, res)) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


# --------------------------------------------------------------------- metrics


def evaluate(plan: Plan, run: RunDir) -> list[dict]:
    """metrics.csv: one row per (model, training seed, sampled resolution, seed set, FID mode), sampling on
    demand. A suite with `seeds:` adds the train_seed column; where a model has one training seed the
    bootstrap over samples gives FID and KID their standard errors."""
    caches = feature_caches(plan)
    rows = []
    for res in plan.sample.resolutions:
        ref = reference_set(plan, res, caches)
        keep_references(run, ref)
        for model in plan.models:
            seeded = {} if plan.cfg.seeds is None else {"train_seed": model.train_seed}
            # one training seed gives no spread over seeds: the bootstrap over samples stands in
            bootstrap = BOOTSTRAP_RESAMPLES if model.train_seed is None or len(plan.train_seeds) == 1 else 0
            for s in plan.sample.seeds:
                fake, seconds = samples(plan, run, model, res, s)
                for mode, scores in score_set(plan, ref, fake, caches, f"{model.key}@{res} s{s}",
                                              bootstrap).items():
                    rows.append(row(model=model.name, adapter=model.config.adapter,
                                    train_resolutions=format_resolutions(model.train_resolutions),
                                    sample_resolution=res, seed_set=s, n=len(fake), n_ref=ref.n, fid_mode=mode,
                                    seconds=seconds, **scores, role=model.role, **seeded))
    log_feature_counts(caches)
    if rank_info()[0] == 0:
        write_metrics(run.metrics_csv, rows)
    return rows


def feature_caches(plan: Plan) -> dict[str, FeatureCache]:
    """One feature cache per FID mode of the suite, the primary mode first."""
    mc = plan.cfg.metrics
    return {mode: feature_cache(build_feature_extractor(mode, plan.device, mc.batch_size, mc.inception_path))
            for mode in mc.fid_modes}


def reference_set(plan: Plan, res: int, caches: dict[str, FeatureCache]) -> refset.ReferenceSet:
    """The real images at `res` that every model is scored against (bench.refset): held in memory by
    default, streamed when metrics.reference_n is given."""
    mc = plan.cfg.metrics
    patches = ((mc.patch_size, mc.patches_per_image)
               if "patches" in needs(mc.metrics) and res >= mc.patch_size else None)
    if not needs(mc.metrics) - {"pixels"}:
        caches = {}  # pixel metrics only (grf-spectrum): no Inception features of the reference
    if mc.reference_n is None:
        return refset.held(plan.dataset, res, plan.reference_n, caches, patches)
    return refset.streamed(plan.dataset, res, plan.reference_n, caches, mc.batch_size, patches)


def keep_references(run: RunDir, ref: refset.ReferenceSet) -> None:
    """references/rNNN.npz: a few real images, so reports (Fig. 5) never reopen the dataset."""
    path = run.reference(ref.resolution)
    if rank_info()[0] == 0 and not path.is_file():
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=ref.first, indices=np.arange(len(ref.first)))


def score_set(plan: Plan, ref: refset.ReferenceSet, fake: np.ndarray, caches: dict[str, FeatureCache],
              label: str, bootstrap: int = 0) -> dict[str, dict]:
    """Every requested metric of one generated set against the reference set, per FID mode.

    Inception metrics come from each mode's features; the pixel metrics do not depend
    on the mode and repeat in every mode's scores. `bootstrap`: resamples of the
    bootstrap over samples (0: none); a metric scored against the dataset's exact
    answer gets the dataset's scorer."""
    mc = plan.cfg.metrics
    options = replace(mc.options, bootstrap=bootstrap, exact=getattr(plan.dataset, "exact_scores", None))
    pixels = Pixels(fake)
    out = {}
    for mode, cache in caches.items():
        t0 = time.perf_counter()
        real = ref.stats(mode)
        stats = set_stats(fake, cache, mc.metrics, mc.options, "generated", f"{label} ({mode})",
                          patches=real.patches is not None, pixels=pixels)
        out[mode] = {**score(mc.metrics, real, stats, options), "feature_seconds": time.perf_counter() - t0}
    return out


def log_feature_counts(caches: dict[str, FeatureCache]) -> None:
    for mode, cache in caches.items():
        ex = cache.extractor
        if ex.images_done:
            console.log(f"Inception features ({mode}): {ex.images_done} images at {ex.images_per_second:.1f} img/s")
        console.log(f"reference feature sets: {cache.computed.get('reference', 0)} computed, "
                    f"{cache.reused.get('reference', 0)} reused from cache; generated: "
                    f"{cache.computed.get('generated', 0)} computed, {cache.reused.get('generated', 0)} "
                    f"reused ({mode} mode)")
