"""The public Python API: what the `bench` commands do, as functions (the commands call these).

    from bench import api

    api.compute_metrics(a, b, ["fid", "kid"])   # two image sets: folders, zips or .npz -> {column: value}
    api.load_metrics(run_dir)                   # a run's metrics.csv as a pandas DataFrame
    model = api.load_model("dfu.safetensors")   # a checkpoint (import-checkpoint's output or a run's model)
    model.sample(range(8), resolution=48)       # NHWC uint8, image j from the latent seeded with seeds[j]
    api.sample("dfu.safetensors", [32, 64], range(64), "out/")   # `bench sample`
    api.run_suite("suites/smoke.yaml")          # `bench run`; returns the run directory (bench.rundir.RunDir)

Problems with the inputs raise bench.errors.BenchError with a one-line message,
the line the command prints after `error:`. Devices are chosen as the commands
choose them ("auto": CUDA if there is one, else the CPU).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from bench.config import SuiteConfig, load_suite
from bench.dist import pick_device
from bench.errors import BenchError
from bench.metrics import MetricOptions
from bench.pretrained import load_model as _load_adapter
from bench.results import frame, load_rows
from bench.rundir import RunDir
from bench import run as _run  # the module: run_suite looked up at call time (tests patch it)
from bench.sample import SampleSummary, parse_seeds, sample_checkpoint
from bench.scale import scale_suite
from bench.scoring import compare_sets

__all__ = ["compute_metrics", "load_metrics", "load_model", "Model", "sample", "run_suite", "BenchError"]

Seeds = Union[int, str, Iterable[int]]


def _seeds(seeds: Seeds) -> list[int]:
    """An int n -> seeds 0..n-1; a string in `bench sample --seeds` syntax ('0-63,100'); else the seeds."""
    if isinstance(seeds, str):
        return parse_seeds(seeds)
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        return list(range(int(seeds)))
    return [int(s) for s in seeds]


def compute_metrics(a: str | Path, b: str | Path, metrics: Sequence[str] = ("fid", "kid"), *, mode: str = "clean",
                    device: str = "auto", batch_size: int = 32, inception: Optional[str] = None,
                    options: MetricOptions = MetricOptions()) -> dict:
    """Metrics between a generated set `a` and a reference set `b` (`bench metrics`; `bench fid` with
    metrics=["fid"]): {"n_a", "n_b", "mode", <metric columns>}. Folders, zips, or .npz files with
    'images' (NHWC uint8) or 'features' (N x 2048); Inception features are cached by content."""
    return compare_sets(a, b, list(metrics), device=device, batch_size=batch_size, inception_path=inception,
                        options=options, mode=mode)


def load_metrics(run: str | Path | RunDir) -> pd.DataFrame:
    """A run's metrics.csv (give the run directory) as a DataFrame: one row per model, sampled
    resolution, seed set and FID mode; older files' missing columns filled in."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    if not run.metrics_csv.is_file():
        raise BenchError(f"{run.metrics_csv} not found; give a finished run's directory")
    return frame(load_rows(run))


class Model:
    """A checkpoint's network, ready to sample at any resolution it can run at."""

    def __init__(self, adapter):
        self.adapter = adapter

    @property
    def denoiser(self) -> torch.nn.Module:
        """The preconditioned denoiser: forward(x, sigma) = D(x; sigma)."""
        return self.adapter.net

    @property
    def train_resolutions(self) -> tuple[int, ...]:
        """The resolutions its checkpoint records it was trained on (empty if it records none)."""
        return tuple(self.adapter.train_resolutions)

    def resolution_problem(self, resolution: int) -> Optional[str]:
        """None if the network runs at resolution x resolution, else why not."""
        return self.adapter.resolution_problem(resolution)

    def sample(self, seeds: Seeds, resolution: int, batch: int = 32) -> np.ndarray:
        """NHWC uint8 images, image j from the latent seeded with seeds[j] (the same images
        `bench sample` writes); `seeds` an int n (0..n-1), '0-63,100', or any ints."""
        problem = self.resolution_problem(resolution)
        if problem:
            raise BenchError(f"resolution {resolution}: {problem}")
        return self.adapter.sample_seeds(_seeds(seeds), resolution, batch_size=batch)


def load_model(checkpoint: str | Path, device: str = "auto", steps: int = 18, precision: str = "fp32") -> Model:
    """A dfu-bench checkpoint (`bench import-checkpoint`'s output, or a model a run trained)."""
    return Model(_load_adapter(checkpoint, pick_device(device), sample_steps=steps, precision=precision))


def sample(checkpoint: str | Path, resolutions: Sequence[int], seeds: Seeds, outdir: str | Path, *,
           batch: int = 32, steps: int = 18, format: str = "png", device: str = "auto",
           precision: str = "fp32") -> SampleSummary:
    """`bench sample`: each seed's image at each resolution under outdir (bench.sample has the layout);
    resumable, sharded by seed under torchrun."""
    return sample_checkpoint(checkpoint, resolutions, _seeds(seeds), outdir, batch=batch, steps=steps,
                             format=format, device=device, precision=precision)


def run_suite(suite: str | Path | SuiteConfig, results: str | Path = "results",
              run_id: Optional[str] = None, scale: str = "full", report_dir: Optional[str | Path] = None) -> RunDir:
    """`bench run`: train, sample, score and report a suite (a YAML file or a SuiteConfig) into
    results/<suite>/<run-id>/ (results relative to the current directory, as the command's); returns
    the run directory. The same run_id again resumes the run."""
    cfg = suite if isinstance(suite, SuiteConfig) else load_suite(suite)
    return _run.run_suite(scale_suite(cfg, scale), results=Path(results), run_id=run_id,
                      report_dir=Path(report_dir) if report_dir is not None else None)
