"""metrics.csv: its columns, how a row is written, and how the file is read and aggregated.

One row per (model, sampled resolution, seed set, FID mode). The metric columns
come from the metric table (bench.metrics.COLUMNS), in its order; a file holds
the columns some row has. `train_resolutions` is written as "16/24/32"
(`format_resolutions`) and parsed back by `parse_resolutions`, here only. `role`
(models.adapters.ROLES: baseline, spatial, spectral) says how reports treat a
model; files written before it existed get it from `role_of_old_adapter`.

The read side is what the report's figures, tables and findings share: `frame`
turns rows into a DataFrame, `aggregate` takes mean and std over seed sets, and
the helpers pick FID modes, lead metrics and the training band.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from bench.io import atomic_path
from bench.metrics import COLUMNS as METRIC_COLUMNS
from bench.rundir import RunDir

COLUMNS = ("model", "adapter", "train_resolutions", "sample_resolution", "seed_set", "n", "n_ref",
           *METRIC_COLUMNS, "fid_mode", "seconds", "feature_seconds", "role")
DECIMALS = 6  # floats are rounded to this many places as a row is made, so reports see the file's numbers
KEYS = ["model", "train_resolutions", "sample_resolution"]
BIASED_FID_N = 5000  # below this many images per set, FID's bias leads reports to KID


# ------------------------------------------------------------------------- write


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


# -------------------------------------------------------------------------- read


def parse_resolutions(value) -> tuple[int, ...]:
    """'16/24/32' -> (16, 24, 32); a single resolution read as a number, '', None or NaN -> as expected.

    Also reads the paper's '32-96' (a range's ends)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "nan":
        return ()
    if isinstance(value, (int, float)):
        return (int(value),)
    return tuple(int(r) for r in str(value).replace("-", "/").split("/") if r.strip())


def load_rows(run: RunDir) -> list[dict]:
    """The rows of a run's metrics.csv, as `bench report` and `bench regress` read them."""
    return pd.read_csv(run.metrics_csv).to_dict("records")


def role_of_old_adapter(adapter: str) -> Optional[str]:
    """The role of a model in a metrics.csv written before the role column existed.

    Such files hold only the three adapters there were then, and this function
    exists only to read them: it is the one place outside models/ and the suites
    that knows adapter names. Newer files carry the role each adapter declares."""
    return {"bilinear": "baseline", "unet": "spatial", "dfu": "spectral"}.get(adapter)


def with_roles(df: pd.DataFrame) -> pd.DataFrame:
    """df with a role for every row (filled in for rows of old files)."""
    if "role" in df.columns and df["role"].notna().all():
        return df
    old = df["adapter"].map(role_of_old_adapter)
    return df.assign(role=df["role"].fillna(old) if "role" in df.columns else old)


def _spelled(value) -> str:
    """One spelling of train_resolutions: read_csv turns a column of single resolutions into numbers."""
    return format_resolutions(parse_resolutions(value)) if not isinstance(value, str) else value


def frame(rows: list[dict]) -> pd.DataFrame:
    """metrics.csv rows as a DataFrame, with the defaults of older files filled in."""
    df = pd.DataFrame(rows)
    if "seed_set" not in df.columns:
        df["seed_set"] = 0
    df["train_resolutions"] = df["train_resolutions"].map(_spelled)
    if "fid_mode" not in df.columns:
        df["fid_mode"] = "clean"
    return with_roles(df)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns with at least one value, in table order."""
    return [c for c in METRIC_COLUMNS if c in df.columns and df[c].notna().any()]


def lead_metrics(df: pd.DataFrame) -> list[str]:
    """Metric columns in reading order: KID first when FID is biased by small N."""
    cols = metric_columns(df)
    if int(df["n"].min()) < BIASED_FID_N and "kid" in cols:
        cols.remove("kid")
        cols.insert(0, "kid")
    return cols


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seed sets per (model, train resolutions, sampled resolution, FID mode)."""
    df = with_roles(df)
    cols = metric_columns(df)
    g = df.groupby(KEYS + (["fid_mode"] if "fid_mode" in df.columns else []), sort=False)
    out = g[cols].mean()
    std = g[cols].std(ddof=1)
    out = out.join(std.add_suffix("_std")).join(g["n"].min().rename("n")).join(g.size().rename("seed_sets"))
    out = out.join(g["adapter"].first()).join(g["role"].first())
    return out.reset_index()


def fid_modes(primary_first: Sequence[str], df: pd.DataFrame) -> list[str]:
    """The rows' FID modes, the primary one first: the first of `primary_first` (the suite's
    metrics.fid_mode) that the rows have."""
    have = list(dict.fromkeys(df["fid_mode"]))
    primary = next((m for m in primary_first if m in have), have[0])
    return [primary] + [m for m in have if m != primary]


def of_mode(df: pd.DataFrame, mode: str) -> pd.DataFrame:
    return df[df["fid_mode"] == mode].reset_index(drop=True)


def trained(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of trained models: every role but baseline."""
    return df[with_roles(df)["role"] != "baseline"]


def train_band(df: pd.DataFrame) -> tuple[int, int] | None:
    """(smallest, largest) training resolution over the rows' models, or None."""
    res = [r for v in df["train_resolutions"].dropna() for r in parse_resolutions(v)]
    return (min(res), max(res)) if res else None


def same_protocol(reference: Optional[pd.DataFrame], mode: str) -> pd.DataFrame:
    """The published rows made with the protocol of `mode` (none for clean: the paper used EDM's fid.py)."""
    if reference is None or not len(reference):
        return pd.DataFrame()
    return reference[reference["protocol"] == mode]


def reference_in_range(reference: Optional[pd.DataFrame], grid) -> pd.DataFrame:
    """Reference rows whose sampled resolution lies inside the run's resolution range."""
    if reference is None or not len(reference):
        return pd.DataFrame()
    lo, hi = min(grid), max(grid)
    return reference[(reference["sample_resolution"] >= lo) & (reference["sample_resolution"] <= hi)]
