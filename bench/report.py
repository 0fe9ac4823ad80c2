"""Run reports: aggregation, tables (Markdown, CSV, LaTeX), index.md, and where they go.

Everything here is derived from a run directory's files (`metrics.csv`,
`samples/`, `references/`, `checkpoints/*/model_card.json`, `suite.yaml`,
`environment.json`) and the paper's numbers that ship with the package, so
`bench report RUN_DIR` rebuilds a report without recomputing anything. Seed sets
are aggregated to mean and std; with N below 5,000 per set, FID is marked as
biased and KID (unbiased) leads. A run may hold numbers in two FID modes (the
`fid_mode` column): tables get one section per mode, figures and findings use the
primary mode (the suite's first), and the paper's numbers stand only beside the
mode of their own protocol (bench.paper.PROTOCOL). Figures are in
bench/figures.py, the generated findings in bench/summary.py.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import pandas as pd

from bench.config import SuiteConfig
from bench.io import atomic_path, write_text
from bench.paper import describe_n, labels, reference_frame

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
INCEPTION_METRICS = {"fid", "kid", "precision", "recall", "patch_fid", "patch_kid"}
FID_IMPL = {"clean": "clean-fid clean mode", "legacy": "legacy mode (EDM fid.py protocol)"}
MODE_TEXT = {"clean": "clean-fid's `clean` mode: PIL bicubic resize to 299",
             "legacy": "the `legacy` mode, EDM fid.py's protocol: uint8 at native size, TF1-style bilinear resize "
                       "inside Inception (torch-fidelity's inception-v3-compat)"}
KEYS = ["model", "train_resolutions", "sample_resolution"]
TIDY_COLUMNS = ["model", "train_resolutions", "sample_resolution", "metric", "mean", "std", "seed_sets", "n",
                "fid_impl"]
REPORT_FILES = ("index.md", "fig2.png", "samples.png", "fig5.png", "table.md", "table.csv", "table.tex")
COPIED_FILES = ("metrics.csv", "suite.yaml", "environment.json")


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
    """Mean, std and count over seed sets per (model, train resolutions, sampled resolution, FID mode)."""
    cols = metric_columns(df)
    g = df.groupby(KEYS + (["fid_mode"] if "fid_mode" in df.columns else []), sort=False)
    out = g[cols].mean()
    std = g[cols].std(ddof=1)
    out = out.join(std.add_suffix("_std")).join(g["n"].min().rename("n")).join(g.size().rename("seed_sets"))
    out = out.join(g["adapter"].first())
    return out.reset_index()


def fid_impl(mode: str) -> str:
    return FID_IMPL.get(mode, f"{mode} mode")


def fid_modes(cfg: SuiteConfig, df: pd.DataFrame) -> list[str]:
    """The rows' FID modes, the primary one first: the suite's first fid_mode that the rows have."""
    have = list(dict.fromkeys(df["fid_mode"]))
    primary = next((m for m in cfg.metrics.fid_modes if m in have), have[0])
    return [primary] + [m for m in have if m != primary]


def of_mode(df: pd.DataFrame, mode: str) -> pd.DataFrame:
    return df[df["fid_mode"] == mode].reset_index(drop=True)


def same_protocol(reference: Optional[pd.DataFrame], mode: str) -> pd.DataFrame:
    """The published rows made with the protocol of `mode` (none for clean: the paper used EDM's fid.py)."""
    if reference is None or not len(reference):
        return pd.DataFrame()
    return reference[reference["protocol"] == mode]


def train_band(df: pd.DataFrame) -> tuple[int, int] | None:
    """(smallest, largest) training resolution over the rows' models, or None."""
    res = [int(r) for s in df["train_resolutions"].dropna().astype(str) for r in s.split("/") if r]
    return (min(res), max(res)) if res else None


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if "seed_set" not in df.columns:
        df["seed_set"] = 0
    # read_csv turns a column of single resolutions into ints; keep one spelling
    df["train_resolutions"] = df["train_resolutions"].astype(str)
    if "fid_mode" not in df.columns:
        df["fid_mode"] = "clean"
    return df


def _impl(df: pd.DataFrame) -> str:
    return fid_impl(df["fid_mode"].iloc[0])


# ---------------------------------------------------------------------- tables


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


def reference_in_range(reference: Optional[pd.DataFrame], grid) -> pd.DataFrame:
    """Reference rows whose sampled resolution lies inside the run's resolution range."""
    if reference is None or not len(reference):
        return pd.DataFrame()
    lo, hi = min(grid), max(grid)
    return reference[(reference["sample_resolution"] >= lo) & (reference["sample_resolution"] <= hi)]


def table_rows(df: pd.DataFrame, col: str, reference: Optional[pd.DataFrame] = None) -> tuple[list[int], list[dict]]:
    """Rows of one metric's model x resolution table, shared by table.md and table.tex.

    Each row: label, train, kind ('run' or 'paper'), mean and cell (text) by
    resolution, impl, N and source. Reference rows (FID only) are the paper's
    numbers inside the run's resolution range; their resolutions join the columns.
    """
    agg = aggregate(df)
    grid = sorted(int(r) for r in agg["sample_resolution"].unique())
    ref = reference_in_range(reference, grid) if col == "fid" else pd.DataFrame()
    res = sorted(set(grid) | {int(r) for r in ref.get("sample_resolution", [])})
    rows = []
    for name, g in agg.groupby("model", sort=False):
        by_res = {int(r): row for r, (_, row) in zip(g["sample_resolution"], g.iterrows())}
        rows.append({"label": name, "train": str(g["train_resolutions"].iloc[0]), "kind": "run",
                     "adapter": g["adapter"].iloc[0],
                     "mean": {r: by_res[r][col] for r in res if r in by_res and pd.notna(by_res[r][col])},
                     "cell": {r: _cell(by_res[r], col) for r in res if r in by_res},
                     "impl": _impl(df) if col in INCEPTION_METRICS else "", "N": f"{int(g['n'].min()):,}",
                     "source": "this run"})
    for label, g in (ref.groupby("label", sort=False) if len(ref) else []):
        rows.append({"label": label, "train": str(g["train_resolutions"].iloc[0]), "kind": "paper", "adapter": "",
                     "mean": dict(zip(g["sample_resolution"].astype(int), g["fid"])),
                     "cell": {int(r): f"{v:.2f}" for r, v in zip(g["sample_resolution"], g["fid"])},
                     "impl": g["fid_impl"].iloc[0], "N": describe_n(g["n_samples"].iloc[0]).removeprefix("N="),
                     "source": "; ".join(dict.fromkeys(g["source"]))})
    return res, rows


def reference_note(cfg: SuiteConfig, df: pd.DataFrame, reference: Optional[pd.DataFrame],
                   run_modes: tuple = ()) -> tuple[str, str]:
    """(where this FID comes from, where the paper's comes from or why none is shown).

    df: the rows of one FID mode; run_modes: every mode the run has, to say where
    the paper's numbers are when this mode cannot stand beside them."""
    grid = sorted(int(r) for r in df["sample_resolution"].unique())
    mode = df["fid_mode"].iloc[0]
    ours = (f"This table's FID is {MODE_TEXT.get(mode, f'`{mode}` mode')} (`fid_mode` {mode} in "
            f"metrics.csv), N = {int(df['n'].min()):,} per seed set.")
    ref_name = cfg.report.reference
    if ref_name is None:
        kind = getattr(cfg.dataset, "kind", "")
        what = (f"the {kind} dataset is generated by this project, so no published numbers exist for it"
                if kind == "toyfaces" else "this suite names no published dataset (report.reference), so no "
                "published numbers are shown")
        return ours, f"{what[0].upper() + what[1:]}; bench/reference/paper_numbers.csv has {', '.join(labels())}."
    comparable = same_protocol(reference, mode)
    if reference is not None and len(reference) and not len(comparable):
        impls = ", ".join(sorted(set(reference["fid_impl"])))
        other = [m for m in run_modes if len(same_protocol(reference, m))]
        where = (f"they stand beside this run's {fid_impl(other[0])} table" if other else
                 "add legacy to metrics.fid_mode for numbers of their protocol")
        return ours, (f"The published numbers for {ref_name} ({impls}) are comparable only with numbers of EDM "
                      f"fid.py's protocol (bench/paper.py), not with {fid_impl(mode)}, so this table leaves them "
                      f"out; {where}.")
    shown = reference_in_range(comparable, grid)
    if not len(shown):
        lo, hi = (int(reference["sample_resolution"].min()), int(reference["sample_resolution"].max())) \
            if reference is not None and len(reference) else (None, None)
        return ours, (f"The published numbers for {ref_name} lie at {lo}-{hi} px, outside this run's "
                      f"{grid[0]}-{grid[-1]} px, so none are shown.")
    impls = "; ".join(f"{label}: {impl}, {describe_n(n)}, {src}" for label, impl, n, src in
                      shown.drop_duplicates("label")[["label", "fid_impl", "n_samples", "source"]].itertuples(
                          index=False))
    return ours, (f"Rows marked `paper:` are published numbers for {ref_name} from "
                  f"bench/reference/paper_numbers.csv, each with its own FID implementation and N ({impls}); "
                  f"their protocol is this table's, so values compare only where N and the reference set match "
                  f"too (here N = {int(df['n'].min()):,} against "
                  f"{int(df['n_ref'].min()) if 'n_ref' in df else int(df['n'].min()):,} real images).")


def _sections(cfg: SuiteConfig, df: pd.DataFrame):
    """(mode, that mode's rows, metric column) in table order: every metric of the primary mode,
    then the other modes' Inception metrics (the rest do not depend on the mode)."""
    modes = fid_modes(cfg, df)
    for mode in modes:
        sub = of_mode(df, mode)
        for col in lead_metrics(sub):
            if mode == modes[0] or col in INCEPTION_METRICS:
                yield mode, sub, col


def markdown_table(cfg: SuiteConfig, df: pd.DataFrame, reference: Optional[pd.DataFrame] = None) -> str:
    modes = fid_modes(cfg, df)
    agg = aggregate(of_mode(df, modes[0]))
    n, sets = int(df["n"].min()), int(agg["seed_sets"].max())
    parts = [f"# {cfg.name}: metrics by sampled resolution\n",
             f"N = {n} generated images per model, resolution and seed set ({sets} seed set"
             f"{'s, mean ± std' if sets > 1 else ''}), against {int(df['n_ref'].min()) if 'n_ref' in df else n} "
             f"real images; Inception metrics in {' and in '.join(fid_impl(m) for m in modes)}"
             f"{', one section each' if len(modes) > 1 else ''}. Columns are sampled resolutions in px."]
    if n < BIASED_FID_N:
        parts.append(f"N < {BIASED_FID_N:,}: FID is biased upward by an amount that depends on the model, "
                     "so KID (unbiased) leads; read FID only as a ranking at equal N.")
    for mode, sub, col in _sections(cfg, df):
        label, lower, _ = METRICS[col]
        label += f", {mode} mode" if col in INCEPTION_METRICS else ""
        res, rows = table_rows(sub, col, same_protocol(reference, mode))
        extra = any(r["kind"] == "paper" for r in rows)
        head = ["model", "train_resolutions", *map(str, res)] + (["FID implementation", "N", "source"] if extra else [])
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r["label"], r["train"], *[r["cell"].get(x, "") for x in res]]
            cells += [r["impl"], r["N"], r["source"]] if extra else []
            lines.append("| " + " | ".join(cells) + " |")
        note = " (biased at this N)" if col == "fid" and n < BIASED_FID_N else ""
        text = f"## {label}{note}, {'lower' if lower else 'higher'} is better\n\n" + "\n".join(lines)
        if col == "fid":
            text += "\n\n" + " ".join(reference_note(cfg, sub, reference, tuple(fid_modes(cfg, df))))
        parts.append(text)
    return "\n\n".join(parts) + "\n"


def tidy_table(cfg: SuiteConfig, df: pd.DataFrame) -> pd.DataFrame:
    """table.csv: one row per (model, sampled resolution, metric, FID implementation), over seed sets."""
    out = []
    for mode, sub, col in _sections(cfg, df):
        agg = aggregate(sub)
        t = agg[KEYS + ["seed_sets", "n"]].assign(metric=col, mean=agg[col], std=agg[f"{col}_std"],
                                                  fid_impl=fid_impl(mode) if col in INCEPTION_METRICS else "")
        out.append(t[t["mean"].notna()])
    return pd.concat(out, ignore_index=True)[TIDY_COLUMNS]


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$"}


def _tex(s: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in s)


def latex_tables(cfg: SuiteConfig, df: pd.DataFrame, reference: Optional[pd.DataFrame] = None) -> str:
    """table.tex: one booktabs tabular per metric, model x sampled resolution, best per column in bold.

    "Best" is among this run's trained models, as in the generated findings:
    bilinear baselines upsample other images, and the paper's rows used another
    FID implementation and N (they are listed below a rule), so neither is bolded.
    """
    n = int(df["n"].min())
    several = len(fid_modes(cfg, df)) > 1
    out = [f"% {cfg.name}: generated by `bench report` from metrics.csv; needs \\usepackage{{booktabs}}.", ""]
    for mode, sub, col in _sections(cfg, df):
        label, lower, fmt = METRICS[col]
        res, rows = table_rows(sub, col, same_protocol(reference, mode))
        run = [r for r in rows if r["kind"] == "run"]
        run = [r for r in run if r["adapter"] != "bilinear"] or run
        best = {}
        for x in res:
            vals = [r["mean"][x] for r in run if x in r["mean"]]
            if vals:
                best[x] = fmt.format(min(vals) if lower else max(vals))
        caption = (f"{_tex(cfg.name)}: {_tex(label)} ({'lower' if lower else 'higher'} is better) by sampled "
                   f"resolution; {_tex(fid_impl(mode)) if col in INCEPTION_METRICS else 'pixels'}, N={n:,} per seed set"
                   f"{', biased at this N' if col == 'fid' and n < BIASED_FID_N else ''}; best trained model in bold "
                   "(bilinear baselines and published rows are not ranked).")
        if any(r["kind"] == "paper" for r in rows):
            caption += " Rows marked paper: published numbers, " + "; ".join(
                f"{_tex(r['label'].removeprefix('paper: '))}: {_tex(r['impl'])}, N={_tex(r['N'])}"
                for r in rows if r["kind"] == "paper") + "."
        lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}",
                 rf"\label{{tab:{cfg.name}-{col.replace('_', '-')}"
                 rf"{f'-{mode}' if several and col in INCEPTION_METRICS else ''}}}",
                 r"\begin{tabular}{ll" + "r" * len(res) + "}", r"\toprule",
                 rf" & & \multicolumn{{{len(res)}}}{{c}}{{sampled resolution (px)}} \\",
                 rf"\cmidrule(lr){{3-{len(res) + 2}}}",
                 "model & train (px) & " + " & ".join(map(str, res)) + r" \\", r"\midrule"]
        previous = "run"
        for r in rows:
            if r["kind"] != previous:
                lines.append(r"\midrule")
                previous = r["kind"]
            cells = []
            for x in res:
                c = _tex(r["cell"].get(x, ""))
                if r in run and x in r["mean"] and fmt.format(r["mean"][x]) == best.get(x):
                    c = r"\textbf{" + c + "}"
                cells.append(c)
            lines.append(" & ".join([_tex(r["label"]), _tex(r["train"]).replace("-", "--"), *cells]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
        out += lines
    return "\n".join(out)


def model_card_table(run_dir: Path) -> str:
    """Markdown table of the trained models' cards (parameters, GFLOPs, memory), if any."""
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
    return ("## Model cards\n\nGFLOPs per image and denoiser evaluation, as computed (spectral layers as matrix products); "
            f"memory: {method}.\n\n" + "\n".join(lines) + "\n")


# ----------------------------------------------------------------------- index


def environment_line(run_dir: Path) -> str:
    path = run_dir / "environment.json"
    if not path.is_file():
        return "No environment.json in the run directory: device, versions and git commit unknown."
    env = json.loads(path.read_text())
    device = env.get("device", "?") + (f" ({env['device_name']})" if env.get("device_name") else "")
    commit = env.get("git_commit") or "unknown"
    dirty = ", with uncommitted changes" if env.get("git_dirty") else ""
    v = env.get("versions", {})
    return (f"Device {device}; torch {v.get('torch', '?')}, clean-fid {v.get('clean-fid', '?')}, "
            f"Python {env.get('python', '?')}; git commit `{commit[:12]}`{dirty}; started {env.get('time', '?')} "
            "([environment.json](environment.json)).")


def _fig2_caption(df: pd.DataFrame, drawn: int, reference: Optional[pd.DataFrame]) -> str:
    agg = aggregate(df)
    band = train_band(agg[agg["adapter"] != "bilinear"])
    top = int(agg["sample_resolution"].max())
    mode = df["fid_mode"].iloc[0]
    parts = [f"FID mode: {fid_impl(mode)}, the suite's primary (the first of metrics.fid_mode)"]
    if band:
        parts.append(f"training resolutions {band[0]}-{band[1]} px shaded, dashed line at {band[1]} px")
        marks = [f"{k:g}x = {band[1] * k:.0f} px" for k in (1.66, 2.0) if band[1] * k <= top]
        if marks:
            parts.append("grey lines at " + " and ".join(marks))
    sets = int(agg["seed_sets"].max())
    parts.append(f"error bars: std over {sets} seed sets" if sets > 1 else "one seed set, so no error bars")
    if drawn:
        parts.append(f"hollow squares: {drawn} published FID values (their own implementation and N; see the table)")
    elif reference is not None and len(reference) and not len(same_protocol(reference, mode)):
        parts.append(f"the published FID values are not drawn: their protocol is not {fid_impl(mode)}")
    elif reference is not None and len(reference):
        parts.append("no published value lies inside this run's resolution range")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def index_markdown(run_dir: Path, cfg: SuiteConfig, df: pd.DataFrame, reference: Optional[pd.DataFrame],
                   findings: list[str], fig2_drawn: int, fig5: bool, fig5_notes: list[str],
                   tables: str) -> str:
    from bench.figures import fig5_models

    res = int(df["sample_resolution"].max())
    col = lead_metrics(df)[0]
    lead = METRICS[col][0] + (f", {fid_impl(df['fid_mode'].iloc[0])}" if col in INCEPTION_METRICS else "")
    parts = [f"# {cfg.name}: report", cfg.description,
             f"Run `{run_dir.name}` of the suite in [suite.yaml](suite.yaml). {environment_line(run_dir)} "
             "Every number here comes from [metrics.csv](metrics.csv) (one row per model, resolution, seed set "
             "and FID mode); "
             "`bench report RUN_DIR` rebuilds this page from the run directory.",
             f"## Findings\n\nGenerated from the numbers (lead metric: {lead}); no sentence here is written by "
             "hand.\n\n" + "\n".join(f"- {s}" for s in findings),
             "## Figure 2: sampled resolution vs FID and KID\n\n![Figure 2](fig2.png)\n\n"
             + _fig2_caption(df, fig2_drawn, reference),
             "## Samples (Figures 1 and 3)\n\n![samples](samples.png)\n\nEvery model at every sampled resolution, "
             "from the first seed set; a column shows the same seeds in every row, at native relative size."]
    if fig5:
        bilinear, dfus, _ = fig5_models(cfg)
        text = (f"## Figure 5: bilinear upsampling vs DFU vs real at {res} px\n\n![Figure 5](fig5.png)\n\n"
                f"Rows: {bilinear} (bilinear), {', '.join(dfus)} (DFU), real images from the run's references.")
        parts.append(text + "".join(f" Note: {n}." for n in fig5_notes))
    else:
        why = fig5_models(cfg)[2] or "; ".join(fig5_notes)
        parts.append(f"## Figure 5\n\nNot drawn: {why}.")
    body = tables.split("\n", 1)[1].strip()  # table.md without its title
    parts.append("## Tables\n\n[table.md](table.md), [table.csv](table.csv) (tidy, one row per model, resolution "
                 "and metric), [table.tex](table.tex) (booktabs, best trained model per column in bold).\n\n"
                 + body.replace("\n## ", "\n### "))
    return "\n\n".join(p for p in parts if p) + "\n"


# ----------------------------------------------------------------------- write


def write_report(run_dir: Path, cfg: SuiteConfig, rows: list[dict], report_dir: Optional[Path] = None) -> Path:
    """Write the report (REPORT_FILES) into the run dir and, given report_dir, into report_dir/<suite>/.

    Returns the folder that holds the copy (report_dir/<suite>) or the run dir.
    """
    from bench.figures import fig5_models, fig5_panel, plot_metrics, sample_panel
    from bench.summary import summarize

    run_dir = Path(run_dir)
    df_all = _frame(rows)
    modes = fid_modes(cfg, df_all)
    df = of_mode(df_all, modes[0])  # figures and findings: the primary FID mode
    rc = cfg.report
    reference = reference_frame(rc.reference, rc.reference_models)
    panels = " and KID" if "kid" in metric_columns(df) else ""
    drawn = plot_metrics(df, run_dir / "fig2.png", f"{cfg.name}: sampled resolution vs FID{panels} ({modes[0]} mode)",
                         same_protocol(reference, modes[0]))
    sample_panel(run_dir, df, run_dir / "samples.png")
    drawn5, notes = fig5_models(cfg)[2] is None, []
    if drawn5:
        drawn5, notes = fig5_panel(run_dir, cfg, df, run_dir / "fig5.png")
    if not drawn5:  # an earlier report's figure would describe models or samples this run lacks
        (run_dir / "fig5.png").unlink(missing_ok=True)
    tables = markdown_table(cfg, df_all, reference)
    cards = model_card_table(run_dir)
    tables += ("\n" + cards if cards else "") + (
        f"\nRun `{run_dir.name}`: `environment.json` has versions, device and git commit; "
        "`metrics.csv` has every number per seed set.\n")
    write_text(run_dir / "table.md", tables)
    with atomic_path(run_dir / "table.csv") as tmp:
        tidy_table(cfg, df_all).to_csv(tmp, index=False)
    write_text(run_dir / "table.tex", latex_tables(cfg, df_all, reference))
    # pair paper models with suite models by name where the suite gives no mapping
    known = labels().get(rc.reference, [])
    mapping = rc.reference_models or {m.name: m.name for m in cfg.models if m.name in known}
    # the paper comparison uses the run's mode of the paper's protocol, whatever the primary is
    paper_mode = next((m for m in modes if len(same_protocol(reference, m))), None)
    shown = reference_in_range(same_protocol(reference, paper_mode), df["sample_resolution"]) \
        if paper_mode else pd.DataFrame()
    finetunes = {m.name: m.finetune.base for m in cfg.models if m.finetune is not None}
    findings = summarize(aggregate(df), lead_metrics(df)[0], shown if len(shown) else None, mapping,
                         finetunes=finetunes, paper_agg=aggregate(of_mode(df_all, paper_mode)) if paper_mode else None)
    if not len(shown):
        findings.append(reference_note(cfg, of_mode(df_all, paper_mode or modes[0]), reference, tuple(modes))[1])
    write_text(run_dir / "index.md", index_markdown(run_dir, cfg, df, reference, findings, drawn, drawn5, notes,
                                                    tables))
    if report_dir is None:
        return run_dir
    dest = Path(report_dir) / cfg.name
    for name in REPORT_FILES + COPIED_FILES:
        if (run_dir / name).is_file():
            with atomic_path(dest / name) as tmp:
                shutil.copyfile(run_dir / name, tmp)
        elif name in REPORT_FILES:
            (dest / name).unlink(missing_ok=True)
    return dest


def summary_table(cfg: SuiteConfig, rows: list[dict]):
    from rich.table import Table

    df = _frame(rows)
    df = of_mode(df, fid_modes(cfg, df)[0])
    col = lead_metrics(df)[0]
    t = metric_table(aggregate(df), col)
    table = Table(title=f"{cfg.name}: {METRICS[col][0]} ({df['fid_mode'].iloc[0]}, N={int(df['n'].min())}) "
                        "by sampled resolution")
    for c in t.columns:
        table.add_column(str(c), justify="left" if c in ("model", "train_resolutions") else "right")
    for _, row in t.iterrows():
        table.add_row(*[str(row[c]) or "-" for c in t.columns])
    return table
