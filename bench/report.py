"""Run reports: resolution-vs-metric plot, Markdown tables, sample panel, summary table.

Everything here is derived from `metrics.csv` and the stored samples of a run
directory, so `bench report RUN_DIR` rebuilds a report without recomputing.
Seed sets are aggregated to mean and std; with N below 5,000 per set, FID is
marked as biased and KID (unbiased) leads.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from bench.config import SuiteConfig
from bench.io import atomic_path, write_text

BIASED_FID_N = 5000
METRICS = {  # column -> (label, lower is better, format)
    "fid": ("FID", True, "{:.2f}"),
    "kid": ("KID", True, "{:.4f}"),
    "precision": ("precision", False, "{:.3f}"),
    "recall": ("recall", False, "{:.3f}"),
    "patch_fid": ("patch FID", True, "{:.2f}"),
    "patch_kid": ("patch KID", True, "{:.4f}"),
    "spectral_lsd": ("log-spectral distance (dB)", True, "{:.2f}"),
}
KEYS = ["model", "train_resolutions", "sample_resolution"]


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in METRICS if c in df.columns and df[c].notna().any()]


def lead_metrics(df: pd.DataFrame) -> list[str]:
    """Metric columns in reading order: KID first when FID is biased by small N."""
    cols = metric_columns(df)
    if int(df["n"].min()) < BIASED_FID_N and "kid" in cols:
        cols.remove("kid")
        cols.insert(0, "kid")
    return cols


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seed sets per (model, train resolutions, sampled resolution)."""
    cols = metric_columns(df)
    g = df.groupby(KEYS, sort=False)
    out = g[cols].mean()
    std = g[cols].std(ddof=1)
    out = out.join(std.add_suffix("_std")).join(g["n"].min().rename("n")).join(g.size().rename("seed_sets"))
    adapters = g["adapter"].first()
    return out.join(adapters).reset_index()


def _train_band(df: pd.DataFrame) -> tuple[int, int] | None:
    res = [int(r) for s in df["train_resolutions"].dropna().astype(str) for r in s.split("/") if r]
    return (min(res), max(res)) if res else None


def plot_metrics(df: pd.DataFrame, out: Path, title: str) -> None:
    """Fig. 2: sampled resolution vs FID (and KID), one line per model, seed-set error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    agg = aggregate(df)
    panels = [c for c in ("fid", "kid") if c in metric_columns(df)]
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.0), dpi=150, squeeze=False)
    band = _train_band(agg[agg["adapter"] != "bilinear"])
    n = int(df["n"].min())
    for ax, col in zip(axes[0], panels):
        if band:
            ax.axvspan(band[0], band[1], color="tab:green", alpha=0.12,
                       label=f"training resolutions {band[0]}-{band[1]}")
            ax.axvline(band[1], color="tab:green", ls="--", lw=1)
            for k, ls in ((1.66, ":"), (2.0, "-.")):
                if band[1] * k <= agg["sample_resolution"].max():
                    ax.axvline(band[1] * k, color="grey", ls=ls, lw=0.8)
                    ax.text(band[1] * k, 1.0, f" {k:g}x", transform=ax.get_xaxis_transform(), va="top",
                            fontsize=7, color="grey")
        for name, g in agg.groupby("model", sort=False):
            g = g.sort_values("sample_resolution")
            y, err = g[col].to_numpy(), g[f"{col}_std"].fillna(0).to_numpy()
            if col == "kid":  # KID is unbiased and can dip below zero; keep the log axis honest
                y = np.clip(y, 1e-5, None)
            ax.errorbar(g["sample_resolution"], y, yerr=err if g["seed_sets"].max() > 1 else None,
                        marker="o", capsize=3, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("sampled resolution (px)")
        biased = " (biased at this N)" if col == "fid" and n < BIASED_FID_N else ""
        ax.set_ylabel(f"{METRICS[col][0]} ({df['fid_mode'].iloc[0]} mode, N={n}){biased}")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def sample_panel(run_dir: Path, df: pd.DataFrame, out: Path, per_cell: int = 2) -> None:
    """One row per model, one column per sampled resolution, same seeds in every cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(df["model"]))
    grid = sorted(df["sample_resolution"].unique())
    seed_set = int(df["seed_set"].min()) if "seed_set" in df.columns else 0
    fig, axes = plt.subplots(len(models), len(grid), figsize=(0.4 + 1.1 * per_cell * len(grid),
                                                              0.4 + 1.2 * len(models)), dpi=150, squeeze=False)
    for i, m in enumerate(models):
        for j, r in enumerate(grid):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            path = run_dir / "samples" / m / f"r{int(r):03d}_s{seed_set}.npz"
            if path.is_file():
                with np.load(path) as z:
                    imgs = z["images"][:per_cell]
                ax.imshow(np.concatenate(list(imgs), axis=1), interpolation="nearest")
            if i == 0:
                ax.set_title(f"{int(r)} px", fontsize=8)
            if j == 0:
                ax.set_ylabel(m, fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _cell(row: pd.Series, col: str) -> str:
    v = row[col]
    if pd.isna(v):
        return ""
    fmt = METRICS[col][2]
    sd = row.get(f"{col}_std")
    return fmt.format(v) + ("" if sd is None or pd.isna(sd) else " ± " + fmt.format(sd))


def metric_table(agg: pd.DataFrame, col: str) -> pd.DataFrame:
    """model x sampled resolution, cells 'mean ± std' over seed sets."""
    agg = agg.assign(cell=agg.apply(lambda r: _cell(r, col), axis=1))
    t = agg.pivot_table(index=["model", "train_resolutions"], columns="sample_resolution", values="cell",
                        aggfunc="first", sort=False)
    t.columns = [f"{int(c)}" for c in t.columns]
    return t.reset_index().fillna("")


def markdown_table(cfg: SuiteConfig, df: pd.DataFrame) -> str:
    agg = aggregate(df)
    n, sets = int(df["n"].min()), int(agg["seed_sets"].max())
    parts = [f"# {cfg.name}: metrics by sampled resolution\n",
             f"N = {n} generated images per model, resolution and seed set ({sets} seed set"
             f"{'s, mean ± std' if sets > 1 else ''}), against {int(df['n_ref'].min()) if 'n_ref' in df else n} "
             f"real images; Inception metrics in clean-fid's {df['fid_mode'].iloc[0]} mode. "
             "Columns are sampled resolutions in px."]
    if n < BIASED_FID_N:
        parts.append(f"N < {BIASED_FID_N:,}: FID is biased upward by an amount that depends on the model, "
                     "so KID (unbiased) leads; read FID only as a ranking at equal N.")
    for col in lead_metrics(df):
        label, lower, _ = METRICS[col]
        t = metric_table(agg, col)
        cols = list(t.columns)
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for _, row in t.iterrows()]
        note = " (biased at this N)" if col == "fid" and n < BIASED_FID_N else ""
        parts.append(f"## {label}{note}, {'lower' if lower else 'higher'} is better\n\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


def model_card_table(run_dir: Path) -> str:
    """Markdown table of the trained models' cards (parameters, GFLOPs, memory), if any."""
    import json

    cards = {p.parent.name: json.loads(p.read_text())
             for p in sorted((run_dir / "checkpoints").glob("*/model_card.json"))}
    if not cards:
        return ""
    grid = list(next(iter(cards.values()))["flops_per_forward"])
    head = ["model", "arch", "params", "spectral", "spatial", *[f"GFLOPs@{r}" for r in grid], "train-step memory"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, c in cards.items():
        mem = c.get("train_step_memory")
        mem_s = f"{mem['peak_bytes'] / 2**20:,.0f} MiB ({mem['resolution']} px x {mem['batch']})" if mem else ""
        flops = [("" if c["flops_per_forward"].get(r) is None else f"{c['flops_per_forward'][r] / 1e9:.2f}")
                 for r in grid]
        lines.append("| " + " | ".join([name, f"{c['arch']} ({c['mode']})", f"{c['params_total']:,}",
                                         f"{c['params_spectral']:,}", f"{c['params_spatial']:,}", *flops, mem_s]) + " |")
    method = next((c["train_step_memory"]["method"] for c in cards.values() if c.get("train_step_memory")), "")
    return ("## Model cards\n\nGFLOPs per image and denoiser evaluation (FFTs as 2.5 N log2 N); "
            f"memory: {method}.\n\n" + "\n".join(lines) + "\n")


def write_report(run_dir: Path, cfg: SuiteConfig, rows: list[dict], report_dir: Optional[Path] = None) -> Path:
    """Write fig2.png, table.md and samples.png into the run dir (and copy to report_dir/<suite>/)."""
    df = pd.DataFrame(rows)
    if "seed_set" not in df.columns:
        df["seed_set"] = 0
    plot_metrics(df, run_dir / "fig2.png", f"{cfg.name}: sampled resolution vs FID")
    sample_panel(run_dir, df, run_dir / "samples.png")
    table = markdown_table(cfg, df)
    cards = model_card_table(run_dir)
    if cards:
        table += "\n" + cards
    table += (f"\nRun `{run_dir.name}`: `environment.json` has versions, device and git commit; "
              "`metrics.csv` has every number per seed set.\n")
    write_text(run_dir / "table.md", table)
    if report_dir is not None:
        dest = Path(report_dir) / cfg.name
        for name in ("fig2.png", "samples.png", "table.md", "metrics.csv", "suite.yaml", "environment.json"):
            if (run_dir / name).is_file():
                with atomic_path(dest / name) as tmp:
                    shutil.copyfile(run_dir / name, tmp)
        return dest
    return run_dir


def summary_table(cfg: SuiteConfig, rows: list[dict]):
    from rich.table import Table

    df = pd.DataFrame(rows)
    if "seed_set" not in df.columns:
        df["seed_set"] = 0
    col = lead_metrics(df)[0]
    t = metric_table(aggregate(df), col)
    table = Table(title=f"{cfg.name}: {METRICS[col][0]} ({df['fid_mode'].iloc[0]}, N={int(df['n'].min())}) "
                        "by sampled resolution")
    for c in t.columns:
        table.add_column(str(c), justify="left" if c in ("model", "train_resolutions") else "right")
    for _, row in t.iterrows():
        table.add_row(*[str(row[c]) or "-" for c in t.columns])
    return table
