"""The report's findings, as sentences generated from the aggregated numbers.

`summarize` is a pure function of the aggregate frame (one row per model and
sampled resolution, as `bench.results.aggregate` makes it) and, optionally, the
paper's numbers; index.md prints what it returns, so no finding in a report is
written by hand. Two values tie when they print the same at the metric's
precision; a missing value is named, never skipped silently. Models are told
apart by role (models.adapters.ROLES): baselines are compared with the trained
models, spectral models with spatial ones trained at the same resolutions.
"""
from __future__ import annotations

from typing import Optional

import pandas as pd

from bench.metrics import COLUMNS, fid_impl
from bench.paper import describe_n
from bench.results import parse_resolutions, with_roles

COLLAPSE_FACTOR = 3.0


def max_train(train_resolutions) -> Optional[int]:
    """'16/24/32' -> 32; empty or missing -> None."""
    res = parse_resolutions(train_resolutions)
    return max(res) if res else None


def join(items: list[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def px(res: list[int]) -> str:
    return join([str(r) for r in res]) + " px"


def pairs(agg: pd.DataFrame) -> list[tuple[str, str]]:
    """(spectral, multi-res spatial) model pairs trained at the same resolutions: DFU vs multi-res UNet.

    Spectral: role `spectral`; multi-res spatial: role `spatial` with more than one
    training resolution. Pairing on equal training resolutions keeps the
    comparison to the one thing the paper varies, the architecture.
    """
    models = with_roles(agg).drop_duplicates("model")
    spectral = models[models["role"] == "spectral"]
    spatial = models[(models["role"] == "spatial") & models["train_resolutions"].map(
        lambda t: len(parse_resolutions(t)) > 1)]
    return [(d, u) for d, dt in zip(spectral["model"], spectral["train_resolutions"])
            for u, ut in zip(spatial["model"], spatial["train_resolutions"]) if str(dt) == str(ut)]


class _Values:
    """Lookup and comparison of one metric's means by (model, resolution)."""

    def __init__(self, agg: pd.DataFrame, metric: str):
        self.metric = metric
        c = COLUMNS[metric]
        self.label, self.lower, self.fmt_s = c.label, c.lower_is_better, c.fmt
        self.v = {(m, int(r)): float(x) for m, r, x in zip(agg["model"], agg["sample_resolution"], agg[metric])
                  if pd.notna(x)}

    def fmt(self, x: float) -> str:
        return self.fmt_s.format(x)

    def get(self, model: str, res: int) -> Optional[float]:
        return self.v.get((model, res))

    def cmp(self, a: float, b: float) -> int:
        """1 if a is better than b, -1 if worse, 0 if they print the same."""
        if self.fmt(a) == self.fmt(b):
            return 0
        return 1 if (a < b) == self.lower else -1


def _best_sentence(V: _Values, models: list[str], grid: list[int], n: str) -> str:
    parts = []
    for r in grid:
        vals = {m: V.get(m, r) for m in models if V.get(m, r) is not None}
        if not vals:
            parts.append(f"{r} px no value")
            continue
        top = min(vals.values()) if V.lower else max(vals.values())
        best = [m for m, x in vals.items() if V.cmp(x, top) == 0]
        parts.append(f"{r} px {' and '.join(best)}{' tied' if len(best) > 1 else ''} ({V.fmt(top)})")
    direction = "lower" if V.lower else "higher"
    return f"Best trained model by {V.label} ({direction} is better{n}) at each sampled resolution: {'; '.join(parts)}."


def _baseline_sentence(V: _Values, base: str, adapter: str, models: list[str], grid: list[int]) -> str:
    better, worse, missing = [], [], []
    for r in grid:
        b = V.get(base, r)
        vals = [V.get(m, r) for m in models if V.get(m, r) is not None]
        if b is None or not vals:
            missing.append(r)
            continue
        top = min(vals) if V.lower else max(vals)
        (better if V.cmp(b, top) == 1 else worse).append(r)
    what = f"{adapter[:1].upper()}{adapter[1:]} baseline {base}"  # 'Bilinear baseline bilinear-up'
    if better:
        s = f"{what} beats the best trained model at {px(better)}"
        s += f"; it does not at {px(worse)}" if worse else ""
    else:
        s = f"{what} does not beat the best trained model at any sampled resolution"
    if missing:
        s += f"; not compared at {px(missing)} (missing values)"
    return s + "."


def _pair_sentence(V: _Values, d: str, u: str, train: str, grid: list[int], head: Optional[str] = None) -> str:
    top = max_train(train)
    above = [r for r in grid if r > top]

    def compare(res):
        wins: dict[int, list[str]] = {1: [], -1: [], 0: []}
        missing = []
        for r in res:
            a, b = V.get(d, r), V.get(u, r)
            if a is None or b is None:
                missing.append(f"{r} px (no value for {d if a is None else u})")
                continue
            c = V.cmp(a, b)
            wins[c].append(f"{r} px ({V.fmt(a)})" if c == 0 else f"{r} px ({d} {V.fmt(a)}, {u} {V.fmt(b)})")
        return wins, missing

    s = (head or f"{d} vs {u} (both trained at {train} px)") + f" by {V.label}, above {top} px: "
    if not above:
        s += f"no sampled resolution above {top} px"
    else:
        wins, missing = compare(above)
        clauses = []
        if wins[1]:
            clauses.append(f"{d} is better at {join(wins[1])}")
        if wins[-1]:
            clauses.append(f"{u} is better at {join(wins[-1])}")
        if wins[0]:
            clauses.append(f"they tie at {join(wins[0])}")
        if missing:
            clauses.append(f"not compared at {join(missing)}")
        s += "; ".join(clauses)
    below = [r for r in grid if r <= top]
    if below:
        wins, missing = compare(below)
        n = len(wins[1]) + len(wins[-1]) + len(wins[0])
        if n:
            s += f". At or below {top} px {d} is better at {len(wins[1])} of {n} resolutions"
            if wins[0]:
                s += f" (ties at {len(wins[0])})"
    return s + "."


def _collapse_sentences(V: _Values, agg: pd.DataFrame, models: list[str], factor: float) -> list[str]:
    rule = (f"Collapse rule: a trained model collapses at a sampled resolution above its largest training "
            f"resolution when its {V.label} there is more than {factor:g}x its {V.label} at that training "
            f"resolution.")
    if not V.lower:
        return [rule + f" It applies to lower-is-better metrics only; {V.label} is not one."]
    out, worst, unassessed = [], None, []
    train = dict(zip(agg["model"], agg["train_resolutions"]))
    grid = sorted({r for (_, r) in V.v})
    for m in models:
        top = max_train(train[m])
        base = V.get(m, top) if top is not None else None
        if base is None or base <= 0:
            unassessed.append(f"{m} ({'no' if base is None else 'non-positive'} {V.label} at {top} px)")
            continue
        hits = []
        for r in (r for r in grid if r > top):
            x = V.get(m, r)
            if x is None:
                continue
            ratio = x / base
            if worst is None or ratio > worst[0]:
                worst = (ratio, m, r)
            if ratio > factor:
                hits.append(f"{r} px ({V.fmt(x)} = {ratio:.1f}x its {V.fmt(base)} at {top} px)")
        if hits:
            out.append(f"{m} collapses at {join(hits)}")
    if out:
        s = rule + " " + "; ".join(out) + "."
    elif worst is not None:
        s = (rule + f" No trained model collapses under this rule; the largest ratio is {worst[0]:.2f}x "
             f"({worst[1]} at {worst[2]} px).")
    else:
        s = rule + " No trained model was sampled above its largest training resolution."
    if unassessed:
        s += f" Not assessed: {join(unassessed)}."
    return [s]


def _paper_sentences(agg: pd.DataFrame, reference: pd.DataFrame, mapping: dict[str, str], best: str,
                     n_ours: str, impl_ours: str) -> list[str]:
    if "fid" not in agg.columns:
        return []
    ours = _Values(agg, "fid")
    ref = {(m, int(r)): float(x) for m, r, x in zip(reference["model"], reference["sample_resolution"],
                                                    reference["fid"])}
    impls = sorted({f"{i} ({describe_n(n)})" for i, n in zip(reference["fid_impl"], reference["n_samples"])})
    dataset = reference["dataset"].iloc[0]
    mode = agg["fid_mode"].iloc[0] if "fid_mode" in agg.columns else None
    same = "protocol" in reference.columns and (reference["protocol"] == mode).all()
    out = [f"Published numbers for {dataset} come from {join(impls)}; ours from {impl_ours} ({n_ours}): "
           + ("the same protocol, but FID depends on N and on the reference set, so compare orderings, and "
              "values only where those match." if same else
              "different FID implementations and sample counts, so compare orderings, not values.")]
    label = mapping.get(best)
    common = sorted(r for (m, r) in ref if m == label and ours.get(best, r) is not None) if label else []
    if not label:
        out.append(f"The best trained model here, {best}, has no counterpart among the published models "
                   f"(map it with report.reference_models).")
    elif not common:
        out.append(f"The best trained model here, {best}, shares no sampled resolution with paper: {label}.")
    else:
        vals = [f"{r} px {ours.fmt(ours.get(best, r))} vs {ref[label, r]:.2f}" for r in common]
        out.append(f"Best trained model here, {best}, against paper: {label} (FID, ours vs theirs): {'; '.join(vals)}.")
    for d, u in pairs(agg):
        ld, lu = mapping.get(d), mapping.get(u)
        if not (ld and lu):
            continue
        res = sorted(r for (m, r) in ref if m == ld and (lu, r) in ref
                     and ours.get(d, r) is not None and ours.get(u, r) is not None)
        if not res:
            out.append(f"{d} vs {u}: no sampled resolution where both this run and the paper have FID for both.")
            continue
        agree = [r for r in res if ours.cmp(ours.get(d, r), ours.get(u, r)) == ours.cmp(ref[ld, r], ref[lu, r])]
        theirs = [r for r in res if ours.cmp(ref[ld, r], ref[lu, r]) == 1]
        here = [r for r in res if ours.cmp(ours.get(d, r), ours.get(u, r)) == 1]
        out.append(f"{d} vs {u} by FID at the resolutions both sources have ({px(res)}): in the paper "
                   f"{ld} is better at {px(theirs) if theirs else 'none of them'}; here {d} is better at "
                   f"{px(here) if here else 'none of them'}; the orderings agree at {len(agree)} of {len(res)}.")
    return out


def summarize(agg: pd.DataFrame, metric: str, reference: Optional[pd.DataFrame] = None,
              mapping: Optional[dict[str, str]] = None, collapse_factor: float = COLLAPSE_FACTOR,
              finetunes: Optional[dict[str, str]] = None, paper_agg: Optional[pd.DataFrame] = None) -> list[str]:
    """Findings on `metric` (the lead metric) and, with `reference`, against the paper's FID.

    agg: columns model, adapter, role (derived from the adapter for old files),
    train_resolutions, sample_resolution, the metric (means), optionally n and
    fid_mode. Trained models are those whose role is not `baseline`; baselines are
    compared with them separately.
    reference: rows of bench.paper.reference_frame; mapping: suite model -> its model label.
    paper_agg: the aggregate whose FID is set beside the reference (the run's mode of the
    paper's protocol; default agg itself).
    finetunes: fine-tuned model -> its base, compared with each other (what fine-tuning changed).
    """
    agg = with_roles(agg)
    V = _Values(agg, metric)
    grid = sorted(int(r) for r in agg["sample_resolution"].unique())
    order = list(dict.fromkeys(agg["model"]))
    roles, adapters = dict(zip(agg["model"], agg["role"])), dict(zip(agg["model"], agg["adapter"]))
    trained = [m for m in order if roles[m] != "baseline"] or order
    n = f"; N = {int(agg['n'].min()):,} per point" if "n" in agg.columns and agg["n"].notna().any() else ""
    out = [_best_sentence(V, trained, grid, n)]
    out += [_baseline_sentence(V, b, adapters[b], trained, grid) for b in order if b not in trained]
    train = dict(zip(agg["model"], agg["train_resolutions"]))
    out += [_pair_sentence(V, d, u, str(train[d]), grid) for d, u in pairs(agg)]
    out += [_pair_sentence(V, f, b, str(train[b]), grid, head=f"{f} (fine-tuned from {b}) vs {b}")
            for f, b in (finetunes or {}).items() if f in train and b in train]
    out += _collapse_sentences(V, agg, trained, collapse_factor)
    if reference is not None and len(reference):
        wins = {m: 0 for m in trained}
        for r in grid:
            vals = {m: V.get(m, r) for m in trained if V.get(m, r) is not None}
            if vals:
                top = min(vals.values()) if V.lower else max(vals.values())
                for m, x in vals.items():
                    wins[m] += V.cmp(x, top) == 0
        best = max(trained, key=lambda m: wins[m])  # first in suite order on a tie
        theirs = agg if paper_agg is None else paper_agg
        mode = theirs["fid_mode"].iloc[0] if "fid_mode" in theirs.columns else "clean"
        out += _paper_sentences(theirs, reference, mapping or {}, best, n.removeprefix("; ") or "N not given",
                                fid_impl(mode))
    return out
