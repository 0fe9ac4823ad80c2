"""`bench` command line: a thin mirror of the Python API.

Every user-input problem surfaces as BenchError: printed as `error: <one line>`
(one line per problem) and exit status 2.

Each command imports the modules it runs inside its function: they pull in torch
and the networks (`import bench.run` takes 2-3 s on a 2-core CPU, `bench --help`
0.1 s as it is; python -X importtime), and `bench data prepare` must not load the
networks at all (tests/test_layering.py). What every command needs is imported
at the top.
"""
from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shlex
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
import yaml

from bench import __version__
from bench.allocator import keep_freed_memory
from bench.config import (MAX_BATCH, MAX_PATCH_SIZE, MAX_PATCHES_PER_IMAGE, MAX_PR_K, MAX_SAMPLER_STEPS,
                          MAX_SEED, load_suite)
from bench.errors import BenchError
from bench.images import parse_resolutions
from bench.io import PROJECT_ROOT, cache_dir, check_cache, check_output_dir, write_text
from bench.metrics import FID_MODES, METRICS, MetricOptions
from bench.scale import scale_suite

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="dfu-bench: train, sample across resolutions, and score diffusion models.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dfu-bench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """dfu-bench: train, sample across resolutions, and score diffusion models."""


TRUST_HELP = ("load the Inception file named by --inception (or the suite's metrics.inception_path) even if its "
              "sha256 is not a known Inception-v3 file: TorchScript runs code, so only for a file you made")
RUN_TRUST_HELP = ("load the suite's metrics.inception_path even if its sha256 is not a known Inception-v3 file: "
                  "TorchScript runs code, so only for a file you made")
MODE_HELP = "FID mode: " + " or ".join(f"{m.name} ({m.how})" for m in FID_MODES.values())
_DEFAULTS = MetricOptions()

# `bench run --nproc`: processes on this one node (torchrun --standalone), one per GPU or a share of
# the cores each; far above any node's GPUs, far below a fork bomb
MAX_NPROC = 1024

data_app = typer.Typer(no_args_is_help=True, help="Prepare real image datasets for suites (kind: prepared).")
app.add_typer(data_app, name="data")


@app.command()
def run(suite: Path = typer.Argument(..., help="suite YAML, e.g. suites/smoke.yaml"),
        results: Path = typer.Option(Path("results"), help="folder that receives <suite>/<run-id>/"),
        run_id: Optional[str] = typer.Option(None, help="name of the run; an existing one is resumed"),
        report_dir: Optional[Path] = typer.Option(None, help="also write the report to REPORT_DIR/<suite>/ "
                                                             "(default: reports/ beside the results folder)"),
        scale: str = typer.Option("full", help="full: the suite as written; tiny: cpu-tiny models, a few "
                                              "steps and 8 samples on the same resolution grid (a CPU dry run, "
                                              "suite name + '-tiny')"),
        nproc: int = typer.Option(1, min=1, max=MAX_NPROC, help="start N data-parallel processes with torchrun "
                                                                "(one per GPU on CUDA; gloo processes on CPU)"),
        trust_inception: bool = typer.Option(False, "--trust-inception", help=RUN_TRUST_HELP)):
    """Train each model of SUITE, sample it on the resolution grid, score FID, write a report."""
    from bench.api import run_suite

    cfg = scale_suite(load_suite(suite), scale)
    if report_dir is None:  # results/ -> reports/, as `bench report` does
        report_dir = results.parent / "reports"
    _check_run_outputs(run_id, results, report_dir)
    if trust_inception and cfg.metrics.inception_path:
        _trust(cfg.metrics.inception_path, "metrics.inception_path")
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        args = [str(suite), "--results", str(results), "--scale", scale]
        args += ["--report-dir", str(report_dir)] + (["--trust-inception"] if trust_inception else [])
        raise typer.Exit(launch_torchrun(nproc, args, run_id))
    run_suite(cfg, results=results, run_id=run_id, report_dir=report_dir)


def _check_run_outputs(run_id: Optional[str], results: Path, report_dir: Path) -> None:
    """Everything a run writes to, checked before it starts: the run id is one folder name, the
    results, report and cache folders are folders that can be written."""
    from bench.rundir import check_run_id

    if run_id is not None:
        check_run_id(run_id)
    check_output_dir(results, "--results")
    check_output_dir(report_dir, "--report-dir")
    check_cache()


def _trust(path: str, what: str) -> None:
    from bench.inception import check_explicit

    check_explicit(path, what, trust=True)


def launch_torchrun(nproc: int, run_args: list[str], run_id: Optional[str]) -> int:
    """`bench run ... --nproc N`: the same command under torchrun on this node.

    The run id is fixed here so that the one-line message after a failure can name
    the command that resumes it."""
    from bench.rundir import new_run_id

    run_id = run_id or new_run_id()
    env = dict(os.environ)
    # split the cores between processes instead of torchrun's default of one thread each
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "bench", "run", *run_args, "--run-id", run_id]
    code = subprocess.call(cmd, env=env)
    if code:
        again = shlex.join(["bench", "run", *run_args, "--run-id", run_id, "--nproc", str(nproc)])
        print(f"error: a process of the {nproc}-process run {run_id} failed (torchrun exit code {code}; "
              f"its log is above); resume with: {again}", file=sys.stderr)
    return code


@data_app.command("prepare")
def data_prepare(name: str = typer.Argument(..., help="dataset name, e.g. ffhq; a suite's dataset refers to it"),
                 source: Path = typer.Option(..., help="folder (searched recursively) or .zip of images"),
                 resolutions: str = typer.Option(..., help="comma list, e.g. 32,48,64"),
                 out: Optional[Path] = typer.Option(None, help="root folder (default: $DFU_BENCH_DATA or data/)"),
                 skip_bad: bool = typer.Option(False, "--skip-bad", help="leave out images that cannot be "
                                                                          "decoded (listed in the manifest)"),
                 shard_size: Optional[int] = typer.Option(None, min=1, help="images per archive (default: 4096)"),
                 filter: str = typer.Option("lanczos", help="resize filter: lanczos (PIL LANCZOS, as EDM's "
                                                            "dataset_tool) or bilinear-aa (antialiased bilinear = "
                                                            "torchvision Resize on PIL, as the authors' LSUN sets)")):
    """Centre-crop and resize every image of SOURCE once per resolution into PNG shards + manifest.json.

    Run it again with the same arguments to resume, or with more resolutions to add them.
    """
    from bench.datasets import DEFAULT_SHARD_SIZE
    from bench.io import data_root
    from bench.prepare import prepare

    check_output_dir(out if out is not None else data_root(), "--out" if out is not None else "$DFU_BENCH_DATA")
    prepare(name, source, parse_resolutions(resolutions, example="32,48,64"), out, skip_bad,
            shard_size or DEFAULT_SHARD_SIZE, filter)


@app.command()
def fid(a: Path = typer.Argument(..., help="folder, .zip, or .npz (with 'images' NHWC uint8 or 'features' Nx2048)"),
        b: Path = typer.Argument(..., help="folder, .zip, or .npz"),
        as_json: bool = typer.Option(False, "--json", help="print a JSON object (fid, n_a, n_b, mode)"),
        batch_size: int = typer.Option(32, min=1, max=MAX_BATCH),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
        inception: Optional[str] = typer.Option(None, help="path to inception-2015-12-05.pt"),
        trust_inception: bool = typer.Option(False, "--trust-inception", help=TRUST_HELP),
        mode: str = typer.Option("clean", help=MODE_HELP + "; .npz features are taken as made in it")):
    """FID between two image sets (last line of output): `bench metrics --metrics fid`, features cached."""
    from bench.api import compute_metrics
    from bench.dist import pick_device

    pick_device(device)
    _check_inception(inception, trust_inception)  # the cache is checked where it is used (bench.scoring)
    result = compute_metrics(a, b, ["fid"], device=device, batch_size=batch_size, inception=inception, mode=mode)
    typer.echo(json.dumps(result) if as_json else f"{result['fid']:.6f}")


@app.command()
def metrics(a: Path = typer.Argument(..., help="folder, .zip, or .npz (with 'images' NHWC uint8 or 'features' Nx2048)"),
            b: Path = typer.Argument(..., help="folder, .zip, or .npz"),
            which: str = typer.Option("fid,kid", "--metrics", help="comma list of " + ", ".join(METRICS)),
            as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
            batch_size: int = typer.Option(32, min=1, max=MAX_BATCH),
            # the bounds of a suite's metrics.* settings of the same names (bench/config.py)
            patch_size: int = typer.Option(_DEFAULTS.patch_size, min=8, max=MAX_PATCH_SIZE),
            patches_per_image: int = typer.Option(_DEFAULTS.patches_per_image, min=1, max=MAX_PATCHES_PER_IMAGE),
            kid_subset_seed: int = typer.Option(_DEFAULTS.kid_subset_seed, min=0, max=MAX_SEED),
            pr_k: int = typer.Option(_DEFAULTS.pr_k, min=1, max=MAX_PR_K, help="k of the k-NN manifolds for "
                                                                                "precision/recall (a suite's "
                                                                                "metrics.pr_k)"),
            device: str = typer.Option("auto"),
            inception: Optional[str] = typer.Option(None, help="path to inception-2015-12-05.pt"),
            trust_inception: bool = typer.Option(False, "--trust-inception", help=TRUST_HELP),
            mode: str = typer.Option("clean", help=MODE_HELP + "; .npz features are taken as made in it")):
    """Any metrics between two image sets (A = generated, B = reference); features are cached."""
    from bench.api import compute_metrics
    from bench.dist import pick_device

    pick_device(device)
    _check_inception(inception, trust_inception)  # the cache is checked where it is used (bench.scoring)

    names = [w.strip() for w in which.split(",") if w.strip()]
    options = MetricOptions(kid_subset_seed=kid_subset_seed, pr_k=pr_k, patch_size=patch_size,
                            patches_per_image=patches_per_image)
    result = compute_metrics(a, b, names, device=device, batch_size=batch_size, inception=inception,
                             options=options, mode=mode)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for k, v in result.items():
            typer.echo(f"{k}: {v}")


def _check_inception(inception: Optional[str], trust: bool) -> None:
    if inception is not None:
        from bench.inception import check_explicit

        check_explicit(inception, "--inception", trust=trust)


@app.command()
def sample(checkpoint: Path = typer.Argument(..., help="a dfu-bench checkpoint: the .safetensors of `bench "
                                                       "import-checkpoint`, or a model a run trained"),
           resolutions: str = typer.Option(..., help="comma list of square resolutions, e.g. 32,64,160"),
           seeds: str = typer.Option("0-63", help="seeds as EDM's generate.py takes them, e.g. 0-63,100; "
                                                  "image s comes from the latent seeded with s"),
           outdir: Path = typer.Option(..., help="writes OUTDIR/<res>/<seed>.png (or OUTDIR/<res>.npz)"),
           batch: int = typer.Option(32, min=1, max=MAX_BATCH, help="images per batch (output does not depend on the "
                                                      "process count; it may on the batch, by float round-off)"),
           steps: int = typer.Option(18, min=1, max=MAX_SAMPLER_STEPS,
                                     help="Heun steps (EDM's sampler; 2 * steps - 1 network calls)"),
           format: str = typer.Option("png", help="png: one file per seed and resolution; npz: one "
                                                 "OUTDIR/<res>.npz of images and seeds, as bench metrics reads"),
           device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
           precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast of the network)")):
    """Sample CHECKPOINT at each resolution for each seed (EDM generate.py's conventions).

    Resumable: finished seeds are skipped. Under torchrun the seeds' batches are split between
    the processes, which write the same files as one process."""
    from bench.api import sample as sample_images
    from bench.sample import parse_seeds

    if precision not in ("fp32", "bf16"):
        raise BenchError(f"--precision {precision!r} is not known; use fp32 or bf16")
    sample_images(checkpoint, parse_resolutions(resolutions, keep_order=True, example="32,64,160"),
                  parse_seeds(seeds), outdir, batch=batch, steps=steps, format=format, device=device,
                  precision=precision)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="results/<suite>/<run-id>"),
           report_dir: Path = typer.Option(Path("reports"), help="also write the report to REPORT_DIR/<suite>/ "
                                                                   "(relative to the current directory)")):
    """Rebuild a finished run's report (figures, tables, index.md) from its run directory alone."""
    from bench.report import check_shown_samples, write_report
    from bench.results import load_rows
    from bench.rundir import RunDir

    from bench.integrity import check_report_inputs

    run = RunDir(run_dir)
    if not run.metrics_csv.is_file():
        raise BenchError(f"{run.metrics_csv} not found; finish the run first (bench run SUITE --run-id {run.name})")
    cfg = check_report_inputs(run)  # every file the report reads, before anything is written
    check_output_dir(report_dir, "--report-dir")
    rows = load_rows(run)
    check_shown_samples(run, rows)
    out = write_report(run, cfg, rows, report_dir)
    typer.echo(str(out))


@app.command()
def regress(baseline: Path = typer.Option(Path("results/baselines/ci.json"), help="committed baseline JSON"),
            suite: Path = typer.Option(Path("suites/ci.yaml"), help="deterministic suite to score"),
            results: Path = typer.Option(Path("results"), help="where the suite's run directory goes"),
            update: bool = typer.Option(False, "--update", help="write what this run measured (FID/KID, this "
                                        "machine kind's throughput) into the baseline, keeping the rest"),
            skip_quality: bool = typer.Option(False, help="throughput only"),
            skip_throughput: bool = typer.Option(False, help="FID/KID only"),
            repeats: int = typer.Option(7, min=1, help="timings per kernel per round")):
    """Compare FID/KID and normalised throughput with a baseline; exit 1 on a regression."""
    from bench.regress import regress as run_regress

    code = run_regress(baseline, suite, results, update, skip_quality, skip_throughput, repeats)
    if code:
        raise typer.Exit(code)


CARD_MIN, CARD_MAX = 8, 2048  # model-card resolutions, px


def _card_resolution(r: int) -> int:
    if not CARD_MIN <= r <= CARD_MAX:
        raise BenchError(f"{r} is not a resolution; give pixels from {CARD_MIN} to {CARD_MAX}, e.g. 32,64,96")
    return r


@app.command("model-card")
def model_card_cmd(arch: str = typer.Argument(..., help="named architecture (bench list) or a YAML/JSON file of ArchConfig fields"),
                   resolutions: str = typer.Option("32,64,96,128,160", help="comma list of square resolutions"),
                   mode: Optional[str] = typer.Option(None, help="override: spatial (UNet), spectral, dual (DFU)"),
                   memory_resolution: Optional[int] = typer.Option(None, help="also measure one training step here"),
                   memory_batch: int = typer.Option(8, min=1),
                   device: str = typer.Option("auto"),
                   as_json: bool = typer.Option(False, "--json")):
    """Parameters (spectral/spatial), FLOPs per forward by resolution, optional training-step memory."""
    from bench.dist import pick_device
    from models.card import model_card, train_step_peak_memory

    res = parse_resolutions(resolutions, keep_order=True, check=_card_resolution)
    if memory_resolution is not None and not CARD_MIN <= memory_resolution <= CARD_MAX:
        raise BenchError(f"--memory-resolution {memory_resolution} is out of range; give pixels from {CARD_MIN} "
                         f"to {CARD_MAX}")
    if memory_batch > 4096:
        raise BenchError(f"--memory-batch {memory_batch} is out of range; give at most 4096 images")
    cfg = _arch_from_arg(arch)
    if mode is not None:  # an empty --mode is a mistake too, not "no override"
        try:
            cfg = cfg.replace(mode=mode)
        except ValueError:
            raise BenchError(f"--mode {mode!r} is not a mode; use spatial (UNet), spectral or dual (DFU)") from None
    memory = None
    if memory_resolution:
        memory = train_step_peak_memory(cfg, memory_resolution, memory_batch, pick_device(device))
    card = model_card(cfg, res, memory)
    card["arch"] = arch
    if as_json:
        typer.echo(json.dumps(card))
        return
    typer.echo(f"{arch} ({cfg.mode}): {card['params_total']:,} parameters "
               f"({card['params_spectral']:,} spectral, {card['params_spatial']:,} spatial)")
    for r, f in card["flops_per_forward"].items():
        typer.echo(f"  {r:>4} px: " + ("not runnable" if f is None else f"{f / 1e9:,.2f} GFLOPs per forward"))
    if memory:
        typer.echo(f"  training step at {memory['resolution']} px x {memory['batch']}: "
                   f"{memory['peak_bytes'] / 2**20:,.0f} MiB ({memory['method']})")


@app.command("import-checkpoint")
def import_checkpoint(state: Path = typer.Argument(..., help="EDM training snapshot (network-snapshot-*.pkl), or a "
                                                        "state_dict of the authors' EDMPrecond (.pt/.safetensors)"),
                      arch: Optional[str] = typer.Option(None, help="named architecture or a YAML/JSON file of ArchConfig "
                                                                   "fields; needed for a state dict, and for a .pkl it "
                                                                   "replaces the architecture read from the snapshot"),
                      out: Path = typer.Option(..., help="output .safetensors (a .json with the architecture goes beside it)")):
    """Convert the authors' (Dahoas/edm) or EDM's network into a dfu-bench checkpoint.

    A .pkl snapshot is read without running anything from it: its `ema` network's weights and
    constructor arguments are taken as data (the DFU authors' DualUNet, or EDM's SongUNet in the
    DDPM++ configuration)."""
    from bench import checkpoint

    cfg = _arch_from_arg(arch) if arch is not None else None
    check_output_dir(out, "--out", file=True)
    if out.suffix != ".safetensors":  # as every checkpoint is named: NAME.safetensors, its NAME.json beside it
        raise BenchError(f"--out {out} does not end in .safetensors; name the checkpoint NAME.safetensors "
                         "(its metadata goes beside it as NAME.json)")
    if state.is_dir():
        raise BenchError(f"{state} is a folder, not a file; give a network-snapshot-*.pkl or the file saved from "
                         "the authors' net.state_dict()")
    if not state.is_file():
        raise BenchError(f"{state} does not exist; give a network-snapshot-*.pkl or the file saved from the "
                         "authors' net.state_dict()")
    if state.suffix == ".pkl":
        net, cfg, meta = _import_snapshot(state, cfg)
    else:
        if cfg is None:
            raise BenchError(f"{state}: a state dict does not record its architecture; pass --arch "
                             f"(only .pkl snapshots carry one)")
        net, meta = _import_state_dict(state, cfg), {}
    bad = checkpoint.nonfinite(net.state_dict())
    if bad is not None:
        raise BenchError(f"{state}: tensor {bad} holds NaN or infinite values (a diverged or damaged network); "
                         "import a snapshot from before it diverged")
    checkpoint.save(out, net.state_dict(), {"arch_config": cfg.to_dict(), "source": str(state), **meta})
    typer.echo(str(out))


def _import_snapshot(path: Path, cfg):
    """(network, architecture, metadata) from an EDM snapshot, or BenchError naming why not."""
    from models.snapshot import SnapshotError, load_snapshot

    try:
        net, cfg, info = load_snapshot(path, cfg)
    except SnapshotError as exc:
        raise BenchError(f"{path}: {exc}") from None
    except OSError as exc:
        raise BenchError(f"{path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    return net, cfg, {"snapshot": info}


def _import_state_dict(state: Path, cfg):
    """The authors' EDMPrecond from its saved state dict (.pt or .safetensors)."""
    import torch

    from models.convert import from_authors_state_dict

    try:
        if state.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(state))
        else:  # weights_only: a restricted unpickler that refuses anything but tensors and containers
            sd = torch.load(str(state), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BenchError(f"{state} is not a readable state dict ({type(exc).__name__}); save net.state_dict() "
                         "with torch.save, or give an EDM network-snapshot-*.pkl") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BenchError(f"{state} does not hold a flat state dict of tensors; save net.state_dict()")
    try:
        return from_authors_state_dict(sd, cfg)
    except ValueError as exc:
        raise BenchError(f"{state}: {exc}; check --arch") from None


def _arch_from_arg(arch: str):
    """A named architecture, or a YAML/JSON file of ArchConfig fields."""
    from models.networks import ARCHS, ArchConfig, get_arch

    if arch in ARCHS:
        return get_arch(arch)
    if Path(arch).is_file():
        try:
            return ArchConfig.from_dict(yaml.safe_load(Path(arch).read_text()))
        except (ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
            raise BenchError(f"{arch}: not a valid architecture file ({str(exc).splitlines()[0]})") from None
    raise BenchError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)} or a YAML/JSON file")


@app.command("list")
def list_registered():
    """Registered model adapters, datasets and named architectures."""
    from bench.datasets import DATASETS
    from models.adapters import ADAPTERS
    from models.networks import ARCHS

    typer.echo("adapters: " + ", ".join(sorted(ADAPTERS)))
    typer.echo("datasets: " + ", ".join(sorted(DATASETS)))
    typer.echo("archs:    " + ", ".join(ARCHS))


def _usage_line(exc: typer.TyperException) -> str:
    """One line for a usage error (unknown command or option, bad value, missing argument)."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "bench"
    message = " ".join(exc.format_message().split()).rstrip(".")
    if not message:  # no_args_is_help: the help is printed above, the command is missing
        message = f"`{where}` needs a command (listed above)"
    return f"{message}; see `{where} --help`"


# how a full disk (or an exhausted quota) reads in the errors of the writers a run uses: OSError from
# open()/numpy/PIL/pandas; safetensors' own error, whose text carries the OS's message
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


def _no_space(exc: BaseException) -> Optional[str]:
    """When `exc` (or an exception it was raised from or during) is a full disk: the file being
    written, or "" if the error does not name it; otherwise None."""
    seen: set[int] = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS:
            return str(e.filename or "")
        if any(text in str(e) for text in _NO_SPACE_TEXTS):
            return ""
        e = e.__cause__ or e.__context__
    return None


def _crash_report(exc: BaseException) -> Path:
    """Save the traceback of an unexpected exception; returns where it went."""
    path = cache_dir() / "logs" / f"crash-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    write_text(path, "".join(traceback.format_exception(exc)))
    return path


def _torchrun_env_problem() -> Optional[str]:
    """Why torchrun's process variables in the environment cannot be used (None: they can).

    Every command reads them (which rank speaks, shards, devices), so a stray value is refused
    before any command runs rather than failing deep inside one."""
    for name, least in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)):
        value = os.environ.get(name)
        if value is None:
            continue
        try:
            ok = int(value) >= least
        except ValueError:
            ok = False
        if not ok:
            return (f"${name} is {value!r}, not a whole number of at least {least}; unset it "
                    "(torchrun sets it for each process it starts)")
    return None


def main(argv: Optional[list[str]] = None) -> int:
    """The `bench` entry point: every failure ends in one `error:` line.

    User errors (BenchError) and usage errors exit 2; an unexpected exception (a bug)
    exits 1 after saving its traceback to a file named in the line.
    """
    problem = _torchrun_env_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    say = int(os.environ.get("RANK", 0)) == 0  # every rank finds the same problem: say it once
    try:
        keep_freed_memory()  # this process only (bench.allocator)
        rv = app(args=argv, standalone_mode=False)  # returns typer.Exit's code, if any
    except BenchError as exc:
        if say:
            for line in str(exc).splitlines():
                print(f"error: {line}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):  # raised outside typer's command call
        rv = 130
    except typer.TyperException as exc:  # typer's (vendored click's) usage errors
        if say:
            print(f"error: {_usage_line(exc)}", file=sys.stderr)
        return 2 if getattr(exc, "exit_code", 2) == 2 else exc.exit_code
    except Exception as exc:  # a bug: one line, the traceback in a file
        full = _no_space(exc)
        if full is not None:  # not a bug: every write is atomic, so nothing half-written is left
            if say:
                print(f"error: no space left on the device{f' (writing {full})' if full else ''}; free some space "
                      "and run the same command again: finished work is kept (bench run: with the same --run-id)",
                      file=sys.stderr)
            return 2
        if say:
            try:
                where = f"full traceback in {_crash_report(exc)}"
            except Exception as saving:  # the cache itself is unusable: still one line
                why = (saving.strerror if isinstance(saving, OSError) else None) or type(saving).__name__
                where = (f"the traceback could not be saved in {cache_dir() / 'logs'}: {why}; "
                         "set $DFU_BENCH_CACHE to a folder you can write to")
            first = str(exc).splitlines()[0] if str(exc) else ""
            print(f"error: unexpected {type(exc).__name__}: {first[:200]} ({where}); please report it",
                  file=sys.stderr)
        return 1
    if rv == 130:  # typer turns Ctrl-C inside a command into a silent exit code 130
        print("interrupted; run the same command again to resume from the last checkpoint or finished shard "
              "(bench run: with the same --run-id)", file=sys.stderr)
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
