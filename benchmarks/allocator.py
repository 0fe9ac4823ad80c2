"""What the `bench` process's allocator setting (bench.allocator) saves: the same work in processes
that keep the memory they free and in processes left at glibc's default, alternating.

    .venv/bin/python benchmarks/allocator.py [--pairs 3] [--calls 4]

Each process sets its allocator the way `bench` does ($DFU_BENCH_MALLOC=keep or system through
``bench.allocator.keep_freed_memory``), runs on one torch thread, runs every workload once to warm
up and then times --calls calls of each (CPU time, minor page faults):

* ``features``: Inception features (bench.features, clean mode) of 64 random 64 px images, batch 32;
* ``train-32``, ``train-64``: a cpu-small DFU training step (forward + backward, batch 8; the step
  of benchmarks/_dfu.py) at 32 and 64 px;
* ``denoise-64``: the same DFU's forward without gradients at 64 px (one sampler step's call).

The processes run system, keep, system, keep, ... (--pairs of each). Before printing, every
process's results must be bit-identical (sha256 of the features, outputs and gradients): the
setting may change the time, not the numbers. Printed per workload: the median CPU seconds per
call each way, keep / system as the median of the pairs' ratios with the range over the pairs,
and page faults per call each way. Needs glibc (Linux); elsewhere it says so and exits 2.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from _cli import Parser, fail  # noqa: E402

WORKLOADS = ("features", "train-32", "train-64", "denoise-64")


def workloads():
    """name -> a call returning the tensors/arrays whose bytes must not depend on the allocator."""
    import numpy as np
    import torch

    from _dfu import build, inputs, run_step
    from bench.features import FeatureExtractor

    extractor = FeatureExtractor(torch.device("cpu"), batch_size=32)
    images = np.random.default_rng(0).integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
    net = build("cpu-small")

    def train(res):
        x, sigma = inputs(res)

        def call():
            y = run_step(net, x, sigma)
            return [y.detach(), *(p.grad for p in net.parameters() if p.grad is not None)]
        return call

    def denoise():
        x, sigma = inputs(64)
        with torch.no_grad():
            return [net(x, sigma)]

    return {"features": lambda: [extractor.batch_features(images)], "train-32": train(32), "train-64": train(64),
            "denoise-64": denoise}


def worker(calls: int) -> None:
    import numpy as np
    import torch

    from bench.allocator import keep_freed_memory
    state = keep_freed_memory()
    torch.set_num_threads(1)
    out = {"allocator": state}
    for name, call in workloads().items():
        digest = hashlib.sha256()
        for a in call():  # warm-up; its results are the ones compared between processes
            digest.update(np.ascontiguousarray(a.numpy() if isinstance(a, torch.Tensor) else a).tobytes())
        times, faults = [], []
        for _ in range(calls):
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
            call()
            times.append(time.process_time() - t0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        out[name] = {"cpu_s": times, "faults": faults, "sha256": digest.hexdigest()}
    print(json.dumps(out))


def main() -> None:
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=3, help="processes each way, alternating (default 3)")
    ap.add_argument("--calls", type=int, default=4, help="timed calls of each workload per process (default 4)")
    ap.add_argument("--worker", choices=("keep", "system"), help=argparse.SUPPRESS)  # one measured process
    args = ap.parse_args()
    for flag in ("pairs", "calls"):
        if getattr(args, flag) < 1:
            fail(f"--{flag} must be at least 1, got {getattr(args, flag)}; see python benchmarks/allocator.py --help")
    if args.worker:
        return worker(args.calls)
    runs = {"system": [], "keep": []}
    for i in range(args.pairs):
        for way in ("system", "keep"):
            env = {**os.environ, "DFU_BENCH_MALLOC": way}
            r = subprocess.run([sys.executable, __file__, "--worker", way, "--calls", str(args.calls)], env=env,
                               capture_output=True, text=True, cwd=ROOT)
            if r.returncode:
                fail(f"the {way} process failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
            result = json.loads(r.stdout.strip().splitlines()[-1])
            if way == "keep" and not result["allocator"].startswith("glibc"):
                fail(f"the allocator cannot be set here ({result['allocator']}); this measures glibc on Linux")
            runs[way].append(result)
            print(f"pair {i + 1}/{args.pairs}: {way} done ({result['allocator']})", file=sys.stderr, flush=True)
    every = runs["system"] + runs["keep"]
    for name in WORKLOADS:
        digests = {r[name]["sha256"] for r in every}
        if len(digests) != 1:
            fail(f"{name}: the results differ between processes ({len(digests)} different); the allocator changed "
                 "the numbers")
    print(f"{args.pairs} processes each way, alternating; {args.calls} timed calls per workload and process; "
          "one torch thread, CPU time; results bit-identical in every process")
    print(f"{'workload':<11} {'system s':>9} {'keep s':>8}  {'keep / system [range over pairs]':<33} "
          f"{'faults/call: system':>20} {'keep':>7}")
    for name in WORKLOADS:
        med = {w: [statistics.median(r[name]["cpu_s"]) for r in runs[w]] for w in runs}
        ratios = [k / s for s, k in zip(med["system"], med["keep"])]
        faults = {w: statistics.median(f for r in runs[w] for f in r[name]["faults"]) for w in runs}
        print(f"{name:<11} {statistics.median(med['system']):>9.3f} {statistics.median(med['keep']):>8.3f}  "
              f"{statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]{'':<14} "
              f"{faults['system']:>20.0f} {faults['keep']:>7.0f}")


if __name__ == "__main__":
    main()
