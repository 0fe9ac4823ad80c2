"""Pretrained networks in suites (`checkpoint:` instead of `train:`): made by `bench import-checkpoint`,
sampled and scored on the grid beside a model trained in the run, fine-tuned, and refused with one
line before anything is written when the checkpoint is missing, corrupt or does not fit."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from bench import api
from bench.rundir import RunDir
from models.edm import EDMPrecond
from models.networks import DualUNet, get_arch


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """A DFU converted by `bench import-checkpoint` from a state dict as the authors save theirs
    (cpu-tiny, random weights: the plumbing is under test, not the network)."""
    from bench.cli import main

    tmp = tmp_path_factory.mktemp("imported")
    torch.manual_seed(1)
    net = EDMPrecond(DualUNet(get_arch("cpu-tiny", mode="dual")))
    torch.save(net.state_dict(), tmp / "authors_dfu.pt")
    out = tmp / "dfu.safetensors"
    assert main(["import-checkpoint", str(tmp / "authors_dfu.pt"), "--arch", "cpu-tiny", "--out", str(out)]) == 0
    return out


def suite(ckpt: Path, **pretrained) -> dict:
    return {
        "name": "pretrained", "device": "cpu", "seed": 0,
        "dataset": {"kind": "toyfaces", "size": 64},
        "models": [
            {"name": "unet", "adapter": "unet", "arch": "cpu-tiny",
             "train": {"resolutions": [16], "steps": 3, "batch_size": 4, "lr": 0.002}},
            {"name": "dfu-pretrained", "adapter": "dfu", "checkpoint": str(ckpt), "trained_on": [16, 24],
             **pretrained},
            {"name": "dfu-finetuned", "adapter": "dfu",
             "finetune": {"base": "dfu-pretrained", "target_resolution": 32},
             "train": {"steps": 2, "batch_size": 4, "lr": 0.001}},
        ],
        "sample": {"resolutions": [16, 32], "n": 6, "steps": 2, "batch_size": 6},
        "metrics": {"metrics": ["fid", "kid"], "batch_size": 6},
    }


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def finished(imported, tmp_path_factory):
    from bench.cli import main

    tmp = tmp_path_factory.mktemp("run")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["run", str(write(tmp, suite(imported))), "--results", str(tmp / "results"), "--run-id", "r",
                     "--report-dir", str(tmp / "reports")])
    finally:
        torch.set_num_threads(n)
    assert code == 0
    return RunDir(tmp / "results" / "pretrained" / "r")


def test_pretrained_and_trained_models_are_both_on_the_grid(finished, imported):
    df = api.load_metrics(finished)
    grid = df.set_index(["model", "sample_resolution"])
    for model in ("unet", "dfu-pretrained", "dfu-finetuned"):
        for r in (16, 32):
            assert np.isfinite(grid.loc[(model, r), "fid"]) and np.isfinite(grid.loc[(model, r), "kid"])
    trained = df.drop_duplicates("model").set_index("model")["train_resolutions"]
    assert trained["dfu-pretrained"] == "16/24" and trained["unet"] == "16"
    assert trained["dfu-finetuned"] == "16/24"  # a fine-tune's real data is its base's
    table = pd.read_csv(finished.root / "table.csv")
    assert {"unet", "dfu-pretrained", "dfu-finetuned"} <= set(table["model"])
    index = (finished.root / "index.md").read_text()
    assert "dfu-pretrained" in index and "unet" in index


def test_pretrained_samples_come_from_the_checkpoint(finished, imported):
    model = api.load_model(imported, device="cpu", steps=2)
    with np.load(finished.samples("dfu-pretrained", 32, 0)) as z:
        assert np.array_equal(z["images"], model.sample(6, resolution=32, batch=6))
    assert not finished.checkpoint("dfu-pretrained").exists()  # nothing was trained for it
    card = json.loads(finished.model_card("dfu-pretrained").read_text())
    assert card["checkpoint"] == str(imported) and card["train_resolutions"] == [16, 24]
    assert card["params_total"] == sum(p.numel() for p in model.denoiser.parameters())
    assert set(card["flops_per_forward"]) == {"16", "32"}


def test_finetune_starts_from_the_pretrained_weights(finished, imported):
    meta = json.loads(finished.checkpoint("dfu-finetuned").with_suffix(".json").read_text())
    assert meta["train_resolutions"] == [16, 24, 32] and meta["step"] == 2
    tuned = api.load_model(finished.checkpoint("dfu-finetuned"), device="cpu").denoiser.state_dict()
    start = api.load_model(imported, device="cpu").denoiser.state_dict()
    moved = [k for k in start if not torch.equal(start[k], tuned[k])]
    assert moved  # trained for two steps from the pretrained weights, so close to them
    diff = max(float((start[k] - tuned[k]).abs().max()) for k in start)
    assert diff < 0.05


def test_a_run_model_is_a_checkpoint_with_its_resolutions(finished, tmp_path, one_thread):
    """A model of another run records its training resolutions: no trained_on needed."""
    data = suite(finished.checkpoint("unet"))
    data["models"] = [{"name": "unet-again", "adapter": "unet", "checkpoint": str(finished.checkpoint("unet"))}]
    from bench.config import parse_suite
    from bench.plan import plan_suite

    plan = plan_suite(parse_suite(data))
    (m,) = plan.models
    assert m.train_resolutions == (16,) and m.train is None and m.role == "spatial"


# ------------------------------------------------------------------------- refusals


def _mismatched_tensors(ckpt: Path, tmp: Path) -> str:
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    meta["arch_config"]["model_channels"] = 24
    (tmp / "other.safetensors").write_bytes(ckpt.read_bytes())
    (tmp / "other.json").write_text(json.dumps(meta))
    return str(tmp / "other.safetensors")


def _nonfinite(ckpt: Path, tmp: Path) -> str:
    """A copy of the checkpoint with one element of one weight NaN (a diverged network)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(ckpt))
    tensors["model.map_layer0.weight"].view(-1)[0] = float("nan")
    save_file(tensors, str(tmp / "nan.safetensors"))
    (tmp / "nan.json").write_bytes(ckpt.with_suffix(".json").read_bytes())
    return str(tmp / "nan.safetensors")


def _corrupt(ckpt: Path, tmp: Path) -> str:
    (tmp / "bad.safetensors").write_bytes(ckpt.read_bytes()[:200])
    (tmp / "bad.json").write_bytes(ckpt.with_suffix(".json").read_bytes())
    return str(tmp / "bad.safetensors")


def _no_json(ckpt: Path, tmp: Path) -> str:
    (tmp / "lone.safetensors").write_bytes(ckpt.read_bytes())
    return str(tmp / "lone.safetensors")


REFUSALS = [
    ("missing", lambda c, t: {"checkpoint": str(t / "nope.safetensors")},
     ("models.1 (dfu-pretrained).checkpoint", "nope.safetensors", "does not exist")),
    ("corrupt", lambda c, t: {"checkpoint": _corrupt(c, t)}, ("bad.safetensors", "not a readable safetensors")),
    ("nonfinite", lambda c, t: {"checkpoint": _nonfinite(c, t)},
     ("nan.safetensors", "model.map_layer0.weight", "NaN or infinite")),
    ("no-metadata", lambda c, t: {"checkpoint": _no_json(c, t)}, ("lone.json",)),
    ("tensors-do-not-fit", lambda c, t: {"checkpoint": _mismatched_tensors(c, t)}, ("other.safetensors", "do not fit")),
    ("wrong-adapter", lambda c, t: {"adapter": "unet"}, ("dual-mode network", "adapter unet")),
    ("wrong-arch", lambda c, t: {"arch": "paper-small"}, ("models.1 (dfu-pretrained).arch", "not paper-small")),
    ("arch-overrides", lambda c, t: {"arch_overrides": {"model_channels": 8}}, ("arch_overrides",)),
    ("no-resolutions", lambda c, t: {"trained_on": None}, ("trained_on", "does not record")),
    ("train-and-checkpoint", lambda c, t: {"train": {"resolutions": [16], "steps": 2}}, ("not both",)),
    ("bad-trained-on", lambda c, t: {"trained_on": [4]}, ("trained_on.0",)),
]


@pytest.mark.parametrize("change,expect", [pytest.param(c, e, id=i) for i, c, e in REFUSALS])
def test_bad_checkpoints_fail_the_plan_before_anything_is_written(run_cli, imported, tmp_path, change, expect):
    data = suite(imported)
    data["models"] = data["models"][:2]
    pre = data["models"][1]
    pre.update(change(imported, tmp_path))
    data["models"][1] = {k: v for k, v in pre.items() if v is not None}
    code, _, err = run_cli("run", str(write(tmp_path, data)), "--results", str(tmp_path / "results"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for part in expect:
        assert part in lines[0], lines[0]
    assert not (tmp_path / "results").exists()


def test_nonfinite_weights_are_refused_where_a_checkpoint_is_loaded(run_cli, imported, tmp_path):
    """A checkpoint with a NaN weight would sample NaN, saved as black images: the API and
    `bench sample` refuse it with one line naming the tensor and the file, writing nothing."""
    from bench.errors import BenchError

    path = _nonfinite(imported, tmp_path)
    with pytest.raises(BenchError) as e:
        api.load_model(path, device="cpu")
    assert str(e.value) == (f"checkpoint {path}: tensor model.map_layer0.weight holds NaN or infinite values (a "
                            "diverged or damaged network); give a checkpoint from before it diverged")
    code, _, err = run_cli("sample", path, "--resolutions", "16", "--seeds", "0-1", "--outdir",
                           str(tmp_path / "out"), "--device", "cpu")
    assert code == 2 and err.strip() == f"error: {e.value}"
    assert not (tmp_path / "out").exists()


def test_trained_on_without_a_checkpoint_is_refused(run_cli, imported, tmp_path):
    data = suite(imported)
    data["models"][0]["trained_on"] = [16]
    code, _, err = run_cli("run", str(write(tmp_path, data)), "--results", str(tmp_path / "results"))
    assert code == 2 and "models.0.trained_on" not in err and "trained_on describes a checkpoint" in err
    assert not (tmp_path / "results").exists()


def test_scale_tiny_keeps_the_pretrained_network_and_its_finetune(imported):
    """--scale tiny swaps trained models to cpu-tiny; a checkpoint's network (and a fine-tune that
    continues it) stays what the checkpoint holds, so the dry run still plans."""
    from bench.config import parse_suite
    from bench.plan import plan_suite
    from bench.scale import scale_suite

    data = suite(imported)
    data["models"][0]["arch"] = "paper-small"
    tiny = scale_suite(parse_suite(data), "tiny")
    arch = {m.name: m.arch for m in tiny.models}
    assert arch == {"unet": "cpu-tiny", "dfu-pretrained": None, "dfu-finetuned": None}
    plan = plan_suite(tiny)
    assert plan.model("dfu-finetuned").adapter.same_network(plan.model("dfu-pretrained").adapter)
