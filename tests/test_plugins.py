"""The plug-in boundary: an adapter defined here, registered with models.adapters.register, runs through
`bench run` and shows up in the report with no change to bench/; and bench/ tests no adapter's name."""
from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.errors import BenchError
from bench.io import PROJECT_ROOT
from bench.plan import plan_suite
from bench.config import parse_suite
from models.adapters import ADAPTERS, Adapter, EDMAdapter, register


class FlatGrey(Adapter):
    """An untrained baseline: sample j is one grey level drawn from seed + j."""

    role = "baseline"

    def sample(self, n, resolution, seed, batch_size=32):
        levels = [np.random.default_rng(seed + j).integers(40, 216) for j in range(n)]
        return np.stack([np.full((resolution, resolution, 3), v, np.uint8) for v in levels])


class FNOUNet(EDMAdapter):
    """The EDM UNet with spectral convolutions only (an FNO-UNet): trainable, role spectral from its mode."""

    mode = "spectral"


class NoRole(Adapter):
    def sample(self, n, resolution, seed, batch_size=32):
        return np.zeros((n, resolution, resolution, 3), np.uint8)


TOYS = {"toy-flat": FlatGrey, "toy-fno": FNOUNet, "toy-norole": NoRole}

SUITE = {
    "name": "plugins", "seed": 0, "device": "cpu",
    "dataset": {"kind": "toyfaces", "size": 64},
    "models": [
        {"name": "fno", "adapter": "toy-fno", "arch": "cpu-tiny",
         "train": {"resolutions": [16], "steps": 4, "batch_size": 4, "checkpoint_every": 2}},
        {"name": "flat", "adapter": "toy-flat"},
    ],
    "sample": {"resolutions": [16, 24], "n": 8, "steps": 2, "batch_size": 8},
    "metrics": {"metrics": ["fid", "kid", "spectral"], "batch_size": 8},
}


@pytest.fixture
def toys():
    for name, cls in TOYS.items():
        register(name)(cls)
    yield
    for name in TOYS:
        ADAPTERS.pop(name, None)


def test_a_new_adapter_runs_through_bench_run_and_the_report(toys, run_cli, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("DFU_BENCH_CACHE", str(tmp_path / "cache"))
    code, out, _ = run_cli("list")
    assert code == 0 and "toy-flat" in out and "toy-fno" in out
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    code, _, err = run_cli("run", str(suite), "--results", str(tmp_path / "results"), "--run-id", "r",
                           "--report-dir", str(tmp_path / "reports"))
    assert code == 0, err
    run = tmp_path / "results" / "plugins" / "r"
    df = pd.read_csv(run / "metrics.csv", dtype={"train_resolutions": str})
    roles = dict(zip(df["model"], df["role"]))
    assert roles == {"fno": "spectral", "flat": "baseline"}
    assert dict(zip(df["model"], df["adapter"])) == {"fno": "toy-fno", "flat": "toy-flat"}
    assert df.loc[df["model"] == "fno", "train_resolutions"].iloc[0] == "16"
    assert df["fid"].notna().all() and df["spectral_lsd"].notna().all()
    card = yaml.safe_load((run / "checkpoints" / "fno" / "model_card.json").read_text())
    assert card["mode"] == "spectral" and card["params_spectral"] > 0
    idx = (tmp_path / "reports" / "plugins" / "index.md").read_text()
    assert "| fno | 16 |" in idx and "| flat |" in idx  # both in the tables
    assert "Toy-flat baseline flat" in idx  # the findings compare the baseline with the trained model
    assert "Rows: flat (baseline), fno (spectral)" in idx and (run / "fig5.png").is_file()
    # and `bench report` rebuilds it from the run directory alone
    code, _, err = run_cli("report", str(run), "--report-dir", str(tmp_path / "again"))
    assert code == 0, err
    assert (tmp_path / "again" / "plugins" / "index.md").read_text() == idx


def test_an_adapter_must_declare_a_role(toys):
    spec = {**SUITE, "models": [{"name": "x", "adapter": "toy-norole"}]}
    with pytest.raises(BenchError, match=r"models.0 \(x\).adapter: toy-norole declares role None"):
        plan_suite(parse_suite(spec))


def test_an_untrained_adapter_takes_no_train_section(toys):
    spec = {**SUITE, "models": [{"name": "x", "adapter": "toy-flat", "train": {"resolutions": [16], "steps": 2}}]}
    with pytest.raises(BenchError, match=r"models.0 \(x\).train: toy-flat is not trained"):
        plan_suite(parse_suite(spec))


def string_constants(path):
    """Every string constant of a module, with the function it sits in (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    owner = {}  # constant -> the innermost function around it (walk order visits outer functions first)
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        owner.update({id(node): fn.name for node in ast.walk(fn)})
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield owner.get(id(node)), node.lineno, node.value


def test_bench_tests_no_adapter_name():
    """Only models/ and the suites name adapters; bench.results reads old metrics.csv files in one function."""
    names = {"unet", "dfu", "bilinear"}
    found = {(p.name, fn, line, text) for p in sorted((PROJECT_ROOT / "bench").glob("*.py"))
             for fn, line, text in string_constants(p) if text in names}
    allowed = {f for f in found if f[:2] == ("results.py", "role_of_old_adapter")}
    assert found - allowed == set(), sorted(found - allowed)
    assert allowed, "the old-file mapping moved: update this test"
