"""Integrity of a run directory: one process at a time, and every file checked before it is trusted.

* A lock: the process that runs a run directory holds an exclusive `flock` on the
  directory itself (no lock file to leave behind); a second `bench run` on the same
  run id is refused with one line instead of doing the work again.
* A record: while a run holds its directory, every file it writes through
  `bench.io.atomic_path` gets its sha256 recorded in the run's checksums file
  (RunDir.checksums), except the report (rebuilt every time), transient batch files and
  the resolved suite (compared with the suite on every resume; `bench report` reads
  it as a suite, so it may be edited by hand).
* Checks: before a resume writes anything, and before `bench report` does, every
  recorded file that is present must have its recorded sha256 and the text files
  must read as what they are. A damaged file is one line naming it and the fix:
  delete it and resume, which remakes only that piece (a missing file is remade).
  Files a resume rewrites anyway (metrics, environment record) are not checked on
  resume, only by `bench report`.

Runs written before the record existed have none: their files are read as they are.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Optional

import pandas as pd

from bench import io
from bench.config import SuiteConfig, load_suite
from bench.errors import BenchError
from bench.metrics import COLUMNS as METRIC_COLUMNS
from bench.rundir import RunDir

VERSION = 1
_LOCKS: dict[str, int] = {}  # run directory -> the fd its lock is held on (re-entrant within a process)


# ------------------------------------------------------------------ messages


def resume_command(run: RunDir) -> str:
    return f"`bench run SUITE.yaml --run-id {run.name}`"


def damaged(run: RunDir, path: Path, why: str) -> BenchError:
    return BenchError(f"{path} {why}; delete it and resume the run with {resume_command(run)}, which remakes only "
                      "that file")


# ------------------------------------------------------------------ the record


def records(run: RunDir) -> dict[str, str]:
    """relative path -> sha256 as the run wrote it ({} for runs made before the record existed)."""
    path = run.checksums
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        out = data["sha256"]
        if not isinstance(out, dict) or not all(isinstance(v, str) for v in out.values()):
            raise TypeError
        return out
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise damaged(run, path, "is not a readable checksum record") from None


def _tracked(run: RunDir, path: Path) -> bool:
    return not (path == run.checksums or path == run.suite_yaml or run.is_report_file(path)
                or run.is_transient(path))


class _Recorder:
    def __init__(self, run: RunDir):
        self.run = run
        self.sha = records(run)

    def __call__(self, path: Path) -> None:
        # atomic_path reports absolute paths; the run's own may be relative (results/... by default)
        path = self.run.root / Path(os.path.abspath(path)).relative_to(os.path.abspath(self.run.root))
        if not _tracked(self.run, path) or not path.is_file():
            return
        self.sha[self.run.relative(path)] = io.sha256_file(path)
        io.write_json(self.run.checksums, {"version": VERSION, "sha256": dict(sorted(self.sha.items()))})


# ------------------------------------------------------------------ checks


def verify_records(run: RunDir, skip: tuple[Path, ...] = ()) -> None:
    """Every recorded file that is present has its recorded sha256."""
    for rel, sha in records(run).items():
        path = run.root / rel
        if path in skip or not path.is_file():
            continue
        if io.sha256_file(path) != sha:
            raise damaged(run, path, "is damaged: its sha256 is not the one recorded when the run wrote it")


def _text(run: RunDir, path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise damaged(run, path, "is not UTF-8 text (damaged)") from None


def _json(run: RunDir, path: Path) -> None:
    try:
        json.loads(_text(run, path))
    except ValueError:
        raise damaged(run, path, "is not valid JSON (damaged)") from None


def verify_texts(run: RunDir, outputs: bool) -> None:
    """The run's text files read as what they are: the suite as UTF-8, every JSON file as JSON
    (the environment record only when `outputs`: a resume rewrites it)."""
    if run.suite_yaml.is_file():
        _text(run, run.suite_yaml)
    for path in run.checkpoint_files():
        if path.suffix == ".json":
            _json(run, path)
    if outputs and run.environment_json.is_file():
        _json(run, run.environment_json)


REQUIRED_COLUMNS = ("model", "train_resolutions", "sample_resolution", "n", "fid")
NUMERIC_COLUMNS = ("sample_resolution", "seed_set", "n", "n_ref", *METRIC_COLUMNS)


def verify_metrics(run: RunDir) -> None:
    """metrics.csv reads as the report needs it: a CSV with the key columns, rows, numbers."""
    path = run.metrics_csv
    fix = f"delete it and rewrite it with {resume_command(run)}"
    try:
        df = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BenchError(f"{path} is not a readable CSV ({type(exc).__name__}); {fix}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(f"{path} lacks the column(s) {', '.join(missing)}; it is not a metrics file of "
                         f"bench run; {fix}")
    if not len(df):
        raise BenchError(f"{path} holds no rows; {fix}")
    for col in NUMERIC_COLUMNS:
        if col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce")
            bad = df[col][values.isna() & df[col].notna()]
            if len(bad):
                raise BenchError(f"{path}: column {col} holds {bad.iloc[0]!r}, not a number; {fix}")


def check_report_inputs(run: RunDir) -> SuiteConfig:
    """Everything `bench report` reads, checked before it writes: returns the run's suite."""
    verify_texts(run, outputs=True)
    cfg = load_suite(run.suite_yaml)
    verify_metrics(run)
    verify_records(run)
    return cfg


# ------------------------------------------------------------------ a run's lifetime


def open_run(run: RunDir) -> None:
    """Lock the run directory (made if missing), check the files a resume will trust, then record
    every file written under it. Rank 0 only."""
    lock(run)
    verify_texts(run, outputs=False)
    verify_records(run, skip=(run.metrics_csv, run.environment_json))
    io.watch(run.root, _Recorder(run))


def close_run(run: RunDir) -> None:
    io.watch(run.root, None)
    unlock(run)


def lock(run: RunDir) -> None:
    key = os.path.abspath(run.root)
    if key in _LOCKS:
        return
    run.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(run.root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise BenchError(f"run {run.name} ({run}) is in use by another bench process; wait until it ends, then run "
                         "the same command to resume it, or use another --run-id") from None
    _LOCKS[key] = fd


def unlock(run: RunDir) -> None:
    fd: Optional[int] = _LOCKS.pop(os.path.abspath(run.root), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
