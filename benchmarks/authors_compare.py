"""dfu-bench's DFU against the authors' own code, side by side in one process (issue #16).

Not a test and not part of the package: it imports the authors' network from a checkout
of Dahoas/edm outside this repository (CC BY-NC-SA; nothing of it is copied here) and
must run in an interpreter that has their dependencies (benchmarks/README.md lists them).
``make bench`` runs it when both are given:

    make bench AUTHORS_EDM=/path/to/Dahoas-edm AUTHORS_PYTHON=/path/to/their-venv/bin/python

or alone, from the repository root:

    /path/to/their-venv/bin/python benchmarks/authors_compare.py /path/to/Dahoas-edm

What it measures: EDMPrecond(DualUNet), forward + backward of ``D(x; sigma)^2.mean()``,
batch 8, training mode, at 32 and 64 px, for

* ``fixture`` -- the authors' tiny DualUNet config with the weights of
  tests/data/authors_dualunet_fixture.pt (made by their code) loaded into both networks;
* ``cpu-small`` -- dfu-bench's 32-channel config, seed-0 weights copied into theirs.

Before timing, outputs must agree within 1e-5 (their component-wise spectral product is
ours). Rounds alternate theirs / ours, one torch thread, CPU time (process_time), as
benchmarks/test_spectral.py does; the ratio is ours / theirs of the medians.
Writes .benchmarks/authors.json (atomically) and prints one line per configuration.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _usage(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def authors_network(arch: dict):
    """The authors' EDMPrecond(DualUNet) for one of our ArchConfig dicts (their constructor's names)."""
    from training.networks import EDMPrecond as TheirPrecond  # the checkout given on the command line
    modes1 = [m if m is not None else 0 for m in arch["modes1"]]
    modes2 = [m if m is not None else 0 for m in arch["modes2"]]
    mode = {"dual": "dual", "spatial": "def", "spectral": "fourier"}[arch.get("mode", "dual")]
    return TheirPrecond(img_channels=3, model_type="DualUNet", augment_dim=arch.get("augment_dim", 0),
                        model_channels=arch["model_channels"], channel_mult=list(arch["channel_mult"]),
                        num_blocks=arch["num_blocks"], attn_levels=list(arch["attn_levels"]),
                        modes1_list=modes1, modes2_list=modes2, dual_block_thresh=arch["dual_block_thresh"],
                        mode=mode, dropout=arch.get("dropout", 0.0))


def pair(name: str):
    """(ours, theirs) with the same weights, in training mode."""
    from _dfu import build  # benchmarks/_dfu.py: the network test_spectral.py times
    ours = build(name)
    with contextlib.redirect_stdout(io.StringIO()):  # their layers print a line each as they are built
        theirs = authors_network(ours.model.arch.to_dict())
    theirs.load_state_dict({k: v.clone() for k, v in ours.state_dict().items()})
    return ours, theirs.train()


def measure(name: str, res: int) -> dict:
    from _dfu import inputs, rounds as rounds_at, run_step as step
    ours, theirs = pair(name)
    x, sigma = inputs(res)
    diff = (step(ours, x, sigma).detach() - step(theirs, x, sigma).detach()).abs().max().item()
    if not diff <= 1e-5:
        raise SystemExit(f"error: {name} at {res} px: outputs differ by {diff:.3g} (> 1e-5); "
                         "is the checkout Dahoas/edm with the component-wise product?")
    times: dict = {"theirs": [], "ours": []}
    rounds = rounds_at(name, res)
    for r in range(rounds + 1):  # round 0 is a warm-up
        for who, net in (("theirs", theirs), ("ours", ours)):
            t = time.process_time()
            step(net, x, sigma)
            if r:
                times[who].append(time.process_time() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"arch": name, "resolution": res, "batch": len(x), "rounds": rounds, "max_abs_output_diff": diff,
            "ours_cpu_seconds": times["ours"], "theirs_cpu_seconds": times["theirs"],
            "ours_over_theirs_cpu_median": med["ours"] / med["theirs"],
            "ours_over_theirs_cpu_min": min(times["ours"]) / min(times["theirs"])}


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        _usage("usage: authors_compare.py PATH_TO_DAHOAS_EDM_CHECKOUT (see the docstring)")
    checkout = Path(argv[0]).expanduser().resolve()
    if not (checkout / "training" / "networks.py").is_file():
        _usage(f"{checkout} is not a checkout of Dahoas/edm (no training/networks.py); "
               "clone it and pass its path")
    sys.path[:0] = [str(ROOT), str(checkout)]
    sys.dont_write_bytecode = True  # leave the user's checkout as it was (no __pycache__)
    try:
        import torch
        import training.networks  # noqa: F401  (their module needs their dependencies)
    except ImportError as e:
        _usage(f"the authors' code does not import in {sys.executable} ({e}); run this script with "
               "a Python that has their dependencies (the pip line in benchmarks/README.md)")
    if not hasattr(training.networks, "EDMPrecond"):  # some other project's training/networks.py
        _usage(f"{checkout} is not a checkout of Dahoas/edm (its training/networks.py has no EDMPrecond); "
               "clone it and pass its path")
    import _dfu  # ours (torch and models/ only), from the repository just put on sys.path
    from bench.allocator import keep_freed_memory  # the process state `bench` and make bench run in
    from bench.errors import BenchError
    try:
        allocator = keep_freed_memory()
    except BenchError as e:
        _usage(str(e))

    torch.set_num_threads(int(os.environ.get("DFU_BENCH_THREADS", "1")))
    rows = []
    print(f"authors' code ({checkout}) vs dfu-bench: DFU forward+backward, batch {_dfu.BATCH}, "
          f"{torch.get_num_threads()} thread(s), CPU-time medians over interleaved rounds; allocator: {allocator}")
    for name in _dfu.ARCHS:
        for res in _dfu.RESOLUTIONS:
            row = measure(name, res)
            rows.append(row)
            print(f"  {name:10s} {res:3d} px   theirs {statistics.median(row['theirs_cpu_seconds']):7.4f} s"
                  f"   ours {statistics.median(row['ours_cpu_seconds']):7.4f} s"
                  f"   ours / theirs {row['ours_over_theirs_cpu_median']:.2f} (min {row['ours_over_theirs_cpu_min']:.2f})"
                  f"   max |diff| {row['max_abs_output_diff']:.1e}", flush=True)
    from bench.io import write_text  # stdlib only: it imports under the authors' interpreter too

    write_text(ROOT / ".benchmarks" / "authors.json",
               json.dumps({"checkout": str(checkout), "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
