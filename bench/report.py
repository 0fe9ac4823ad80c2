"""Run reports: resolution-vs-FID plot, Markdown table, sample panel, summary table.

Everything here is derived from `metrics.csv` and the stored samples of a run
directory, so `bench report RUN_DIR` can rebuild a report without recomputing.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from bench.config import SuiteConfig
from bench.io import atomic_path, write_text


def _train_band(df: pd.DataFrame) -> tuple[int, int] | None:
    res = [int(r) for s in df["train_resolutions"].dropna().astype(str) for r in s.split("/") if r]
    return (min(res), max(res)) if res else None


def plot_fid(df: pd.DataFrame, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    band = _train_band(df[df["adapter"] != "bilinear"])
    if band:
        ax.axvspan(band[0], band[1], color="tab:green", alpha=0.12, label=f"training resolutions {band[0]}-{band[1]}")
        ax.axvline(band[1], color="tab:green", ls="--", lw=1)
        for k, ls in ((1.66, ":"), (2.0, "-.")):
            if band[1] * k > df["sample_resolution"].max():
                continue
            ax.axvline(band[1] * k, color="grey", ls=ls, lw=0.8)
            ax.text(band[1] * k, 1.0, f" {k:g}x", transform=ax.get_xaxis_transform(), va="top",
                    fontsize=7, color="grey")
    for name, g in df.groupby("model", sort=False):
        g = g.sort_values("sample_resolution")
        ax.plot(g["sample_resolution"], g["fid"], marker="o", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("sampled resolution (px)")
    ax.set_ylabel(f"FID ({df['fid_mode'].iloc[0]} mode, N={int(df['n'].min())})")
    ax.set_title(title)
    ax.legend(fontsize=7)
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
    fig, axes = plt.subplots(len(models), len(grid), figsize=(0.4 + 1.1 * per_cell * len(grid), 0.4 + 1.2 * len(models)),
                             dpi=150, squeeze=False)
    for i, m in enumerate(models):
        for j, r in enumerate(grid):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            path = run_dir / "samples" / m / f"r{int(r):03d}.npz"
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


def fid_table(df: pd.DataFrame) -> pd.DataFrame:
    t = df.pivot_table(index=["model", "train_resolutions"], columns="sample_resolution", values="fid",
                       sort=False)
    t.columns = [f"{int(c)}" for c in t.columns]
    return t.reset_index()


def markdown_table(cfg: SuiteConfig, df: pd.DataFrame) -> str:
    t = fid_table(df)
    cols = list(t.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in t.iterrows():
        cells = [str(row[c]) if c in ("model", "train_resolutions") else
                 ("" if pd.isna(row[c]) else f"{row[c]:.2f}") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    n = int(df["n"].min())
    note = (f"FID ({df['fid_mode'].iloc[0]} mode, clean-fid), N = {n} generated vs {n} real images per "
            f"resolution; columns are sampled resolutions in px.")
    if n < 5000:
        note += " N < 5,000: FID is biased upward at this N; compare models at equal N only."
    return f"# {cfg.name}: FID by sampled resolution\n\n{note}\n\n" + "\n".join(lines) + "\n"


def write_report(run_dir: Path, cfg: SuiteConfig, rows: list[dict], report_dir: Optional[Path] = None) -> Path:
    """Write fig2.png, table.md and samples.png into the run dir (and copy to report_dir/<suite>/)."""
    df = pd.DataFrame(rows)
    plot_fid(df, run_dir / "fig2.png", f"{cfg.name}: sampled resolution vs FID")
    sample_panel(run_dir, df, run_dir / "samples.png")
    table = markdown_table(cfg, df)
    env = (run_dir / "environment.json")
    table += f"\nRun: `{run_dir.name}` ({env.name} has versions, device and git commit).\n"
    write_text(run_dir / "table.md", table)
    if report_dir is not None:
        dest = Path(report_dir) / cfg.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("fig2.png", "samples.png", "table.md", "metrics.csv", "suite.yaml", "environment.json"):
            if (run_dir / name).is_file():
                with atomic_path(dest / name) as tmp:
                    shutil.copyfile(run_dir / name, tmp)
        return dest
    return run_dir


def summary_table(cfg: SuiteConfig, rows: list[dict]):
    from rich.table import Table

    df = pd.DataFrame(rows)
    t = fid_table(df)
    table = Table(title=f"{cfg.name}: FID ({df['fid_mode'].iloc[0]}, N={int(df['n'].min())}) by sampled resolution")
    for c in t.columns:
        table.add_column(str(c), justify="left" if c in ("model", "train_resolutions") else "right")
    for _, row in t.iterrows():
        table.add_row(*[str(row[c]) if c in ("model", "train_resolutions") else
                        ("-" if pd.isna(row[c]) else f"{row[c]:.2f}") for c in t.columns])
    return table
