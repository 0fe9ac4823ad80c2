"""metrics.csv: its columns, how a row is written, and how the file is read back.

One row per (model, sampled resolution, seed set, FID mode). The metric columns
come from the metric table (bench.metrics.COLUMNS), in its order; a file holds
the columns some row has. `train_resolutions` is written as "16/24/32"
(`format_resolutions`).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from bench.io import atomic_path
from bench.metrics import COLUMNS as METRIC_COLUMNS

COLUMNS = ("model", "adapter", "train_resolutions", "sample_resolution", "seed_set", "n", "n_ref",
           *METRIC_COLUMNS, "fid_mode", "seconds", "feature_seconds")
DECIMALS = 6  # floats are rounded to this many places as a row is made, so reports see the file's numbers


def format_resolutions(resolutions: Sequence[int]) -> str:
    """(16, 24, 32) -> '16/24/32', as metrics.csv spells a model's training resolutions."""
    return "/".join(str(int(r)) for r in resolutions)


def row(**values) -> dict:
    """A metrics.csv row: floats rounded to DECIMALS places, the rest as given."""
    return {k: (round(v, DECIMALS) if isinstance(v, float) else v) for k, v in values.items()}


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Write rows (dicts keyed by COLUMNS) as metrics.csv, atomically, with the columns some row has."""
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
