"""The report's findings, as sentences generated from the aggregated numbers.

`summarize` is a pure function of the aggregate frame (one row per model and
sampled resolution, as `bench.results.aggregate` makes it) and, optionally, the
paper's numbers; index.md prints what it returns, so no finding in a report is
written by hand. One model is called better than another, or best, only where
their 95% intervals (bench.results.aggregate's `<metric>_lo`/`_hi`) are apart;
otherwise the sentence says the difference is not resolved at this N and number
of training seeds (a frame without intervals resolves nothing). A missing value is
named, never skipped silently. On a grf suite, `correlation_length_sentences`
answers whether the models keep the physical or the pixel correlation length
above their training resolutions. Models are told
apart by role (models.adapters.ROLES): baselines are compared with the trained
models, spectral models with spatial ones trained at the same resolutions.
"""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from bench.metrics import COLUMNS, fid_impl
from bench.paper import describe_n
from bench.results import interval_words, parse_resolutions, with_roles

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


def unresolved(agg: pd.DataFrame) -> str:
    """'not resolved at N = 80 with 1 training seed': what a report says where intervals overlap."""
    n = f"N = {int(agg['n'].min()):,}" if "n" in agg.columns and agg["n"].notna().any() else "this N"
    k = int(agg["train_seeds"].max()) if "train_seeds" in agg.columns and agg["train_seeds"].notna().any() else 1
    return f"not resolved at {n} with {k} training seed{'s' if k != 1 else ''}"


class _Values:
    """Lookup and comparison of one metric's means and 95% intervals by (model, resolution)."""

    def __init__(self, agg: pd.DataFrame, metric: str):
        self.metric = metric
        c = COLUMNS[metric]
        self.label, self.lower, self.fmt_s = c.label, c.lower_is_better, c.fmt
        self.v = {(m, int(r)): float(x) for m, r, x in zip(agg["model"], agg["sample_resolution"], agg[metric])
                  if pd.notna(x)}
        lo, hi = (agg[f"{metric}_{e}"] if f"{metric}_{e}" in agg.columns else pd.Series([None] * len(agg))
                  for e in ("lo", "hi"))
        self.ci = {(m, int(r)): (float(a), float(b)) for m, r, a, b in zip(agg["model"], agg["sample_resolution"],
                                                                           lo, hi) if pd.notna(a) and pd.notna(b)}
        self.unresolved = unresolved(agg)

    def fmt(self, x: float) -> str:
        return self.fmt_s.format(x)

    def get(self, model: str, res: int) -> Optional[float]:
        return self.v.get((model, res))

    def show(self, model: str, res: int) -> str:
        """'0.2500 [0.2400, 0.2600]': the mean and its interval, where it has one."""
        ci = self.ci.get((model, res))
        return self.fmt(self.v[model, res]) + (f" [{self.fmt(ci[0])}, {self.fmt(ci[1])}]" if ci else "")

    def cmp(self, a: str, b: str, res: int) -> int:
        """1 if model a is better than model b at res, -1 if worse, 0 if their intervals overlap (or one
        has none): only separated intervals order two models."""
        ca, cb = self.ci.get((a, res)), self.ci.get((b, res))
        if ca is None or cb is None or not (ca[1] < cb[0] or cb[1] < ca[0]):
            return 0
        return 1 if (self.v[a, res] < self.v[b, res]) == self.lower else -1

    def top(self, models: list[str], res: int) -> Optional[str]:
        """The model with the best mean at res (the first on equal means), or None."""
        have = [m for m in models if self.get(m, res) is not None]
        if not have:
            return None
        return (min if self.lower else max)(have, key=lambda m: self.v[m, res])


def best_models(V: _Values, models: list[str], res: int) -> tuple[Optional[str], list[str]]:
    """(the best model at res where its interval is apart from every other's, else None; the models whose
    intervals overlap the top one's, the top one first)."""
    top = V.top(models, res)
    if top is None:
        return None, []
    rivals = [m for m in models if m != top and V.get(m, res) is not None and V.cmp(top, m, res) != 1]
    return (None if rivals else top), [top] + rivals


def _best_sentence(V: _Values, models: list[str], grid: list[int], n: str) -> str:
    parts = []
    for r in grid:
        best, tied = best_models(V, models, r)
        if not tied:
            parts.append(f"{r} px no value")
        elif best is not None:
            parts.append(f"{r} px {best} ({V.show(best, r)})")
        else:
            why = "overlap" if all((m, r) in V.ci for m in tied) else "have no interval to separate them"
            parts.append(f"{r} px {V.unresolved} ({', '.join(f'{m} {V.show(m, r)}' for m in tied)} {why})")
    direction = "lower" if V.lower else "higher"
    return (f"Best trained model by {V.label} ({direction} is better{n}) at each sampled resolution, where its 95% "
            f"interval is apart from every other's: {'; '.join(parts)}.")


def _baseline_sentence(V: _Values, base: str, adapter: str, models: list[str], grid: list[int]) -> str:
    better, worse, open_, missing = [], [], [], []
    for r in grid:
        top = V.top(models, r)
        if V.get(base, r) is None or top is None:
            missing.append(r)
            continue
        {1: better, -1: worse, 0: open_}[V.cmp(base, top, r)].append(r)
    what = f"{adapter[:1].upper()}{adapter[1:]} baseline {base}"  # 'Bilinear baseline bilinear-up'
    clauses = ([f"beats the best trained model at {px(better)}"] if better else []) + \
        ([f"is worse than the best trained model at {px(worse)}"] if worse else []) + \
        ([f"against the best trained model is {V.unresolved} at {px(open_)}"] if open_ else [])
    s = f"{what} " + ("; it ".join(clauses) if clauses else "is not compared")
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
            wins[V.cmp(d, u, r)].append(f"{r} px ({d} {V.show(d, r)}, {u} {V.show(u, r)})")
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
            clauses.append(f"{V.unresolved} at {join(wins[0])}")
        if missing:
            clauses.append(f"not compared at {join(missing)}")
        s += "; ".join(clauses)
    below = [r for r in grid if r <= top]
    if below:
        wins, missing = compare(below)
        n = len(wins[1]) + len(wins[-1]) + len(wins[0])
        if n and (wins[1] or wins[-1]):
            s += (f". At or below {top} px {d} is better at {len(wins[1])} of {n} resolutions, {u} at "
                  f"{len(wins[-1])}")
            if wins[0]:
                s += f" ({V.unresolved} at {len(wins[0])})"
        elif n:
            s += f". At or below {top} px: {V.unresolved} at any of {n} resolution{'s' if n > 1 else ''}"
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
    which = f"The trained model best at the most sampled resolutions here, {best},"
    if not label:
        out.append(f"{which} has no counterpart among the published models (map it with report.reference_models).")
    elif not common:
        out.append(f"{which} shares no sampled resolution with paper: {label}.")
    else:
        vals = [f"{r} px {ours.show(best, r)} vs {ref[label, r]:.2f}" for r in common]
        out.append(f"{which} against paper: {label} (FID, ours vs theirs): {'; '.join(vals)}.")
    for d, u in pairs(agg):
        ld, lu = mapping.get(d), mapping.get(u)
        if not (ld and lu):
            continue
        res = sorted(r for (m, r) in ref if m == ld and (lu, r) in ref
                     and ours.get(d, r) is not None and ours.get(u, r) is not None)
        if not res:
            out.append(f"{d} vs {u}: no sampled resolution where both this run and the paper have FID for both.")
            continue
        def paper_cmp(r):  # the published numbers have no intervals: compared as printed
            a, b = f"{ref[ld, r]:.2f}", f"{ref[lu, r]:.2f}"
            return 0 if a == b else (1 if ref[ld, r] < ref[lu, r] else -1)
        theirs = [r for r in res if paper_cmp(r) == 1]
        here = [r for r in res if ours.cmp(d, u, r) == 1]
        resolved = [r for r in res if ours.cmp(d, u, r) != 0]
        agree = [r for r in resolved if ours.cmp(d, u, r) == paper_cmp(r)]
        out.append(f"{d} vs {u} by FID at the resolutions both sources have ({px(res)}): in the paper "
                   f"{ld} is better at {px(theirs) if theirs else 'none of them'}; here {d} is better at "
                   f"{px(here) if here else 'none of them'}"
                   + (f" ({ours.unresolved} at {px([r for r in res if r not in resolved])})"
                      if len(resolved) < len(res) else "")
                   + f"; the orderings agree at {len(agree)} of the {len(resolved)} resolved here.")
    return out


def correlation_length_sentences(agg: pd.DataFrame) -> list[str]:
    """The grf question, answered from the `grf-spectrum` columns: above its largest training resolution T,
    does each trained model keep the physical correlation length (the exact answer at N px, L(N)) or
    the pixel one (what it saw at T, in pixels: L(T) T / N image widths)?

    Per model and sampled resolution N > T: the measured length with its 95% interval, and a verdict:
    `physical` where the interval holds L(N) and not the pixel length, `pixel` the other way round,
    `not resolved` where it holds both, and otherwise which side of both it lies. Needs rows at T (the
    exact length there is the data's, the same for every model)."""
    need = {"grf_corr_length", "grf_corr_length_expected"}
    if not need <= set(agg.columns) or not agg["grf_corr_length"].notna().any():
        return []
    agg = with_roles(agg)
    V = _Values(agg, "grf_corr_length")
    exact = {int(r): float(x) for r, x in zip(agg["sample_resolution"], agg["grf_corr_length_expected"])
             if pd.notna(x)}
    train = dict(zip(agg["model"], agg["train_resolutions"]))
    out, tally = [], {}
    for m in dict.fromkeys(agg.loc[agg["role"] != "baseline", "model"]):
        top = max_train(train[m])
        above = sorted(r for (mm, r) in V.v if mm == m and top is not None and r > top)
        if top is None or top not in exact or not above:
            continue
        parts = []
        for r in above:
            phys, pix = exact[r], exact[top] * top / r
            ci = V.ci.get((m, r))
            if ci is None:
                verdict = "no interval"
            else:
                has_phys, has_pix = ci[0] <= phys <= ci[1], ci[0] <= pix <= ci[1]
                mean = V.get(m, r)
                nearer = "physical" if mean > 0 and abs(math.log(mean / phys)) < abs(math.log(mean / pix)) else "pixel"
                verdict = ("not resolved" if has_phys and has_pix else "physical" if has_phys else
                           "pixel" if has_pix else
                           "between the two" if min(phys, pix) < ci[0] and ci[1] < max(phys, pix) else
                           f"neither (outside both, nearer the {nearer})")
            tally.setdefault(m, []).append(verdict)
            parts.append(f"{r} px {V.show(m, r)} vs physical {phys:.4f} and pixel {pix:.4f}: {verdict}")
        out.append(f"{m} (trained at {train[m]} px), correlation length in image widths above {top} px "
                   f"(95% interval): {'; '.join(parts)}.")
    if not tally:
        return []
    counts = "; ".join(f"{m}: " + ", ".join(f"{v} at {sum(x == v for x in vs)} of {len(vs)}"
                                          for v in dict.fromkeys(vs)) for m, vs in tally.items())
    head = (f"Correlation-length answer (does a model keep the physical correlation length above its training "
            f"resolutions, or the pixel one?), {unresolved(agg).replace('not resolved at ', 'at ')}: {counts}.")
    return [head] + out


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
    out = correlation_length_sentences(agg) + [_best_sentence(V, trained, grid, n)]
    out += [_baseline_sentence(V, b, adapters[b], trained, grid) for b in order if b not in trained]
    train = dict(zip(agg["model"], agg["train_resolutions"]))
    out += [_pair_sentence(V, d, u, str(train[d]), grid) for d, u in pairs(agg)]
    out += [_pair_sentence(V, f, b, str(train[b]), grid, head=f"{f} (fine-tuned from {b}) vs {b}")
            for f, b in (finetunes or {}).items() if f in train and b in train]
    out += _collapse_sentences(V, agg, trained, collapse_factor)
    if reference is not None and len(reference):
        wins = {m: 0 for m in trained}
        for r in grid:
            for m in best_models(V, trained, r)[1]:  # the top model and those it is not resolved from
                wins[m] += 1
        best = max(trained, key=lambda m: wins[m])  # first in suite order on a tie
        theirs = agg if paper_agg is None else paper_agg
        mode = theirs["fid_mode"].iloc[0] if "fid_mode" in theirs.columns else "clean"
        out += _paper_sentences(theirs, reference, mapping or {}, best, n.removeprefix("; ") or "N not given",
                                fid_impl(mode))
    return out
