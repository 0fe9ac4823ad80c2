"""Run reports: index.md with the figures, tables and findings, and where the report goes.

Everything here is derived from a run directory's files (metrics.csv, samples,
kept references, model cards, the resolved suite, the environment record; see
bench.rundir) and the paper's numbers that ship with the package, so `bench
report RUN_DIR` rebuilds a report without recomputing anything. A run may hold
numbers in two FID modes (the `fid_mode` column): tables get one section per
mode, figures and findings use the primary mode (the suite's first), and the
paper's numbers stand only beside the mode of their own protocol
(bench.paper.PROTOCOL).

The parts: reading and aggregating metrics.csv (bench.results), figures
(bench.figures), tables (bench.tables), generated findings (bench.summary).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pandas as pd
from rich.table import Table

from bench.config import SuiteConfig
from bench.errors import BenchError
from bench.figures import (blank_cells, fig5_models, fig5_panel, panel_columns, panel_inputs, plot_metrics,
                           sample_panel)
from bench.integrity import records, resume_command
from bench.io import atomic_path, write_text
from bench.metrics import COLUMNS, INCEPTION_COLUMNS, fid_impl
from bench.paper import labels, reference_frame
from bench.results import (aggregate, fid_modes, frame, interval_words, lead_metrics, of_mode, reference_in_range,
                           same_protocol, train_band, trained)
from bench.rundir import RunDir
from bench.summary import summarize
from bench.tables import latex_tables, markdown_table, metric_table, model_card_table, reference_note, tidy_table


def check_shown_samples(run: RunDir, rows: list[dict]) -> None:
    """`bench report`, before it writes: every samples file the panel shows that the run recorded
    (checksums.json) is still there. Files a report does not show (other seed sets and training seeds,
    checkpoints, references: Fig. 5 notes a missing row) may be deleted to save space; a run made
    before the record gets blank cells where its files are missing."""
    recorded = records(run)
    missing = [path for path in panel_inputs(run, frame(rows)).values()
               if not path.is_file() and run.relative(path) in recorded]
    if missing:
        more = f" (and {len(missing) - 1} more samples files)" if len(missing) > 1 else ""
        raise BenchError(f"{missing[0]} is missing{more}: the samples panel shows it; resume the run with "
                         f"{resume_command(run)}, which remakes it, then run bench report again")


def write_report(run: RunDir | Path, cfg: SuiteConfig, rows: list[dict], report_dir: Optional[Path] = None) -> Path:
    """Write the report (rundir.REPORT_FILES) into the run dir and, given report_dir, into report_dir/<suite>/.

    Returns the folder that holds the copy (report_dir/<suite>) or the run dir.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    df_all = frame(rows)
    modes = fid_modes(cfg.metrics.fid_modes, df_all)
    df = of_mode(df_all, modes[0])  # figures and findings: the primary FID mode
    rc = cfg.report
    reference = reference_frame(rc.reference, rc.reference_models)
    shown_cols = panel_columns(df)
    what = " and ".join(COLUMNS[c].label for c in shown_cols)
    mode = f" ({modes[0]} mode)" if set(shown_cols) & INCEPTION_COLUMNS else ""
    marks = {m.name: [(m.finetune.target_resolution, f"{m.name}: fine-tune target {m.finetune.target_resolution} px")]
             for m in cfg.models if m.finetune is not None}
    drawn = plot_metrics(df, run.fig2, f"{cfg.name}: sampled resolution vs {what}{mode}",
                         same_protocol(reference, modes[0]), marks)
    blank = sample_panel(run, df, run.samples_panel)
    fig5 = run.fig5
    drawn5, notes = fig5_models(df, cfg)[2] is None, []
    if drawn5:
        drawn5, notes = fig5_panel(run, cfg, df, fig5)
    if not drawn5:  # an earlier report's figure would describe models or samples this run lacks
        fig5.unlink(missing_ok=True)
    tables = markdown_table(cfg, df_all, reference)
    cards = model_card_table(run)
    tables += ("\n" + cards if cards else "") + (
        f"\nRun `{run.name}`: `{run.environment_json.name}` has versions, device and git commit; "
        f"`{run.metrics_csv.name}` has every number per seed set.\n")
    write_text(run.table_md, tables)
    with atomic_path(run.table_csv) as tmp:
        tidy_table(cfg, df_all).to_csv(tmp, index=False)
    write_text(run.table_tex, latex_tables(cfg, df_all, reference))
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
    write_text(run.index_md, index_markdown(run, cfg, df, reference, findings, drawn, drawn5, notes,
                                                           tables, blank))
    if report_dir is None:
        return run.root
    dest = Path(report_dir) / cfg.name
    for path in run.report_files() + run.copied_files():
        if path.is_file():
            with atomic_path(dest / path.name) as tmp:
                shutil.copyfile(path, tmp)
        elif path in run.report_files():
            (dest / path.name).unlink(missing_ok=True)
    return dest


def summary_table(cfg: SuiteConfig, rows: list[dict]) -> Table:
    """The lead metric by model and sampled resolution, for the console at the end of a run."""
    df = frame(rows)
    df = of_mode(df, fid_modes(cfg.metrics.fid_modes, df)[0])
    col = lead_metrics(df)[0]
    t = metric_table(aggregate(df), col)
    table = Table(title=f"{cfg.name}: {COLUMNS[col].label} ({df['fid_mode'].iloc[0]}, N={int(df['n'].min())}) "
                        "by sampled resolution")
    for c in t.columns:
        table.add_column(str(c), justify="left" if c in ("model", "train_resolutions") else "right")
    for _, row in t.iterrows():
        table.add_row(*[str(row[c]) or "-" for c in t.columns])
    return table


# ----------------------------------------------------------------------- index


def _link(run: RunDir, path: Path, text: Optional[str] = None) -> str:
    """A Markdown link from index.md (in the run directory) to one of the run's files."""
    return f"[{text or path.name}]({run.relative(path)})"


def environment_line(run: RunDir) -> str:
    path = run.environment_json
    if not path.is_file():
        return f"No {path.name} in the run directory: device, versions and git commit unknown."
    env = json.loads(path.read_text())
    device = env.get("device", "?") + (f" ({env['device_name']})" if env.get("device_name") else "")
    commit = env.get("git_commit") or "unknown"
    dirty = ", with uncommitted changes" if env.get("git_dirty") else ""
    v = env.get("versions", {})
    return (f"Device {device}; torch {v.get('torch', '?')}, clean-fid {v.get('clean-fid', '?')}, "
            f"Python {env.get('python', '?')}; git commit `{commit[:12]}`{dirty}; started {env.get('time', '?')} "
            f"({_link(run, path)}).")


def _fig2_caption(df: pd.DataFrame, drawn: int, reference: Optional[pd.DataFrame]) -> str:
    agg = aggregate(df)
    band = train_band(trained(agg))
    top = int(agg["sample_resolution"].max())
    mode = df["fid_mode"].iloc[0]
    inception = bool(set(panel_columns(df)) & INCEPTION_COLUMNS)
    parts = [f"FID mode: {fid_impl(mode)}, the suite's primary (the first of metrics.fid_mode)"] if inception else []
    parts.append("top row: the trained models on a linear axis fitted to them (a black line marks zero where it "
                 "is in range; nothing is clipped)" + ("; bottom row: the baselines on their own axis"
                                                       if (agg["role"] == "baseline").any() else ""))
    parts.append("the coloured strip at the foot of a panel spans each model's own training resolutions, ticks "
                 "at each; a dashed line in a model's colour marks its fine-tune target resolution")
    if band:
        marks = [f"{k:g}x = {band[1] * k:.0f} px" for k in (1.66, 2.0) if band[1] * k <= top]
        if marks:
            parts.append(f"grey lines at {' and '.join(marks)} (of the largest training resolution, {band[1]} px)")
    sets = int(agg["seed_sets"].max())
    parts.append(f"error bars: {interval_words(agg)}, over {sets} seed set{'s' if sets > 1 else ''}")
    if drawn:
        parts.append(f"hollow squares: {drawn} published FID values (their own implementation and N; see the table)")
    elif reference is not None and len(reference) and not len(same_protocol(reference, mode)):
        parts.append(f"the published FID values are not drawn: their protocol is not {fid_impl(mode)}")
    elif reference is not None and len(reference):
        parts.append("no published value lies inside this run's resolution range")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


# characters that would make Markdown or HTML of a suite's text: entities read as the character
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "&#91;", "]": "&#93;", "`": "&#96;",
                "*": "&#42;", "_": "&#95;", "\\": "&#92;", "|": "&#124;", "!": "&#33;"}


def markdown_text(text: str) -> str:
    """Text from a suite (its description) as one Markdown paragraph that reads as written: no HTML,
    heading, list, link, image or emphasis of its own."""
    text = " ".join(text.split())
    text = "".join(_MD_ENTITIES.get(c, c) for c in text)
    if text[:1] in ("#", "-", "+", "=", ">") or text.split(" ", 1)[0].rstrip(".)").isdigit():
        text = "&#8203;" + text  # a zero-width space: the first character starts no block
    return text


def index_markdown(run: RunDir, cfg: SuiteConfig, df: pd.DataFrame, reference: Optional[pd.DataFrame],
                   findings: list[str], fig2_drawn: int, fig5: bool, fig5_notes: list[str],
                   tables: str, blank: Sequence[str] = ()) -> str:
    res = int(df["sample_resolution"].max())
    col = lead_metrics(df)[0]
    lead = COLUMNS[col].label + (f", {fid_impl(df['fid_mode'].iloc[0])}" if col in INCEPTION_COLUMNS else "")
    figure = lambda path, alt: f"![{alt}]({run.relative(path)})"  # noqa: E731
    parts = [f"# {cfg.name}: report", markdown_text(cfg.description),
             f"Run `{run.name}` of the suite in {_link(run, run.suite_yaml)}. {environment_line(run)} "
             f"Every number here comes from {_link(run, run.metrics_csv)} (one row per model, resolution, seed set "
             "and FID mode); "
             "`bench report RUN_DIR` rebuilds this page from the run directory.",
             f"## Findings\n\nGenerated from the numbers (lead metric: {lead}); no sentence here is written by "
             f"hand. {interval_words(aggregate(df))}; a model is called better, or best, only where the intervals "
             "are apart.\n\n" + "\n".join(f"- {s}" for s in findings),
             f"## Figure 2: sampled resolution vs {' and '.join(COLUMNS[c].label for c in panel_columns(df))}"
             f"\n\n{figure(run.fig2, 'Figure 2')}\n\n"
             + _fig2_caption(df, fig2_drawn, reference),
             f"## Samples (Figures 1 and 3)\n\n{figure(run.samples_panel, 'samples')}\n\nEvery model at every sampled "
             "resolution, from the first seed set: the same 4 seeds in every cell, at native relative size, "
             "enlarged by the whole factor the caption states."
             + (f" Blank cells: {blank_cells(blank)}." if blank else "")]
    baseline, spectral, why = fig5_models(df, cfg)
    if fig5:
        text = (f"## Figure 5: baseline vs spectral models vs real at {res} px\n\n{figure(run.fig5, 'Figure 5')}"
                f"\n\nRows: {baseline} (baseline), {', '.join(spectral)} (spectral), real images from the run's "
                "references.")
        parts.append(text + "".join(f" Note: {n}." for n in fig5_notes))
    else:
        parts.append(f"## Figure 5\n\nNot drawn: {why or '; '.join(fig5_notes)}.")
    body = tables.split("\n", 1)[1].strip()  # table.md without its title
    parts.append(f"## Tables\n\n{_link(run, run.table_md)}, {_link(run, run.table_csv)} "
                 "(tidy, one row per model, resolution and metric), "
                 f"{_link(run, run.table_tex)} (booktabs, best trained model per column in bold where its 95% interval is "
                 "apart from the others').\n\n"
                 + body.replace("\n## ", "\n### "))
    return "\n\n".join(p for p in parts if p) + "\n"
