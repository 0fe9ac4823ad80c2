"""The paper suites: their settings, a fast failure without data, and `bench run --scale tiny`."""

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from bench.config import ModelConfig, load_suite, parse_suite
from bench.scale import scale_suite
from bench.datasets import ToyFaces
from bench.errors import BenchError
from bench.io import PROJECT_ROOT
from bench.prepare import prepare
from bench.plan import data_resolutions

FFHQ = PROJECT_ROOT / "suites" / "ffhq_zero_shot.yaml"
LSUN = PROJECT_ROOT / "suites" / "lsun_church_zero_shot.yaml"
BATCH = 256
PAPER = {  # dataset name, grid, data resolutions, LR, Mimg per model (from the paper)
    FFHQ: ("ffhq", [32, 64, 96, 128, 160, 192], [32, 48, 64, 80, 96, 128, 160, 192], 5e-4,
           {"unet-single96": 20, "unet-multires": 20, "dfu": 108}),
    LSUN: ("lsun_church", [32, 64, 96, 128, 160, 196], [32, 48, 64, 80, 96, 128, 160, 196], 1e-3,
           {"unet-single96": 150, "unet-multires": 150, "dfu": 104}),
}
EDM_MODELS = ["unet-single96", "unet-multires", "dfu"]

@pytest.mark.parametrize("path", [FFHQ, LSUN], ids=["ffhq", "lsun"])
def test_paper_settings(path, tmp_path):
    name, grid, needed, lr, mimg = PAPER[path]
    cfg = load_suite(path)
    assert (cfg.dataset.kind, cfg.dataset.name) == ("prepared", name) and cfg.dataset.source
    models = {m.name: m for m in cfg.models}
    assert set(EDM_MODELS + ["bilinear-data-96"]) <= set(models)
    for n in EDM_MODELS:
        m, t = models[n], models[n].train
        assert m.arch == "paper-small" and m.adapter == ("dfu" if n == "dfu" else "unet")
        assert t.kimg == mimg[n] * 1000 and t.lr_warmup_kimg == 10000  # as the paper states them
        assert abs(t.total_steps * BATCH - mimg[n] * 1e6) < BATCH, f"{n}: {t.total_steps} steps != {mimg[n]} Mimg / 256"
        assert t.warmup_nimg == 10e6
        assert (t.batch_size, t.lr, t.ema_halflife_kimg, t.ema_rampup, t.dropout) == (BATCH, lr, 500, 0.05, 0.13)
        assert t.augment == 0.12  # the authors' EDM augmentation pipe
        assert 96 in t.micro_batch
    assert models["unet-single96"].train.resolutions == [96]
    for n in EDM_MODELS:  # the published runs: round-robin, 96 -> 80 -> 64 -> 48 -> 32
        assert models[n].train.schedule == "round-robin" and models[n].train.weights is None
    for n in ("unet-multires", "dfu"):
        assert models[n].train.resolutions == [96, 80, 64, 48, 32]
    bilinear = models["bilinear-data-96"]
    assert (bilinear.adapter, bilinear.source, bilinear.base_resolution) == ("bilinear", "data", 96)
    s = cfg.sample
    assert (s.resolutions, s.n, s.seeds, s.steps) == (grid, 50000, [0], 18)
    assert data_resolutions(cfg) == needed
    # the prepare command in the suite's header asks for exactly what the suite reads
    header = re.search(rf"bench data prepare {name} --source \S+ --resolutions (\S+)", path.read_text())
    assert header and [int(r) for r in header.group(1).split(",")] == needed


@pytest.mark.parametrize("path, resize", [(FFHQ, "lanczos"), (LSUN, "bilinear-aa")], ids=["ffhq", "lsun"])
def test_paper_fid_protocol_and_data_filter(path, resize):
    """FID as the authors computed it (EDM fid.py: legacy mode, every real image as reference) beside
    clean-fid's, on data resized as the authors resized it (FFHQ: EDM's dataset_tool, LANCZOS;
    LSUN-Church: their datasets/resize.py, torchvision Resize = antialiased bilinear)."""
    cfg = load_suite(path)
    assert cfg.metrics.fid_modes == ["clean", "legacy"] and cfg.metrics.reference_n == "all"
    assert cfg.dataset.filter == resize
    text = path.read_text()
    for key in ("reference_n: all", f"filter: {resize}"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(key))
        assert "[code]" in line, line
    # the prepare command in the header makes data this suite accepts
    header = re.search(rf"bench data prepare {cfg.dataset.name} --source \S+ --resolutions \S+(.*)", text)
    assert header.group(1).strip() == ("" if resize == "lanczos" else f"--filter {resize}")
    tiny = scale_suite(cfg, "tiny")  # a dry run keeps both modes, and streams as many references as samples
    assert tiny.metrics.fid_modes == ["clean", "legacy"] and tiny.metrics.reference_n == tiny.sample.n == 8


def test_ffhq_finetune_is_the_evaluated_snapshots_transfer_start():
    cfg = load_suite(FFHQ)
    models = {m.name: m for m in cfg.models}
    ft = models["dfu+finetune"]
    assert (ft.adapter, ft.arch) == ("dfu", "paper-small")
    f = ft.finetune
    assert (f.base, f.strategy, f.target_resolution, f.target_weight, f.upsample_from) == ("dfu", "mixed", 160, 0.3, 96)
    t = ft.train
    assert (t.kimg, t.batch_size, t.lr, t.lr_warmup_kimg) == (1254, BATCH, 1e-4, 10000)  # run 00123 @ 1254 kimg
    assert (t.ema_halflife_kimg, t.ema_rampup, t.augment, t.dropout) == (500, None, 0.12, 0.13)
    # the first tick (1 step + 25 kimg) trains at 96 px and below only
    assert (t.data_warmup_kimg, t.data_warmup_max_resolution) == (25.256, 96)
    assert t.resolutions == []  # the fine-tune's sets come from its strategy
    assert list(models).index("dfu") < list(models).index("dfu+finetune")
    text = FFHQ.read_text()
    for line in ("kimg: 1254", "lr: 1.0e-4", "augment: 0.12", "ema_rampup: null"):
        tagged = next(ln for ln in text.splitlines() if line in ln and "finetune" not in ln)
        assert re.search(r"\[(paper|code|ours)\]", tagged), tagged


@pytest.mark.parametrize("path", [FFHQ, LSUN], ids=["ffhq", "lsun"])
def test_run_without_data_stops_at_once_with_the_prepare_command(path, tmp_path):
    name, _, needed, _, _ = PAPER[path]
    suite = path
    env = {**os.environ, "DFU_BENCH_DATA": str(tmp_path / "data")}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench", "run", str(suite), "--results", str(tmp_path / "results")],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - start
    print(f"bench run {path.name} without data: exit {out.returncode} after {seconds:.2f} s")
    assert out.returncode == 2, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert f"run: bench data prepare {name} --source /path/to/" in errors[0]
    suffix = " --filter bilinear-aa" if path == LSUN else ""  # the suite's filter, in the command that makes it
    assert errors[0].endswith(f"--resolutions {','.join(map(str, needed))}{suffix}")
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()
    assert seconds < 10  # measured 2.1-4.1 s on a loaded 2-core box: the data check precedes model building


# --- --scale tiny -----------------------------------------------------------


def test_scale_tiny_shrinks_everything_but_the_grid(tmp_path):
    cfg = load_suite(FFHQ)
    assert scale_suite(cfg, "full") is cfg
    tiny = scale_suite(cfg, "tiny")
    assert tiny.name == "ffhq_zero_shot-tiny" and scale_suite(tiny, "tiny").name == tiny.name
    assert tiny.sample.resolutions == cfg.sample.resolutions and data_resolutions(tiny) == data_resolutions(cfg)
    assert (tiny.sample.n, tiny.sample.steps, tiny.sample.seeds) == (8, 3, [0])
    assert tiny.sample.batch_size <= 8 and tiny.metrics.batch_size <= 8
    for full, small in zip(cfg.models, tiny.models):
        assert (full.name, full.adapter) == (small.name, small.adapter)
        if full.train is None:
            assert small == full  # bilinear: nothing to shrink
            continue
        t = small.train
        assert small.arch == "cpu-tiny"
        assert (t.steps, t.batch_size, t.checkpoint_every, t.micro_batch) == (6, 4, 3, {})
        assert t.lr_warmup_steps == (2 if full.train.warmup_nimg else 0)
        assert (t.resolutions, t.weights, t.schedule, t.dropout) == (
            full.train.resolutions, full.train.weights, full.train.schedule, full.train.dropout)


def test_scale_tiny_drops_what_cpu_tiny_cannot_take():
    cfg = parse_suite({
        "name": "x", "seed": 3, "dataset": {"kind": "toyfaces", "size": 64},
        "models": [{"name": "m", "adapter": "dfu", "arch": "paper-large",
                    "arch_overrides": {"model_channels": 256, "channel_mult": [1, 2], "dropout": 0.2},
                    "train": {"resolutions": [32, 64], "steps": 10 ** 6, "batch_size": 512,
                              "data_warmup_kimg": 100, "data_warmup_max_resolution": 32,
                              "micro_batch": {64: 8}, "checkpoint_every": 5000}}],
        "sample": {"resolutions": [32, 64], "n": 1000, "seeds": [4, 5, 6], "steps": 40, "batch_size": 100}})
    tiny = scale_suite(cfg, "tiny")
    m = tiny.models[0]
    assert m.arch == "cpu-tiny" and m.arch_overrides == {"dropout": 0.2}
    assert (m.train.data_warmup_kimg, m.train.data_warmup_max_resolution, m.train.micro_batch) == (0.0, None, {})
    assert (m.train.lr_warmup_steps, tiny.sample.seeds, tiny.seed) == (0, [4], 3)
    with pytest.raises(BenchError, match=r"--scale 'huge' is not known; use one of: full, tiny$"):
        scale_suite(cfg, "huge")


def test_run_rejects_an_unknown_scale(run_cli, tmp_path):
    code, _, err = run_cli("run", str(LSUN), "--scale", "huge", "--results", str(tmp_path))
    assert code == 2 and "error: --scale 'huge' is not known" in err
    assert not any(tmp_path.iterdir())


# --- end to end -------------------------------------------------------------


def _faces_folder(folder: Path) -> Path:
    """30 small non-square and square PNGs: enough for a tiny run's training draws and 8 references."""
    folder.mkdir()
    for i, a in enumerate(ToyFaces(size=100, seed=1).images(range(30), 64)):
        Image.fromarray(a[:, 4:60] if i % 3 == 0 else a).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.slow  # ~3 minutes on a loaded 2-core box: sampling to 192 px and Inception dominate
def test_ffhq_suite_at_tiny_scale_runs_end_to_end(tmp_path, run_cli, monkeypatch, one_thread):
    monkeypatch.setenv("DFU_BENCH_DATA", str(tmp_path / "data"))
    cfg = load_suite(FFHQ)
    prepare("ffhq", _faces_folder(tmp_path / "faces"), data_resolutions(cfg))
    start = time.perf_counter()
    code, _, err = run_cli("run", str(FFHQ), "--scale", "tiny", "--results", str(tmp_path / "results"),
                           "--run-id", "e2e")
    print(f"bench run {FFHQ.name} --scale tiny: {time.perf_counter() - start:.1f} s")
    assert code == 0, err
    run_dir = tmp_path / "results" / "ffhq_zero_shot-tiny" / "e2e"
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    got = sorted((r["model"], int(r["sample_resolution"]), r["fid_mode"]) for r in rows)
    assert got == sorted((m.name, r, mode) for m in cfg.models for r in cfg.sample.resolutions
                         for mode in ("clean", "legacy"))
    assert all(int(r["n"]) == 8 and int(r["n_ref"]) == 8 and float(r["fid"]) >= 0 for r in rows)
    # the paper's FFHQ number sits beside the fine-tuned DFU's legacy FID, not its clean one
    table = (run_dir / "table.md").read_text()
    clean, legacy = (table[table.index(f"## FID, {mode} mode"):].split("\n## ")[0] for mode in ("clean", "legacy"))
    assert "| paper: dfu+mixed-finetune |" in legacy and "11.30" in legacy
    assert "paper:" not in clean and "leaves them out" in clean
    for name in ("index.md", "fig2.png", "fig5.png", "samples.png", "table.tex", "table.csv"):
        assert (run_dir / name).is_file(), name
