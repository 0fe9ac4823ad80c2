"""The report's tables: one per metric and FID mode, as Markdown, tidy CSV and LaTeX, plus the model cards.

Rows are models, columns sampled resolutions, cells mean ± std over seed sets
and the 95% interval in brackets (bench.results.aggregate), labelled and
formatted as the metric table says (bench.metrics.COLUMNS). The LaTeX bold marks
a best trained model only where its interval is apart from every other trained
model's, as the findings do (bench.summary.best_models). With N below 5,000 per set KID leads, as FID is biased.
Published numbers (bench.paper) join only the FID table of the mode of their own
protocol, with a note that says where this table's numbers and theirs come from.
"""
from __future__ import annotations

import json
from typing import Optional

import pandas as pd

from bench.config import SuiteConfig
from bench.metrics import COLUMNS, FID_MODES, INCEPTION_COLUMNS, fid_impl
from bench.paper import describe_n, labels
from bench.results import (BIASED_FID_N, KEYS, aggregate, fid_modes, interval_words, lead_metrics, of_mode,
                           reference_in_range, same_protocol)
from bench.rundir import METRICS as METRICS_FILE
from bench.rundir import RunDir

TIDY_COLUMNS = ["model", "train_resolutions", "sample_resolution", "metric", "mean", "std", "ci_low", "ci_high",
                "interval", "train_seeds", "seed_sets", "n", "fid_impl"]


def _cell(row: pd.Series, col: str) -> str:
    v = row[col]
    if pd.isna(v):
        return ""
    fmt = COLUMNS[col].fmt
    sd, lo, hi = row.get(f"{col}_std"), row.get(f"{col}_lo"), row.get(f"{col}_hi")
    ci = "" if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) else f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    return fmt.format(v) + ("" if sd is None or pd.isna(sd) else " ± " + fmt.format(sd)) + ci


def metric_table(agg: pd.DataFrame, col: str) -> pd.DataFrame:
    """model x sampled resolution, cells 'mean ± std' over seed sets."""
    agg = agg.assign(cell=agg.apply(lambda r: _cell(r, col), axis=1))
    t = agg.pivot_table(index=["model", "train_resolutions"], columns="sample_resolution", values="cell",
                        aggfunc="first", sort=False)
    t.columns = [f"{int(c)}" for c in t.columns]
    return t.reset_index().fillna("")


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
                     "role": g["role"].iloc[0],
                     "mean": {r: by_res[r][col] for r in res if r in by_res and pd.notna(by_res[r][col])},
                     "ci": {r: (by_res[r][f"{col}_lo"], by_res[r][f"{col}_hi"]) for r in res if r in by_res
                            and pd.notna(by_res[r].get(f"{col}_lo")) and pd.notna(by_res[r].get(f"{col}_hi"))},
                     "cell": {r: _cell(by_res[r], col) for r in res if r in by_res},
                     "impl": fid_impl(df["fid_mode"].iloc[0]) if col in INCEPTION_COLUMNS else "",
                     "N": f"{int(g['n'].min()):,}",
                     "source": "this run"})
    for label, g in (ref.groupby("label", sort=False) if len(ref) else []):
        rows.append({"label": label, "train": str(g["train_resolutions"].iloc[0]), "kind": "paper", "role": "",
                     "mean": dict(zip(g["sample_resolution"].astype(int), g["fid"])), "ci": {},
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
    text = FID_MODES[mode].text if mode in FID_MODES else f"`{mode}` mode"
    ours = (f"This table's FID is {text} (`fid_mode` {mode} in {METRICS_FILE}), "
            f"N = {int(df['n'].min()):,} per seed set.")
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
    modes = fid_modes(cfg.metrics.fid_modes, df)
    for mode in modes:
        sub = of_mode(df, mode)
        for col in lead_metrics(sub):
            if mode == modes[0] or col in INCEPTION_COLUMNS:
                yield mode, sub, col


def markdown_table(cfg: SuiteConfig, df: pd.DataFrame, reference: Optional[pd.DataFrame] = None) -> str:
    modes = fid_modes(cfg.metrics.fid_modes, df)
    agg = aggregate(of_mode(df, modes[0]))
    n, sets = int(df["n"].min()), int(agg["seed_sets"].max())
    parts = [f"# {cfg.name}: metrics by sampled resolution\n",
             f"N = {n} generated images per model, resolution and seed set ({sets} seed set"
             f"{'s, mean ± std' if sets > 1 else ''}), against {int(df['n_ref'].min()) if 'n_ref' in df else n} "
             f"real images; Inception metrics in {' and in '.join(fid_impl(m) for m in modes)}"
             f"{', one section each' if len(modes) > 1 else ''}. Columns are sampled resolutions in px. "
             f"In brackets: {interval_words(agg)}."]
    if n < BIASED_FID_N:
        parts.append(f"N < {BIASED_FID_N:,}: FID is biased upward by an amount that depends on the model, "
                     "so KID (unbiased) leads; read FID only as a ranking at equal N.")
    for mode, sub, col in _sections(cfg, df):
        label, lower, ranked = COLUMNS[col].label, COLUMNS[col].lower_is_better, COLUMNS[col].ranked
        label += f", {mode} mode" if col in INCEPTION_COLUMNS else ""
        res, rows = table_rows(sub, col, same_protocol(reference, mode))
        extra = any(r["kind"] == "paper" for r in rows)
        head = ["model", "train_resolutions", *map(str, res)] + (["FID implementation", "N", "source"] if extra else [])
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r["label"], r["train"], *[r["cell"].get(x, "") for x in res]]
            cells += [r["impl"], r["N"], r["source"]] if extra else []
            lines.append("| " + " | ".join(cells) + " |")
        note = " (biased at this N)" if col == "fid" and n < BIASED_FID_N else ""
        better = ("lower is better" if lower else "higher is better") if ranked else "compare with the exact answer"
        text = f"## {label}{note}, {better}\n\n" + "\n".join(lines)
        if col == "fid":
            text += "\n\n" + " ".join(reference_note(cfg, sub, reference, tuple(modes)))
        parts.append(text)
    return "\n\n".join(parts) + "\n"


def tidy_table(cfg: SuiteConfig, df: pd.DataFrame) -> pd.DataFrame:
    """table.csv: one row per (model, sampled resolution, metric, FID implementation), over seed sets."""
    out = []
    for mode, sub, col in _sections(cfg, df):
        agg = aggregate(sub)
        t = agg[KEYS + ["seed_sets", "train_seeds", "n", "interval"]].assign(
            metric=col, mean=agg[col], std=agg[f"{col}_std"], ci_low=agg[f"{col}_lo"], ci_high=agg[f"{col}_hi"],
            fid_impl=fid_impl(mode) if col in INCEPTION_COLUMNS else "")
        out.append(t[t["mean"].notna()])
    return pd.concat(out, ignore_index=True)[TIDY_COLUMNS]


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$"}


def _tex(s: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in s)


def latex_tables(cfg: SuiteConfig, df: pd.DataFrame, reference: Optional[pd.DataFrame] = None) -> str:
    """table.tex: one booktabs tabular per metric, model x sampled resolution, best per column in bold.

    "Best" is among this run's trained models, as in the generated findings, and only
    where the best mean's 95% interval is apart from every other trained model's:
    bilinear baselines upsample other images, and the paper's rows used another
    FID implementation and N (they are listed below a rule), so neither is bolded.
    """
    n = int(df["n"].min())
    several = len(fid_modes(cfg.metrics.fid_modes, df)) > 1
    out = [f"% {cfg.name}: generated by `bench report` from {METRICS_FILE}; needs \\usepackage{{booktabs}}.", ""]
    for mode, sub, col in _sections(cfg, df):
        label, lower, fmt = COLUMNS[col].label, COLUMNS[col].lower_is_better, COLUMNS[col].fmt
        res, rows = table_rows(sub, col, same_protocol(reference, mode))
        run = [r for r in rows if r["kind"] == "run"]
        run = [r for r in run if r["role"] != "baseline"] or run
        best = {}  # resolution -> the row that is best there, where its interval is apart from the others'
        for x in res if COLUMNS[col].ranked else ():
            have = [r for r in run if x in r["mean"]]
            if not have:
                continue
            top = (min if lower else max)(have, key=lambda r: r["mean"][x])
            ci = top["ci"].get(x)
            apart = ci is not None and all(
                o["ci"].get(x) is not None and (ci[1] < o["ci"][x][0] or o["ci"][x][1] < ci[0])
                for o in have if o is not top)
            if apart:
                best[x] = top
        caption = (f"{_tex(cfg.name)}: {_tex(label)} ({'lower' if lower else 'higher'} is better) by sampled "
                   f"resolution; {_tex(fid_impl(mode)) if col in INCEPTION_COLUMNS else 'pixels'}, N={n:,} per seed set"
                   f"{', biased at this N' if col == 'fid' and n < BIASED_FID_N else ''}; in brackets "
                   f"{_tex(interval_words(aggregate(sub)))}; "
                   + ("best trained model in bold where its interval is apart from every other trained model's, "
                      "elsewhere the difference is not resolved (bilinear baselines and published rows are not "
                      "ranked)." if COLUMNS[col].ranked else "not ranked: compare with the exact answer."))
        if any(r["kind"] == "paper" for r in rows):
            caption += " Rows marked paper: published numbers, " + "; ".join(
                f"{_tex(r['label'].removeprefix('paper: '))}: {_tex(r['impl'])}, N={_tex(r['N'])}"
                for r in rows if r["kind"] == "paper") + "."
        lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}",
                 rf"\label{{tab:{cfg.name}-{col.replace('_', '-')}"
                 rf"{f'-{mode}' if several and col in INCEPTION_COLUMNS else ''}}}",
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
                if best.get(x) is r:
                    c = r"\textbf{" + c + "}"
                cells.append(c)
            lines.append(" & ".join([_tex(r["label"]), _tex(r["train"]).replace("-", "--"), *cells]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
        out += lines
    return "\n".join(out)


def model_card_table(run: RunDir) -> str:
    """Markdown table of the trained models' cards (parameters, GFLOPs, memory), if any."""
    cards = {name: json.loads(path.read_text()) for name, path in run.model_cards().items()}
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
        how = c["mode"] + (f", {c['spectral_product']} product" if c.get("spectral_product") else "")
        lines.append("| " + " | ".join([name, f"{c['arch']} ({how})", f"{c['params_total']:,}",
                                         f"{c['params_spectral']:,}", f"{c['params_spatial']:,}", *flops, mem_s]) + " |")
    method = next((c["train_step_memory"]["method"] for c in cards.values() if c.get("train_step_memory")), "")
    return ("## Model cards\n\nGFLOPs per image and denoiser evaluation, as computed (spectral layers as matrix products); "
            f"memory: {method}.\n\n" + "\n".join(lines) + "\n")
