"""The regression guard flags a worse model and a slowed kernel, and passes unchanged code."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench import perf
from bench.regress import compare, quality_from_rows

ROOT = Path(__file__).resolve().parent.parent


def tiny_suite(tmp_path: Path, steps: int) -> Path:
    data = yaml.safe_load((ROOT / "suites" / "ci.yaml").read_text())
    data["name"] = "ci-tiny"
    data["models"] = [m for m in data["models"] if m["name"] == "dfu"]
    data["models"][0]["train"] = {**data["models"][0]["train"], "steps": steps, "checkpoint_every": 1000}
    data["sample"].update(resolutions=[16], n=24, batch_size=24, steps=6)
    path = tmp_path / f"ci_{steps}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_worse_model_is_flagged_and_unchanged_passes(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DFU_BENCH_CACHE", str(tmp_path / "cache"))
    baseline, results = tmp_path / "baseline.json", tmp_path / "results"
    good = tiny_suite(tmp_path, steps=60)
    args = ["regress", "--baseline", str(baseline), "--results", str(results), "--skip-throughput"]
    code, _, err = run_cli(*args, "--suite", str(good), "--update")
    assert code == 0, err
    code, _, err = run_cli(*args, "--suite", str(good))
    assert code == 0 and "no regression" in err, err
    code, _, err = run_cli(*args, "--suite", str(tiny_suite(tmp_path, steps=6)))  # 10x less training
    assert code == 1 and "REGRESSION" in err, err


def test_slowed_dfu_forward_is_flagged(monkeypatch):
    names = ["dfu-fwd-32", "unet-fwd-32"]
    base = perf.measure(names, repeats=3, rounds=2)
    baseline = {"throughput": base}
    again = perf.measure(names, repeats=3, rounds=2)
    assert all(r["status"] != "REGRESSION" for r in compare(baseline, {}, again))

    from models.networks import DualUNet

    forward = DualUNet.forward

    def slow_forward(self, *args, **kwargs):
        if self.arch.mode == "dual":
            # ~4x the kernel's work (not a sleep: on a CPU the kernels are timed in CPU time)
            for _ in range(3):
                forward(self, *args, **kwargs)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(DualUNet, "forward", slow_forward)
    slowed = perf.measure(names, repeats=3, rounds=2)
    verdict = {r["what"]: r["status"] for r in compare(baseline, {}, slowed)}
    assert verdict["dfu-fwd-32 time/gemm"] == "REGRESSION"
    assert verdict["unet-fwd-32 time/gemm"] != "REGRESSION"


def test_missing_baseline_is_one_line(run_cli, tmp_path):
    code, _, err = run_cli("regress", "--baseline", str(tmp_path / "none.json"), "--skip-throughput")
    assert code == 2 and "--update" in err and len(err.strip().splitlines()) == 1


def test_quality_of_a_run_with_two_fid_modes_is_the_primary_modes():
    rows = [{"model": "dfu", "sample_resolution": 16, "fid": 10.0, "kid": 0.1, "fid_mode": "clean"},
            {"model": "dfu", "sample_resolution": 16, "fid": 8.0, "kid": 0.08, "fid_mode": "legacy"}]
    assert quality_from_rows(rows) == {"dfu@16": {"fid": 10.0, "kid": 0.1}}
    assert quality_from_rows(rows[::-1]) == {"dfu@16": {"fid": 8.0, "kid": 0.08}}
