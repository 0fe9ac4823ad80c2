"""`bench regress`: a CI guard on sample quality (FID/KID) and normalised throughput.

It runs a deterministic suite (`suites/ci.yaml`) and the throughput kernels of
`bench.perf`, then compares both with a committed baseline under the
tolerances below. Exit 0: nothing regressed; exit 1: something did (the table
says what); exit 2: bad input (missing baseline, bad suite).

Tolerances (see results/baselines/README.md for the measured spread behind them):
* FID: worse by more than FID_REL (relative) -> regression. The CI suite is
  deterministic on one machine and software stack (spread 0 over repeated
  runs); the margin absorbs float differences between BLAS builds and CPUs.
* KID: worse by more than KID_ABS + KID_REL * |baseline|.
* Throughput: a kernel's time / calibration-GEMM time grows by more than
  THROUGHPUT_REL -> regression. Those ratios depend on the kind of machine (on two kinds
  of 2-core "AMD EPYC" VM the same code's ratios differed by +17% to +55%), so a baseline
  keeps one throughput entry per machine kind (``bench.dist.machine_kind``) and a run is
  held to THROUGHPUT_REL against its own kind's entry. On a kind the baseline has no entry
  for, it is compared with the first entry under THROUGHPUT_REL_OTHER_MACHINE, which still
  flags a kernel doing several times its work without failing on the machine change.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.table import Table

from bench import perf
from bench.config import load_suite
from bench.errors import BenchError
from bench.dist import machine_kind, pick_device
from bench.io import check_output_dir, write_json
from bench.progress import console
from bench.results import load_rows
from bench.run import run_suite
from bench.rundir import environment

FID_REL = 0.10
KID_ABS = 0.005
KID_REL = 0.10
THROUGHPUT_REL = 0.50
THROUGHPUT_REL_OTHER_MACHINE = 1.50

TOLERANCES = {"fid_rel": FID_REL, "kid_abs": KID_ABS, "kid_rel": KID_REL, "throughput_rel": THROUGHPUT_REL,
              "throughput_rel_other_machine": THROUGHPUT_REL_OTHER_MACHINE}
OTHER = " (other machine)"  # the status suffix of a comparison across machine kinds


def quality_from_rows(rows: list[dict]) -> dict:
    out = {}
    primary = rows[0].get("fid_mode") if rows else None
    for r in rows:
        if r.get("fid_mode", primary) != primary:
            continue  # a suite with several FID modes: the guard compares the primary one (listed first)
        key = f"{r['model']}@{int(r['sample_resolution'])}"
        out[key] = {"fid": float(r["fid"]), "kid": float(r["kid"]) if r.get("kid") is not None else None}
    return out


def throughput_entries(baseline: dict) -> list[dict]:
    """A baseline's throughput entries, one per machine kind (a baseline written before machine kinds
    were recorded has one, as a dict without ``machine``)."""
    tp = baseline.get("throughput", {"kernels": {}})
    return list(tp) if isinstance(tp, list) else [tp]


def pick_throughput(baseline: dict, machine: Optional[str]) -> tuple[dict, bool]:
    """The entry to compare a run on ``machine`` with, and whether it is that machine kind's own:
    the entry recorded on the same kind, else the first one."""
    entries = throughput_entries(baseline)
    for entry in entries:
        if machine is not None and entry.get("machine") == machine:
            return entry, True
    return (entries[0] if entries else {"kernels": {}}), False


def compare(baseline: dict, quality: dict, throughput: dict, tolerances: Optional[dict] = None) -> list[dict]:
    """One row per compared number: what it was, what it is, the limit, and the verdict."""
    tol = {**TOLERANCES, **(tolerances or baseline.get("tolerances", {}))}
    rows = []
    for key, base in baseline.get("quality", {}).items():
        now = quality.get(key)
        if now is None:
            rows.append({"what": f"{key} fid", "baseline": base["fid"], "now": None, "limit": None,
                         "status": "REGRESSION (not measured)"})
            continue
        limit = base["fid"] * (1 + tol["fid_rel"])
        rows.append({"what": f"{key} fid", "baseline": base["fid"], "now": now["fid"], "limit": limit,
                     "status": "REGRESSION" if now["fid"] > limit else "ok"})
        if base.get("kid") is not None and now.get("kid") is not None:
            limit = base["kid"] + tol["kid_abs"] + tol["kid_rel"] * abs(base["kid"])
            rows.append({"what": f"{key} kid", "baseline": base["kid"], "now": now["kid"], "limit": limit,
                         "status": "REGRESSION" if now["kid"] > limit else "ok"})
    base_throughput, same = pick_throughput(baseline, throughput.get("machine"))
    rel, note = (tol["throughput_rel"], "") if same else (tol["throughput_rel_other_machine"], OTHER)
    for name, base in base_throughput.get("kernels", {}).items():
        now = throughput.get("kernels", {}).get(name)
        if now is None:
            rows.append({"what": f"{name} time/gemm", "baseline": base["ratio"], "now": None, "limit": None,
                         "status": "REGRESSION (not measured)"})
            continue
        limit = base["ratio"] * (1 + rel)
        status = "REGRESSION" if now["ratio"] > limit else (
            "faster" if now["ratio"] < base["ratio"] / (1 + rel) else "ok") + note
        rows.append({"what": f"{name} time/gemm", "baseline": base["ratio"], "now": now["ratio"],
                     "limit": limit, "status": status})
    return rows


def print_comparison(rows: list[dict]) -> None:
    table = Table(title="bench regress: baseline vs now")
    for c in ("what", "baseline", "now", "change", "limit", "status"):
        table.add_column(c, justify="left" if c in ("what", "status") else "right")

    def fmt(v):
        return "-" if v is None else f"{v:.4g}"

    for r in rows:
        change = "-" if r["now"] is None or not r["baseline"] else f"{(r['now'] / r['baseline'] - 1) * 100:+.1f}%"
        style = "bold red" if r["status"].startswith("REGRESSION") else None
        table.add_row(r["what"], fmt(r["baseline"]), fmt(r["now"]), change, fmt(r["limit"]), r["status"],
                      style=style)
    console.print(table)


class _Numbers(BaseModel):
    # strict: "50" is not the number 50 (a hand edit), finite: no inf or nan; keys the guard does
    # not read (a kernel's seconds, the suite, the environment) may be there
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")


class QualityEntry(_Numbers):
    fid: float = Field(ge=0)
    kid: Optional[float] = None  # an unbiased KID may be negative


class KernelEntry(_Numbers):
    ratio: float = Field(gt=0)  # a kernel's time / the calibration GEMM's


class Throughput(_Numbers):
    kernels: dict[str, KernelEntry]
    machine: Optional[str] = None  # bench.dist.machine_kind of where it was measured; None: not recorded


class Tolerances(_Numbers):
    """The margins of compare(); a negative one would flag an unchanged number as a regression."""

    model_config = ConfigDict(extra="forbid")  # a misspelt tolerance would silently be the default
    fid_rel: float = Field(FID_REL, ge=0)
    kid_abs: float = Field(KID_ABS, ge=0)
    kid_rel: float = Field(KID_REL, ge=0)
    throughput_rel: float = Field(THROUGHPUT_REL, ge=0)
    throughput_rel_other_machine: float = Field(THROUGHPUT_REL_OTHER_MACHINE, ge=0)


class Baseline(_Numbers):
    quality: dict[str, QualityEntry]
    throughput: list[Throughput]  # one entry per machine kind (load_baseline reads a dict as one entry)
    tolerances: Tolerances = Tolerances()


def load_baseline(path: Path) -> dict:
    if path.is_dir():
        raise BenchError(f"baseline {path} is a directory; give the baseline's JSON file, e.g. "
                         "results/baselines/ci.json")
    if not path.is_file():
        raise BenchError(f"baseline {path} does not exist; create it with `bench regress --baseline {path} --update`")
    try:
        data = json.loads(path.read_text())
        data["quality"].items()
        for entry in throughput_entries(data):
            entry["kernels"].items()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BenchError(f"baseline {path} is not a dfu-bench baseline (quality, throughput); "
                         f"regenerate it with --update") from None
    try:
        Baseline.model_validate({**data, "throughput": throughput_entries(data)})
    except ValidationError as exc:
        err = exc.errors()[0]
        parts = list(err["loc"])
        if parts[:1] == ["throughput"] and isinstance(data["throughput"], dict):
            del parts[1:2]  # validated as a one-entry list: name the place as it is in the file
        loc = ".".join(str(p) for p in parts)
        msg = "unknown key; remove it or check its spelling" if err["type"] == "extra_forbidden" else err["msg"]
        got = repr(err["input"])
        got = got if len(got) <= 80 else got[:77] + "..."
        raise BenchError(f"baseline {path}: {loc}: {msg} (got {got}); fix it or regenerate the baseline with "
                         "--update") from None
    machines = [e.get("machine") for e in throughput_entries(data)]
    twice = sorted({m for m in machines if machines.count(m) > 1}, key=str)
    if twice:
        raise BenchError(f"baseline {path}: throughput has {machines.count(twice[0])} entries for machine "
                         f"{twice[0]!r}; keep one (or regenerate it with --update on that machine)")
    return data


def updated_baseline(old: Optional[dict], suite: Path, quality: dict, throughput: dict, environment: dict) -> dict:
    """What ``--update`` writes: ``old`` (None: none or unreadable) with this run's parts in it. FID/KID
    (one set: bit-identical on the two machine kinds measured) are replaced when measured; this
    machine kind's throughput entry is replaced or added when measured, other kinds' are kept."""
    old = old or {}
    # each entry keeps the environment (time, commit) it was measured in; one from before entries had
    # their own gets the file's, written by the run that measured it
    entries = [e if "environment" in e or "environment" not in old else {**e, "environment": old["environment"]}
               for e in throughput_entries(old) if e.get("kernels")] if old else []
    if throughput.get("kernels"):
        throughput = {**throughput, "environment": environment}
        at = [i for i, e in enumerate(entries) if e.get("machine") == throughput.get("machine")]
        if at:
            entries[at[0]] = throughput
        else:
            entries.append(throughput)
    return {"suite": str(suite) if quality or not old else old.get("suite", str(suite)),
            "tolerances": {**TOLERANCES, **old.get("tolerances", {})}, "environment": environment,
            "quality": quality if quality or not old else old.get("quality", {}), "throughput": entries}


def regress(baseline: Path, suite: Path, results: Path, update: bool = False, skip_quality: bool = False,
            skip_throughput: bool = False, repeats: int = 7) -> int:
    if skip_quality and skip_throughput:
        what = f"--update would write a baseline {baseline} that compares" if update else "the run would compare"
        raise BenchError(f"{what} nothing (--skip-quality and --skip-throughput); drop one of them")
    old = None  # with --update: the baseline to keep what this run does not measure from
    if update:  # the run may take minutes: find out now that its result can be written
        check_output_dir(baseline, "--baseline", file=True)
        if baseline.is_file():
            try:
                old = load_baseline(baseline)
            except BenchError as exc:
                console.log(f"{exc}: --update writes a new baseline in its place")
    base = None if update else load_baseline(baseline)
    machine = machine_kind(torch.device("cpu"))  # where perf.measure times the kernels
    if base is not None:
        compared = (0 if skip_quality else len(base["quality"])) + (
            0 if skip_throughput else len(pick_throughput(base, machine)[0].get("kernels", {})))
        if not compared:
            raise BenchError(f"baseline {baseline} compares nothing here (no quality entries"
                             f"{'' if skip_throughput else ' and no throughput kernels'}); regenerate it with "
                             "--update")
    cfg = load_suite(suite)
    if not skip_quality:
        check_output_dir(results, "--results")
    quality = {}
    if not skip_quality:
        run_id = "regress-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        quality = quality_from_rows(load_rows(run_suite(cfg, results=results, run_id=run_id)))
    throughput = {"kernels": {}} if skip_throughput else perf.measure(repeats=repeats)
    if update:
        if not quality and not throughput.get("kernels"):
            raise BenchError(f"--update would write a baseline {baseline} that compares nothing (the suite gave no "
                             "FID rows and no kernel was timed); check the suite")
        write_json(baseline, updated_baseline(old, suite, quality, throughput, environment(pick_device(cfg.device))))
        console.log(f"baseline written to {baseline}" + (" (kept what this run did not measure)" if old else ""))
        return 0
    if skip_quality:
        base = {**base, "quality": {}}
    if skip_throughput:
        base = {**base, "throughput": {"kernels": {}}}
    rows = compare(base, quality, throughput)
    print_comparison(rows)
    if not skip_throughput:
        entry, same = pick_throughput(base, machine)
        if not same:
            tol = {**TOLERANCES, **base.get("tolerances", {})}
            console.log(f"throughput: the baseline has no entry for this machine kind ({machine}), so it was "
                        f"compared with the one for {entry.get('machine') or 'an unrecorded machine'} within "
                        f"+{tol['throughput_rel_other_machine']:.0%}, not +{tol['throughput_rel']:.0%}; to guard "
                        "this kind closely, record it with "
                        f"`bench regress --baseline {baseline} --update --skip-quality` on it")
    bad = [r for r in rows if r["status"].startswith("REGRESSION")]
    console.log(f"{len(bad)} regression(s) in {len(rows)} comparisons" if bad else
                f"no regression in {len(rows)} comparisons")
    return 1 if bad else 0
