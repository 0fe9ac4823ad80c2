"""`make bench` keeps running between the sessions that time it: every pytest-benchmark module runs
once with timing off (the equality checks it makes before timing included), and benchmarks/ratios.py
prints the ratios of a real, short benchmark run. The timings themselves are `make bench`'s."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pytest_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider",
                           f"--basetemp={tmp_path / 'base'}"], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_every_benchmark_module_runs(tmp_path):
    r = pytest_run(tmp_path, "benchmarks", "--benchmark-disable")
    assert r.returncode == 0, r.stdout[-4000:]
    summary = r.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary


def test_ratios_prints_each_reference_of_a_real_run(tmp_path):
    out = tmp_path / "layer.json"
    r = pytest_run(tmp_path, "benchmarks/test_spectral.py", "-k", "spectral_layer and fixture-l1",
                   f"--benchmark-json={out}")
    assert r.returncode == 0, r.stdout[-4000:]
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ratios.py"), str(out)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("spectral-layer: fast path as a ratio to each reference"), r.stdout
    row = next(line for line in lines if "fixture-l1-32px" in line)
    ratios = [float(v) for v in row.split("reference:")[1].split()]
    assert len(ratios) == 3 and all(0 < v < 10 for v in ratios), row
