"""The regression guard flags a worse model and a slowed kernel, and passes unchanged code."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from bench import perf
from bench.dist import cpu_fields, machine_kind
from bench.regress import compare, quality_from_rows, updated_baseline

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
    # also against another machine kind's entry, held to the wider limit
    elsewhere = {"throughput": [{**base, "machine": "cpu elsewhere"}]}
    verdict = {r["what"]: r["status"] for r in compare(elsewhere, {}, slowed)}
    assert verdict == {"dfu-fwd-32 time/gemm": "REGRESSION", "unet-fwd-32 time/gemm": "ok (other machine)"}


def test_missing_baseline_is_one_line(run_cli, tmp_path):
    code, _, err = run_cli("regress", "--baseline", str(tmp_path / "none.json"), "--skip-throughput")
    assert code == 2 and "--update" in err and len(err.strip().splitlines()) == 1


def test_quality_of_a_run_with_two_fid_modes_is_the_primary_modes():
    rows = [{"model": "dfu", "sample_resolution": 16, "fid": 10.0, "kid": 0.1, "fid_mode": "clean"},
            {"model": "dfu", "sample_resolution": 16, "fid": 8.0, "kid": 0.08, "fid_mode": "legacy"}]
    assert quality_from_rows(rows) == {"dfu@16": {"fid": 10.0, "kid": 0.1}}
    assert quality_from_rows(rows[::-1]) == {"dfu@16": {"fid": 8.0, "kid": 0.08}}


def test_machine_kind_names_the_cpu_generation(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\n\nprocessor\t: 1\nvendor_id\t: Other\nmodel name\t: Second\n")
    fields = cpu_fields(info)
    assert fields["vendor_id"] == "AuthenticAMD" and fields["model name"] == "AMD EPYC"  # the first processor's
    kind = machine_kind(torch.device("cpu"), fields)
    assert kind == f"cpu AuthenticAMD family 25 model 17 (AMD EPYC), {torch.backends.cpu.get_cpu_capability()}"
    # two generations behind the same VM model name are two kinds
    assert machine_kind(torch.device("cpu"), {**fields, "model": "1"}) != kind
    assert cpu_fields(tmp_path / "missing") == {}
    assert machine_kind(torch.device("cpu"), {}).startswith("cpu (")  # no /proc/cpuinfo: platform's name


def _tp(machine, ratio):
    return {"machine": machine, "kernels": {"k": {"ratio": ratio}}}


def _status(baseline, machine, ratio):
    (row,) = compare(baseline, {}, _tp(machine, ratio))
    return row["status"], row["baseline"]


def test_throughput_is_held_tightly_on_its_own_machine_kind_and_loosely_elsewhere():
    baseline = {"throughput": [_tp("cpu A", 10.0), _tp("cpu B", 20.0)]}
    assert _status(baseline, "cpu B", 29.0) == ("ok", 20.0)  # its own kind's entry, +45%
    assert _status(baseline, "cpu B", 31.0) == ("REGRESSION", 20.0)  # +55%
    assert _status(baseline, "cpu B", 13.0) == ("faster", 20.0)
    # a kind with no entry: the first entry, within +150% -- what a machine change moved (+55%) passes,
    # several times the work does not
    assert _status(baseline, "cpu C", 15.5) == ("ok (other machine)", 10.0)
    assert _status(baseline, "cpu C", 26.0) == ("REGRESSION", 10.0)
    assert _status(baseline, "cpu C", 3.0) == ("faster (other machine)", 10.0)
    legacy = {"throughput": {"kernels": {"k": {"ratio": 10.0}}}}  # written before machine kinds were recorded
    assert _status(legacy, "cpu A", 15.5) == ("ok (other machine)", 10.0)
    assert _status({**baseline, "tolerances": {"throughput_rel_other_machine": 0.5}}, "cpu C", 15.5)[0] == "REGRESSION"


def test_update_replaces_this_machines_entry_and_keeps_the_rest():
    legacy = {"suite": "suites/ci.yaml", "tolerances": {"fid_rel": 0.2}, "environment": {"time": "then"},
              "quality": {"dfu@16": {"fid": 1.0, "kid": 0.1}}, "throughput": {"kernels": {"k": {"ratio": 10.0}}}}
    env = {"time": "now"}
    a = updated_baseline(legacy, Path("other.yaml"), {}, _tp("cpu A", 11.0), env)  # --skip-quality on machine A
    assert a["quality"] == legacy["quality"] and a["suite"] == "suites/ci.yaml"
    # the old entry keeps the environment it was measured in, the new one gets this run's
    assert a["throughput"] == [{**legacy["throughput"], "environment": {"time": "then"}},
                               {**_tp("cpu A", 11.0), "environment": env}]
    assert a["environment"] == env
    assert a["tolerances"]["fid_rel"] == 0.2 and a["tolerances"]["throughput_rel_other_machine"] == 1.5
    again = updated_baseline(a, Path("suites/ci.yaml"), {}, _tp("cpu A", 12.0), {"time": "later"})
    assert again["throughput"] == [a["throughput"][0], {**_tp("cpu A", 12.0), "environment": {"time": "later"}}]
    quality = {"dfu@16": {"fid": 2.0, "kid": 0.2}}
    q = updated_baseline(again, Path("suites/ci.yaml"), quality, {"kernels": {}}, env)  # --skip-throughput
    assert q["quality"] == quality and q["throughput"] == again["throughput"]
    fresh = updated_baseline(None, Path("suites/ci.yaml"), quality, _tp("cpu A", 12.0), env)
    assert fresh["throughput"] == [{**_tp("cpu A", 12.0), "environment": env}] and fresh["quality"] == quality


def test_regress_says_when_it_compares_across_machine_kinds(run_cli, tmp_path, monkeypatch):
    here = machine_kind(torch.device("cpu"))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"quality": {}, "throughput": [_tp("cpu elsewhere", 10.0)]}))
    monkeypatch.setattr(perf, "measure", lambda repeats: _tp(here, 15.5))
    args = ["regress", "--baseline", str(baseline), "--skip-quality", "--repeats", "1"]
    code, _, err = run_cli(*args)
    assert code == 0 and "ok (other machine)" in err and "no entry for this machine kind" in err, err
    code, _, err = run_cli(*args, "--update")  # records this kind beside the other
    assert code == 0, err
    assert [e["machine"] for e in json.loads(baseline.read_text())["throughput"]] == ["cpu elsewhere", here]
    monkeypatch.setattr(perf, "measure", lambda repeats: _tp(here, 15.5 * 1.6))
    code, _, err = run_cli(*args)
    assert code == 1 and "REGRESSION" in err and "no entry for this machine kind" not in err, err
