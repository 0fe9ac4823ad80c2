"""GPU throughput of the paper-small models: training and sampling img/s at 64 and 96 px.

Run on a CUDA machine:  python benchmarks/gpu_perf.py --out DIR [--budget-s 420]
It trains `paper-small` DFU and UNet through the same Trainer the harness uses
(EDM loss, Adam, EMA, per-resolution micro-batches), on a fixed pool of toyfaces
images held on the GPU (so the numbers are the model's, not the data loader's),
then samples with the Heun sampler (18 steps = 35 evaluations). Also measured:
bf16 autocast and torch.compile (inductor) for one configuration each. Every
result is appended to DIR/gpu_perf.json as soon as it exists, so a run cut short
by the time budget keeps what it measured. Needs torch, numpy, safetensors only.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datasets import ToyFaces, to_float_tensor  # noqa: E402
from models.card import model_card  # noqa: E402
from models.adapters import ADAPTERS  # noqa: E402
from models.training import TrainSettings  # noqa: E402


DEV = "cuda"
ARCH = "paper-small"


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def peak_gib():
    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if DEV == "cuda" else None


def reset_peak():
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.empty_cache()


def train_rate(kind, res, batch, steps, warmup, precision="fp32", compile_backend=None, deadline=math.inf,
               micro=None):
    torch.manual_seed(0)
    adapter = ADAPTERS[kind](ARCH, device=DEV)
    pool = to_float_tensor(ToyFaces(size=256, seed=0).images(range(256), res)).to(DEV)
    settings = TrainSettings(resolutions=(res,), steps=10 ** 9, batch_size=batch, lr=1e-4, dataset_size=256,
                             lr_warmup_steps=0, ema_halflife_kimg=500, precision=precision,
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


def sample_rate(kind, res, n, precision="fp32"):
    torch.manual_seed(0)
    adapter = ADAPTERS[kind](ARCH, device=DEV, sample_steps=18, precision=precision)
    adapter.sample(4, res, seed=0, batch_size=4)  # warm-up (cuDNN autotune, FFT plans)
    sync()
    reset_peak()
    t0 = time.perf_counter()
    images = adapter.sample(n, res, seed=0, batch_size=n)
    sync()
    dt = time.perf_counter() - t0
    out = {"what": "sample", "model": kind, "resolution": res, "batch": n, "precision": precision,
           "heun_steps": 18, "network_evals": 35, "seconds": round(dt, 3), "img_per_s": round(n / dt, 3),
           "peak_mem_gib": peak_gib(),
           "images_finite_uint8": bool(images.dtype == np.uint8 and images.shape == (n, res, res, 3))}
    del adapter
    reset_peak()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=420)
    ap.add_argument("--device", default="cuda", help="cpu + --arch cpu-tiny: a dry run of this script")
    ap.add_argument("--arch", default="paper-small")
    args = ap.parse_args()
    global DEV, ARCH
    DEV, ARCH = args.device, args.arch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = start + args.budget_s
    results = {"device": torch.cuda.get_device_name(0) if DEV == "cuda" else platform.processor(),
               "arch": ARCH, "torch": torch.__version__,
               "cuda": torch.version.cuda, "python": platform.python_version(),
               "tf32_conv": torch.backends.cudnn.allow_tf32, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
               "flops_per_forward": {}, "runs": [], "errors": []}
    for kind, mode in (("dfu", "dual"), ("unet", "spatial")):
        card = model_card(__import__("models.networks", fromlist=["get_arch"]).get_arch(ARCH, mode=mode),
                          [64, 96])
        results["flops_per_forward"][kind] = {"params": card["params_total"], **card["flops_per_forward"]}

    def record(fn, *a, **k):
        left = deadline - time.perf_counter()
        if left < 20:
            results["errors"].append(f"skipped {fn.__name__}{a}: time budget spent")
            return
        try:
            r = fn(*a, **k)
            r["elapsed_s"] = round(time.perf_counter() - start, 1)
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
        except Exception as exc:  # keep measuring the rest; report the failure
            results["errors"].append(f"{fn.__name__}{a} {k}: {type(exc).__name__}: {str(exc)[:400]}")
            print("ERROR", results["errors"][-1], flush=True)
            reset_peak()
        (out / "gpu_perf.json").write_text(json.dumps(results, indent=1))

    per = lambda: min(deadline, time.perf_counter() + 40)  # at most ~40 s of timed steps per config
    for kind in ("unet", "dfu"):
        for res in (64, 96):
            record(train_rate, kind, res, 32, 200, 5, deadline=per())
    # the harness's gradient accumulation path (global batch 64 as 2 x 32) and bf16 autocast
    record(train_rate, "dfu", 96, 64, 100, 3, micro=32, deadline=per())
    record(train_rate, "dfu", 96, 32, 200, 5, precision="bf16", deadline=per())
    for kind in ("unet", "dfu"):
        for res in (64, 96):
            record(sample_rate, kind, res, 32)
    record(sample_rate, "dfu", 96, 32, precision="bf16")
    # torch.compile: inductor compiles once per resolution; the first steps include it
    record(train_rate, "unet", 64, 32, 100, 3, compile_backend="inductor", deadline=per())
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    (out / "gpu_perf.json").write_text(json.dumps(results, indent=1))
    print("done in", results["total_seconds"], "s; errors:", results["errors"])


if __name__ == "__main__":
    main()
