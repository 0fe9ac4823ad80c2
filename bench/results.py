"""metrics.csv: its columns, how a row is written, and how the file is read and aggregated.

One row per (model, training seed, sampled resolution, seed set, FID mode). The
metric columns come from the metric table (bench.metrics.COLUMNS), in its order;
after `role` come `train_seed` (only in runs of a suite with `seeds:`; empty for a
model no training seed touches) and the table's companion columns (standard
errors, KID's std over subsets, tolerances). A file holds the columns some row has,
so files written before these columns read as they did. `train_resolutions` is written as "16/24/32"
(`format_resolutions`) and parsed back by `parse_resolutions`, here only. `role`
(models.adapters.ROLES: baseline, spatial, spectral) says how reports treat a
model; files written before it existed get it from `role_of_old_adapter`.

The read side is what the report's figures, tables and findings share: `frame`
turns rows into a DataFrame, `aggregate` takes mean and std over seed sets and a
95% interval (`interval` says which: a t-interval over training seeds where there
are two or more, else the bootstrap over samples), `separated` says whether two
intervals are apart, and the helpers pick FID modes, lead metrics and the training
band.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from bench.io import atomic_path
from bench.metrics import COLUMNS as METRIC_COLUMNS
from bench.metrics import COLUMNS as METRIC_TABLE
from bench.metrics import COMPANIONS, SE_COLUMNS, Z95
from bench.rundir import RunDir

COLUMNS = ("model", "adapter", "train_resolutions", "sample_resolution", "seed_set", "n", "n_ref",
           *METRIC_COLUMNS, "fid_mode", "seconds", "feature_seconds", "role", "train_seed", *COMPANIONS)
T_INTERVAL = "t over training seeds"
BOOTSTRAP_INTERVAL = "bootstrap over samples"
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
    """Metric columns in reading order: KID first when FID is biased by small N; unranked columns
    (compared with an exact answer, not ordered) never lead."""
    cols = metric_columns(df)
    cols.sort(key=lambda c: not METRIC_TABLE[c].ranked)
    if int(df["n"].min()) < BIASED_FID_N and "kid" in cols:
        cols.remove("kid")
        cols.insert(0, "kid")
    return cols


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, train resolutions, sampled resolution, FID mode): each metric's mean over every row,
    `<col>_std` (std over the rows: seed sets, and training seeds where there are several),
    `<col>_lo`/`<col>_hi` (its 95% interval, NaN where none can be given) and the companions' means;
    `seed_sets`, `train_seeds` (k) and `interval` (how the interval was made).

    The interval, for k >= 2 training seeds: Student's t over the k per-seed means (each the mean
    over its seed sets), mean +- t_(0.975, k-1) s / sqrt(k). For one training seed: the bootstrap
    over samples, mean +- 1.96 SE with SE = sqrt(sum of the seed sets' squared bootstrap SEs) / S
    (the SE of a mean of S independent sets), where metrics.csv has the SE column.
    """
    df = with_roles(df)
    cols = metric_columns(df)
    comp = [c for c in COMPANIONS if c in df.columns and df[c].notna().any()]
    keys = KEYS + (["fid_mode"] if "fid_mode" in df.columns else [])
    df = df.assign(_train=df["train_seed"].fillna(-1) if "train_seed" in df.columns else -1)
    g = df.groupby(keys, sort=False)
    out = g[cols + comp].mean()
    std = g[cols].std(ddof=1)
    out = out.join(std.add_suffix("_std")).join(g["n"].min().rename("n"))
    out = out.join(g["seed_set"].nunique().rename("seed_sets")).join(g["_train"].nunique().rename("train_seeds"))
    out = out.join(g["adapter"].first()).join(g["role"].first())
    per_seed = df.groupby(keys + ["_train"], sort=False)[cols].mean().groupby(level=keys, sort=False)
    k = out["train_seeds"].to_numpy()
    t = np.where(k >= 2, stats.t.ppf(0.975, np.maximum(k - 1, 1)), np.nan)
    for col in cols:
        half = t * (per_seed[col].std(ddof=1).reindex(out.index) / np.sqrt(k)).to_numpy()
        se_col = SE_COLUMNS.get(col)
        if se_col in df.columns:
            se = g[se_col].apply(lambda x: np.sqrt((x ** 2).sum(min_count=len(x))) / len(x)).reindex(out.index)
            half = np.where(k >= 2, half, Z95 * se.to_numpy())
        out[f"{col}_lo"], out[f"{col}_hi"] = out[col] - half, out[col] + half
    has_se = any(SE_COLUMNS.get(c) in df.columns for c in cols)
    out["interval"] = np.where(k >= 2, T_INTERVAL, BOOTSTRAP_INTERVAL if has_se else "")
    return out.reset_index()


def separated(a: pd.Series | dict, b: pd.Series | dict, col: str) -> Optional[bool]:
    """Whether the 95% intervals of `col` in two aggregate rows are apart (None: a row has no interval)."""
    lo_a, hi_a, lo_b, hi_b = (a.get(f"{col}_lo"), a.get(f"{col}_hi"), b.get(f"{col}_lo"), b.get(f"{col}_hi"))
    if any(v is None or pd.isna(v) for v in (lo_a, hi_a, lo_b, hi_b)):
        return None
    return bool(hi_a < lo_b or hi_b < lo_a)


def interval_words(agg: pd.DataFrame) -> str:
    """'95% intervals: t over 3 training seeds' -- what the aggregate's intervals are, for captions and findings."""
    kinds = [x for x in dict.fromkeys(agg.get("interval", pd.Series(dtype=str))) if isinstance(x, str) and x]
    if not kinds:
        return "No intervals (one training seed and no bootstrap standard errors)"
    k = int(agg["train_seeds"].max())
    parts = [(f"Student's t over {k} training seeds" if kind == T_INTERVAL else
              "mean +- 1.96 bootstrap standard errors over samples (one training seed)") for kind in kinds]
    return "95% intervals: " + "; ".join(parts)


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
