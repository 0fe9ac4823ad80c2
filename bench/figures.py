"""The report's figures, drawn from a run directory's files only.

fig2.png: sampled resolution vs FID/KID (the paper's Fig. 2), with the paper's
own numbers as hollow markers where a suite names them. samples.png: every
model at every sampled resolution, same seeds (Figs. 1 and 3). fig5.png: at the
largest sampled resolution, a baseline (the paper: bilinear upsampling) vs the
spectral models (DFU, and a fine-tuned DFU) vs real images (Fig. 5). Models are
told apart by their role (metrics.csv), never by their adapter's name.
Image panels are composed in pixels and enlarged by an integer factor with
nearest-neighbour, so images keep their relative sizes and no resampling blurs
the artefacts the figures are meant to show.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from bench.config import SuiteConfig
from bench.io import atomic_path
from bench.metrics import COLUMNS
from bench.paper import describe_n
from bench.results import BIASED_FID_N, aggregate, metric_columns, reference_in_range, train_band, trained
from bench.rundir import RunDir

PANEL_WIDTH_PX = 1400  # target width of image panels; images are enlarged by whole factors towards it
FONT_PX = 13  # label height at dpi 100 (10 pt)


def _pyplot():
    # inside: matplotlib.pyplot takes 0.35 s to import (python -X importtime) and its backend must be
    # chosen first; only drawing a figure needs it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------- Fig. 2


def plot_metrics(df: pd.DataFrame, out: Path, title: str, reference: Optional[pd.DataFrame] = None) -> int:
    """Fig. 2: sampled resolution vs FID (and KID), one line per model, seed-set error bars.

    reference: rows of bench.paper.reference_frame; those inside the run's range
    are drawn in the FID panel as hollow markers, in the colour of the suite model
    they are mapped to. Returns how many reference points were drawn.
    """
    plt = _pyplot()
    import seaborn as sns  # inside: 0.9-1.2 s to import (python -X importtime), for this figure only

    agg = aggregate(df)
    panels = [c for c in ("fid", "kid") if c in metric_columns(df)]
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), dpi=150, squeeze=False)
    band = train_band(trained(agg))
    n = int(df["n"].min())
    models = list(dict.fromkeys(agg["model"]))
    colour = dict(zip(models, sns.color_palette("tab10", max(10, len(models)))))
    ref = reference_in_range(reference, agg["sample_resolution"])
    drawn = 0
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
                        marker="o", ms=4, capsize=3, label=name, color=colour[name])
        if col == "fid" and len(ref):
            for (label, impl), g in ref.groupby(["model", "fid_impl"], sort=False):
                g = g.sort_values("sample_resolution")
                mapped = g["suite_models"].iloc[0].split("/")[0]
                ax.plot(g["sample_resolution"], g["fid"], ls=":", lw=0.8, marker="s", ms=6, mfc="none", mew=1.3,
                        color=colour.get(mapped, "black"),
                        label=f"paper/authors: {label} ({impl}, {describe_n(g['n_samples'].iloc[0])})")
                drawn += len(g)
        ax.set_yscale("log")
        ax.set_xlabel("sampled resolution (px)")
        biased = " (biased at this N)" if col == "fid" and n < BIASED_FID_N else ""
        ax.set_ylabel(f"{COLUMNS[col].label} ({df['fid_mode'].iloc[0]} mode, N={n}){biased}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    # matplotlib lists plain lines before error-bar containers: put band, models, then paper points
    order = sorted(range(len(labels)), key=lambda i: (labels[i].startswith("paper/"), not labels[i].startswith("training")))
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    fig.suptitle(title)
    rows = -(-len(labels) // 4)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * rows, 1, 1))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return drawn


# ------------------------------------------------------------------ image panels


def _compose(cells: list[list[list[np.ndarray]]], gap: int) -> tuple[np.ndarray, list[int], list[int]]:
    """Place each cell's images left to right, at native size, on a white canvas.

    cells[i][j] is the list of HxWx3 images of row i, column j. Column widths and
    row heights fit their largest cell. Returns the canvas and the pixel x centres
    of the columns and y centres of the rows.
    """
    n_rows, n_cols = len(cells), len(cells[0])

    def size(imgs):
        return (max((im.shape[0] for im in imgs), default=0),
                sum(im.shape[1] for im in imgs) + gap // 2 * max(0, len(imgs) - 1))

    widths = [max(size(cells[i][j])[1] for i in range(n_rows)) for j in range(n_cols)]
    heights = [max(size(cells[i][j])[0] for j in range(n_cols)) for i in range(n_rows)]
    xs = np.cumsum([0] + [w + gap for w in widths])
    ys = np.cumsum([0] + [h + gap for h in heights])
    canvas = np.full((ys[-1] - gap, xs[-1] - gap, 3), 255, np.uint8)
    for i in range(n_rows):
        for j in range(n_cols):
            h, w = size(cells[i][j])
            x, y = xs[j] + (widths[j] - w) // 2, ys[i] + (heights[i] - h) // 2
            for im in cells[i][j]:
                canvas[y:y + im.shape[0], x:x + im.shape[1]] = im
                x += im.shape[1] + gap // 2
    return canvas, [int(xs[j] + widths[j] / 2) for j in range(n_cols)], [int(ys[i] + heights[i] / 2)
                                                                         for i in range(n_rows)]


def _save_panel(canvas: np.ndarray, col_x: list[int], row_y: list[int], col_labels: list[str],
                row_labels: list[str], title: str, caption: str, out: Path) -> int:
    """Draw the canvas enlarged by a whole factor, row labels left, column labels above."""
    plt = _pyplot()

    scale = int(max(1, min(8, PANEL_WIDTH_PX // canvas.shape[1])))
    big = canvas.repeat(scale, 0).repeat(scale, 1)
    caption += f"; every pixel drawn {scale}x{scale} (nearest neighbour)" if scale > 1 else ""
    label_lines = max((len(s.splitlines()) for s in col_labels), default=1)
    left = 24 + 8 * max((len(line) for s in row_labels for line in s.splitlines()), default=0)
    top = 12 + FONT_PX * (2 + label_lines) + 8
    bottom = 12 + FONT_PX * (1 + caption.count("\n"))
    W, H = left + big.shape[1] + 16, top + big.shape[0] + bottom
    fig = plt.figure(figsize=(W / 100, H / 100), dpi=100)
    fig.figimage(big, xo=left, yo=bottom, origin="upper")
    fig.text(left / W, 1 - 8 / H, title, ha="left", va="top", fontsize=11, weight="bold")
    for x, s in zip(col_x, col_labels):
        fig.text((left + (x + 0.5) * scale) / W, 1 - (top - 4) / H, s, ha="center", va="bottom", fontsize=9)
    for y, s in zip(row_y, row_labels):
        fig.text((left - 8) / W, 1 - (top + (y + 0.5) * scale) / H, s, ha="right", va="center", fontsize=9)
    fig.text(left / W, 6 / H, caption, ha="left", va="bottom", fontsize=8, color="dimgrey")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return scale


def _load(path: Path, k: int) -> tuple[list[np.ndarray], list[int]]:
    """The first k images of an npz file (and their seeds), or nothing if it is missing."""
    if not path.is_file():
        return [], []
    with np.load(path) as z:
        imgs = z["images"][:k]
        seeds = z["seeds"][:k].tolist() if "seeds" in z.files else list(range(len(imgs)))
    return list(imgs), [int(s) for s in seeds]


def _train_label(train, role) -> str:
    if pd.isna(train) or str(train) == "":
        return ""
    return f"upsampled from {train} px" if role == "baseline" else f"train {train} px"


def sample_panel(run: RunDir, df: pd.DataFrame, out: Path, max_per_cell: int = 4) -> Path:
    """Figs. 1/3: one row per model, one column per sampled resolution, same seeds in every row.

    Images are at native relative size. Each column is about as wide as one
    image at the largest resolution, so smaller resolutions show more seeds:
    k = clamp(largest // r, 1, max_per_cell) images per cell, the same k for
    every model, so any image and the one below it share a seed.
    """
    models = list(dict.fromkeys(df["model"]))
    grid = sorted(int(r) for r in df["sample_resolution"].unique())
    seed_set = int(df["seed_set"].min()) if "seed_set" in df.columns else 0
    per_cell = {r: int(np.clip(grid[-1] // r, 1, max_per_cell)) for r in grid}
    cells, seeds = [], set()
    for m in models:
        row = []
        for r in grid:
            imgs, s = _load(run.samples_to_read(m, r, seed_set), per_cell[r])
            row.append(imgs)
            seeds.update(s)
        cells.append(row)
    canvas, cx, ry = _compose(cells, gap=max(4, grid[-1] // 8))
    band = train_band(trained(df))
    cols = [f"{r} px" + (f"\n{r / band[1]:.3g}x train max" if band else "") for r in grid]
    first = df.drop_duplicates("model").set_index("model")
    rows = [f"{m}\n{_train_label(first.at[m, 'train_resolutions'], first.at[m, 'role'])}".strip()
            for m in models]
    seed_txt = f"seeds {min(seeds)}-{max(seeds)}" if seeds else "no samples found"
    _save_panel(canvas, cx, ry, cols, rows, "Samples at every sampled resolution (same seeds per column)",
                        f"{seed_txt} of seed set {seed_set}; images at native relative size; cells per "
                        f"column: " + ", ".join(f"{r} px x{per_cell[r]}" for r in grid), out)
    return out


def fig5_models(df: pd.DataFrame, cfg: SuiteConfig) -> tuple[Optional[str], list[str], Optional[str]]:
    """(baseline model, spectral models to show, why the figure is skipped or None), from the rows' roles.

    Spectral: the first one that is not a fine-tune, plus the first fine-tuned one.
    """
    roles = dict(zip(df["model"], df["role"]))  # suite order: the rows' order
    finetuned = {m.name for m in cfg.models if m.finetune is not None}
    baseline = next((m for m, r in roles.items() if r == "baseline"), None)
    spectral = [m for m, r in roles.items() if r == "spectral"]
    shown = [m for m in spectral if m not in finetuned][:1] + [m for m in spectral if m in finetuned][:1]
    missing = [what for what, ok in (("baseline model (role baseline)", baseline),
                                     ("spectral model (role spectral)", spectral)) if not ok]
    why = f"the suite has no {' and no '.join(missing)}" if missing else None
    return baseline, shown, why


def fig5_panel(run: RunDir, cfg: SuiteConfig, df: pd.DataFrame, out: Path,
               per_row: int = 4) -> tuple[bool, list[str]]:
    """Fig. 5: at the largest sampled resolution, a baseline vs spectral models (vs a fine-tuned one) vs real.

    Generated rows use the same seeds column by column; real images are the run's
    kept references. A row whose files are missing is left out and named in the
    notes; with no generated row left nothing is drawn. Returns (drawn, notes for
    index.md).
    """
    baseline, spectral, why = fig5_models(df, cfg)
    assert why is None, why
    res = int(df["sample_resolution"].max())
    seed_set = int(df["seed_set"].min()) if "seed_set" in df.columns else 0
    b = next(m for m in cfg.models if m.name == baseline)
    adapter = df.loc[df["model"] == baseline, "adapter"].iloc[0]
    made = f"{adapter} from {b.source} at {b.base_resolution} px" if b.source else f"{adapter} at {res} px"
    rows, cells, notes, seeds = [], [], [], None
    for name, label in [(baseline, f"{baseline}\n{made}"),
                        *[(m, f"{m}\n{'fine-tuned, ' if k else ''}sampled at {res} px")
                          for k, m in enumerate(spectral)]]:
        imgs, s = _load(run.samples_to_read(name, res, seed_set), per_row)
        if not imgs:
            notes.append(f"no samples of {name} at {res} px in the run directory, so no {name} row")
            continue
        seeds = seeds or s
        cells.append(imgs + [np.full((res, res, 3), 255, np.uint8)] * (per_row - len(imgs)))
        rows.append(label)
    if not cells:
        return False, notes
    real, _ = _load(run.reference(res), per_row)
    if real:
        cells.append(real + [np.full((res, res, 3), 255, np.uint8)] * (per_row - len(real)))
        rows.append(f"real\ndataset at {res} px")
    else:
        notes.append(f"no real images ({run.relative(run.reference(res))}) in the run directory, so no real row; "
                     "runs made before the harness kept references lack them")
    canvas, cx, ry = _compose([[[im] for im in row] for row in cells], gap=max(4, res // 16))
    cols = [f"seed {s}" for s in (seeds or range(per_row))]
    band = train_band(trained(df))
    ratio = f" = {res / band[1]:.3g}x the largest training resolution" if band else ""
    _save_panel(canvas, cx, ry, cols, rows, f"At {res} px{ratio}: baseline vs spectral models vs real",
                "generated rows share seeds column by column; real images are reference images 0-"
                f"{per_row - 1} (not paired with the seeds)", out)
    return True, notes
