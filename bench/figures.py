"""The report's figures, drawn from a run directory's files only.

fig2.png: sampled resolution vs FID/KID (the paper's Fig. 2; on a grf run its
spectrum metrics), 95% interval error bars, trained models on an axis fitted to
them and baselines on their own, each model's training resolutions marked in its
colour (Okabe-Ito, colour-blind safe), with the paper's own numbers as hollow
markers where a suite names them. samples.png: every model at every sampled
resolution, the same 4 seeds in every cell (Figs. 1 and 3). fig5.png: at the
largest sampled resolution, a baseline (the paper: bilinear upsampling) vs the
spectral models (DFU, and a fine-tuned DFU) vs real images (Fig. 5). Models are
told apart by their role (metrics.csv), never by their adapter's name.
Image panels are composed in pixels and enlarged by an integer factor with
nearest-neighbour, so images keep their relative sizes and no resampling blurs
the artefacts the figures are meant to show.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from bench.config import SuiteConfig
from bench.io import atomic_path
from bench.metrics import COLUMNS, INCEPTION_COLUMNS
from bench.paper import describe_n
from bench.results import (BIASED_FID_N, aggregate, format_resolutions, lead_metrics, metric_columns,
                           parse_resolutions, reference_in_range, train_band, trained)
from bench.rundir import RunDir, model_key

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

# Okabe & Ito's colour-blind-safe palette (Color Universal Design); no band or mark uses these
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
MARK_GREY = "#8c8c8c"  # reference marks (1.66x, 2x, exact answers): no model's colour


def panel_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns Fig. 2 plots: KID and FID where the run has them, else its ranked metrics and the
    correlation length (grf), at most three."""
    cols = metric_columns(df)
    inception = [c for c in ("kid", "fid") if c in cols]
    return inception if inception else [c for c in lead_metrics(df)][:3]


def _errors(g: pd.DataFrame, col: str) -> Optional[np.ndarray]:
    """Error bars: the 95% interval where there is one, else none."""
    lo, hi = g.get(f"{col}_lo"), g.get(f"{col}_hi")
    if lo is None or hi is None or lo.isna().all():
        return None
    y = g[col].to_numpy()
    return np.vstack([(y - lo.to_numpy()), (hi.to_numpy() - y)]).clip(min=0)


def _fit(ax, values: list[float]) -> None:
    """y limits fitted to the values (means and interval ends), with a margin; zero shown when it is near."""
    v = np.array([x for x in values if np.isfinite(x)])
    if not len(v):
        return
    lo, hi = float(v.min()), float(v.max())
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)
    lo, hi = lo - pad, hi + pad
    if lo > 0 and lo < 0.25 * (hi - lo):  # zero is close: include it, so the scale reads as it is
        lo = 0.0
    ax.set_ylim(lo, hi)
    if lo <= 0 <= hi:
        ax.axhline(0.0, color="black", lw=0.8, zorder=1)


def plot_metrics(df: pd.DataFrame, out: Path, title: str, reference: Optional[pd.DataFrame] = None,
                 marks: Optional[dict[str, list[tuple[int, str]]]] = None) -> int:
    """Fig. 2: sampled resolution vs each plotted metric, one line per model, 95% interval error bars.

    Top row: the trained models, on a linear axis fitted to them (values at or below zero are drawn
    as they are, with a zero line). Bottom row, when the run has baselines: the baselines on their
    own axis, so a reference orders of magnitude away does not squash the trained models. Each
    trained model's own training resolutions are marked by a strip in its colour at the foot of
    the panel; `marks` adds per-model vertical marks (a fine-tune's target resolution). The
    correlation-length panel of a grf run draws the exact (physical) answer and the pixel one.
    reference: rows of bench.paper.reference_frame; those inside the run's range are drawn in the
    FID panel as hollow markers, in the colour of the suite model they are mapped to. Returns how
    many reference points were drawn.
    """
    plt = _pyplot()

    agg = aggregate(df)
    panels = panel_columns(df)
    base = agg[agg["role"] == "baseline"]
    models = list(dict.fromkeys(agg["model"]))
    trained_models = [m for m in models if m not in set(base["model"])] or models
    rows = 2 if len(base) and len(trained_models) < len(models) else 1
    fig, axes = plt.subplots(rows, len(panels), figsize=(5.2 * len(panels), 3.9 * rows + 0.9), dpi=150,
                             squeeze=False, gridspec_kw={"height_ratios": [3, 1.6][:rows]})
    colour = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    train = dict(zip(agg["model"], agg["train_resolutions"]))
    n = int(df["n"].min())
    grid = sorted(int(r) for r in agg["sample_resolution"].unique())
    band = train_band(trained(agg))
    ref = reference_in_range(reference, agg["sample_resolution"])
    exact = agg.drop_duplicates("sample_resolution").set_index("sample_resolution")
    drawn = 0
    for j, col in enumerate(panels):
        label = COLUMNS[col].label
        biased = " (biased at this N)" if col == "fid" and n < BIASED_FID_N else ""
        mode = f"{df['fid_mode'].iloc[0]} mode, " if col in INCEPTION_COLUMNS else ""
        for i, shown in enumerate([trained_models] + ([[m for m in models if m not in trained_models]]
                                                      if rows == 2 else [])):
            ax = axes[i][j]
            values = []
            for name in shown:
                g = agg[agg["model"] == name].sort_values("sample_resolution")
                if g[col].isna().all():
                    continue
                err = _errors(g, col)
                ax.errorbar(g["sample_resolution"], g[col], yerr=err, marker="o", ms=4, capsize=3, lw=1.4,
                            label=name, color=colour[name], zorder=3)
                values += list(g[col]) + ([] if err is None else list(g[col] - err[0]) + list(g[col] + err[1]))
            if i == 0 and col == "grf_corr_length" and "grf_corr_length_expected" in exact.columns:
                phys = exact["grf_corr_length_expected"].reindex(grid)
                ax.plot(grid, phys, color="black", ls="--", lw=1, label="exact (physical) correlation length")
                values += list(phys)
                if band and band[1] in phys.index:
                    pix = [phys[band[1]] * band[1] / r for r in grid]
                    ax.plot(grid, pix, color=MARK_GREY, ls=":", lw=1.2,
                            label=f"pixel correlation length of {band[1]} px")
                    values += pix
            if col == "fid" and len(ref) and i == 0:
                for (rlabel, impl), g in ref.groupby(["model", "fid_impl"], sort=False):
                    g = g.sort_values("sample_resolution")
                    mapped = g["suite_models"].iloc[0].split("/")[0]
                    ax.plot(g["sample_resolution"], g["fid"], ls=":", lw=0.8, marker="s", ms=6, mfc="none",
                            mew=1.3, color=colour.get(mapped, "black"),
                            label=f"paper/authors: {rlabel} ({impl}, {describe_n(g['n_samples'].iloc[0])})")
                    drawn += len(g)
                    values += list(g["fid"])
            _fit(ax, values)
            if band:
                for k, ls in ((1.66, ":"), (2.0, "-.")):
                    if band[1] * k <= max(grid):
                        ax.axvline(band[1] * k, color=MARK_GREY, ls=ls, lw=0.8)
                        ax.text(band[1] * k, 1.0, f" {k:g}x", transform=ax.get_xaxis_transform(), va="top",
                                fontsize=7, color=MARK_GREY)
            for name in shown:  # each model's own training resolutions: a strip in its colour at the foot
                res = parse_resolutions(train.get(name))
                if not res or i:
                    continue
                y = 0.025 + 0.035 * shown.index(name)
                ax.plot([min(res), max(res)], [y, y], color=colour[name], lw=3, alpha=0.55,
                        transform=ax.get_xaxis_transform(), solid_capstyle="butt")
                ax.plot(res, [y] * len(res), "|", color=colour[name], ms=7, mew=1.5,
                        transform=ax.get_xaxis_transform())
                for r, text in (marks or {}).get(name, []):
                    ax.axvline(r, color=colour[name], ls=(0, (2, 2)), lw=1.1)
                    ax.text(r, 0.98 - 0.06 * shown.index(name), f" {text}", transform=ax.get_xaxis_transform(),
                            va="top", fontsize=6.5, color=colour[name])
            ax.set_xticks(grid)
            ax.set_xlabel("sampled resolution (px)")
            ax.set_ylabel(f"{label}\n({mode}N={n}){biased}" if i == 0 else f"{label}\n(baseline)", fontsize=8)
            ax.grid(True, lw=0.4, alpha=0.5)
            if i == 1:
                ax.set_title("baseline, on its own axis", fontsize=8, loc="left")
    axes[0][0].set_title("trained models (strips: each model's training resolutions)", fontsize=8, loc="left")
    handles, labels = [], []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    order = sorted(range(len(labels)), key=lambda i: (labels[i].startswith("paper/"), labels[i] not in models))
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    ncol = min(4, len(labels))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    legend_rows = -(-len(labels) // ncol)
    fig.tight_layout(rect=(0, 0.03 + 0.03 * legend_rows, 1, 1))
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
    caption += (f"; scale {scale}x: every pixel drawn {scale}x{scale} (nearest neighbour)" if scale > 1
                else "; scale 1x (one image pixel per figure pixel)")
    label_lines = max((len(s.splitlines()) for s in col_labels), default=1)
    left = 24 + 8 * max((len(line) for s in row_labels for line in s.splitlines()), default=0)
    top = 12 + FONT_PX * (2 + label_lines) + 8
    W = max(left + big.shape[1] + 16, 480)
    # captions wrap to the figure's width (8 pt text: about 6 px a character), never cut
    caption = "\n".join(textwrap.fill(part, max(40, (W - left) // 6)) for part in caption.split("\n"))
    bottom = 12 + FONT_PX * (1 + caption.count("\n"))
    H = top + big.shape[0] + bottom
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


def _row_label(name: str, row: pd.Series, grid: list[int]) -> str:
    """A samples-panel row label: the model, what it learned from, and for a baseline whether each
    resolution is a down- or upsampling of its base images."""
    res = parse_resolutions(row["train_resolutions"])
    if not res:
        return name
    if row["role"] != "baseline":
        return f"{name}\ntrain {format_resolutions(res)} px"
    base = res[0]
    down, up = [r for r in grid if r < base], [r for r in grid if r > base]
    lines = [name, f"{row['adapter']} from {base} px"]
    if down:
        lines.append(f"downsampled at {', '.join(map(str, down))}")
    if base in grid:
        lines.append(f"as is at {base}")
    if up:
        lines.append(f"upsampled at {', '.join(map(str, up))}")
    return "\n".join(lines)


def _mosaic(imgs: list[np.ndarray], res: int, cols: int = 2) -> list[np.ndarray]:
    """Up to 4 images of one cell as one 2x2 block (blank where a seed is missing), 1 px apart per 16 px;
    one blank tile for a cell whose samples are missing (so a panel of missing files still has a size)."""
    if not imgs:
        return [np.full((res, res, 3), 255, np.uint8)]
    gap = max(1, res // 16)
    k = -(-len(imgs) // cols) * cols
    tiles = list(imgs) + [np.full((res, res, 3), 255, np.uint8)] * (k - len(imgs))
    rows = []
    for i in range(0, k, cols):
        row = [tiles[i]]
        for t in tiles[i + 1:i + cols]:
            row += [np.full((res, gap, 3), 255, np.uint8), t]
        rows.append(np.concatenate(row, axis=1))
    out = [rows[0]]
    for r in rows[1:]:
        out += [np.full((gap, r.shape[1], 3), 255, np.uint8), r]
    return [np.concatenate(out, axis=0)]


def sample_key(df: pd.DataFrame, model: str) -> str:
    """The run-directory name of the samples a figure shows for a model: its first training seed's."""
    seeds = df.loc[df["model"] == model, "train_seed"].dropna() if "train_seed" in df.columns else []
    return model_key(model, int(min(seeds)) if len(seeds) else None)


def panel_inputs(run: RunDir, df: pd.DataFrame) -> dict[tuple[str, int], Path]:
    """(model, resolution) -> the samples file the samples panel shows there: the lowest seed set of
    each model's first training seed. No other sample file is read by a report."""
    grid = sorted(int(r) for r in df["sample_resolution"].unique())
    seed_set = int(df["seed_set"].min()) if "seed_set" in df.columns else 0
    return {(m, r): run.samples_to_read(sample_key(df, m), r, seed_set)
            for m in dict.fromkeys(df["model"]) for r in grid}


def sample_panel(run: RunDir, df: pd.DataFrame, out: Path, per_cell: int = 4) -> list[str]:
    """Figs. 1/3: one row per model, one column per sampled resolution, the same `per_cell` seeds in every
    cell (a 2x2 block), at native relative size. Returns the blank cells ("model at R px"), whose samples
    file is missing; the caption names them too.

    Every cell shows the same seeds, so any image and the one below it share a seed; a
    model trained with several training seeds shows its first. The panel is enlarged by a
    whole factor to fit the page (nearest neighbour; the factor is stated in the caption).
    """
    models = list(dict.fromkeys(df["model"]))
    grid = sorted(int(r) for r in df["sample_resolution"].unique())
    seed_set = int(df["seed_set"].min()) if "seed_set" in df.columns else 0
    inputs = panel_inputs(run, df)
    blank = [f"{m} at {r} px" for (m, r), path in inputs.items() if not path.is_file()]
    cells, seeds = [], set()
    for m in models:
        row = []
        for r in grid:
            imgs, s = _load(inputs[m, r], per_cell)
            row.append(_mosaic(imgs, r))
            seeds.update(s)
        cells.append(row)
    canvas, cx, ry = _compose(cells, gap=max(4, grid[-1] // 8))
    band = train_band(trained(df))
    cols = [f"{r} px" + (f"\n{r / band[1]:.3g}x" if band else "") for r in grid]  # short: small cells sit close
    first = df.drop_duplicates("model").set_index("model")
    rows = [_row_label(m, first.loc[m], grid) for m in models]
    seed_txt = f"seeds {min(seeds)}-{max(seeds)}" if seeds else "no samples found"
    trained_with = " (training seed: the first)" if "train_seed" in df.columns else ""
    _save_panel(canvas, cx, ry, cols, rows, "Samples at every sampled resolution (same seeds in every cell)",
                f"{seed_txt} of seed set {seed_set}{trained_with}, {per_cell} per cell (2x2, left to right, top to "
                "bottom); images at native relative size"
                + (f"; under each resolution its ratio to the largest training resolution ({band[1]} px)" if band
                   else "") + (f"; blank: {blank_cells(blank)}" if blank else ""), out)
    return blank


def blank_cells(blank: Sequence[str], shown: int = 6) -> str:
    """The samples panel's blank cells in words, at most ``shown`` named."""
    more = f" and {len(blank) - shown} more" if len(blank) > shown else ""
    return f"no samples file for {', '.join(blank[:shown])}{more}"


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
        imgs, s = _load(run.samples_to_read(sample_key(df, name), res, seed_set), per_row)
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
