"""Fine-tuning (mixed and spectral-only, per-level freezing) and kimg-based schedules."""
from __future__ import annotations

import pytest
import yaml
from safetensors.torch import load_file

from bench.config import TrainConfig, parse_suite
from bench.errors import BenchError
from bench.plan import plan_suite
from models.images import resize_bilinear
from models.edm import EDMPrecond
from models.networks import DualUNet, get_arch
from models.training import frozen_parameters, parameter_level

BASE = {"resolutions": [16, 24], "steps": 4, "batch_size": 4, "lr": 0.002, "checkpoint_every": 2}


def suite(*finetunes, base_adapter="dfu"):
    return {
        "name": "ft", "seed": 0, "device": "cpu",
        "dataset": {"kind": "toyfaces", "size": 64},
        "models": [{"name": "dfu", "adapter": base_adapter, "arch": "cpu-tiny", "train": BASE}, *finetunes],
        "sample": {"resolutions": [16], "n": 4, "steps": 2, "batch_size": 4},
        "metrics": {"metrics": ["fid"]},
    }


def ft(name="dfu+ft", **finetune):
    return {"name": name, "adapter": "dfu", "arch": "cpu-tiny",
            "finetune": {"base": "dfu", "target_resolution": 40, **finetune},
            "train": {"steps": 3, "batch_size": 4, "lr": 1e-4}}


def test_kimg_schedule_converts_to_steps():
    t = TrainConfig(resolutions=[32], kimg=1.0, batch_size=16, lr_warmup_kimg=0.1, checkpoint_every_kimg=0.32)
    assert (t.total_steps, t.warmup_nimg, t.checkpoint_steps) == (63, 100, 20)
    t = TrainConfig(resolutions=[32], steps=10, lr_warmup_steps=3, checkpoint_every=5)
    assert (t.total_steps, t.warmup_nimg, t.checkpoint_steps) == (10, 48, 5)
    with pytest.raises(ValueError, match="steps or kimg, not both"):
        TrainConfig(resolutions=[32], steps=10, kimg=1.0)
    with pytest.raises(ValueError, match="steps or kimg"):
        TrainConfig(resolutions=[32])


def test_mixed_weights_and_upsampled_resolution():
    cfg = parse_suite(suite(ft(target_weight=0.3)))
    plan = plan_suite(cfg)
    s = plan.model("dfu+ft").train
    assert s.resolutions == (16, 24, 40) and s.dataset_size == 64
    assert s.weights == pytest.approx((0.35, 0.35, 0.3))
    assert s.upsampled == ((40, 24),) and s.frozen == () and s.schedule == "weighted"
    assert s.seed != plan.model("dfu").train.seed  # other draws than the base's
    assert plan.model("dfu+ft").train_resolutions == (16, 24)  # real data: the base's
    assert plan.model("dfu+ft").finetune_base == "dfu" and plan.model("dfu+ft").largest_trained_resolution == 40


def test_a_finetune_is_a_transfer_start():
    """As the authors' evaluated snapshot: the EMA continues the base's without a ramp-up,
    augmentation is inherited, the LR ramps over the fine-tune's own warm-up."""
    spec = suite(ft())
    spec["models"][0]["train"] = {**BASE, "augment": 0.12, "ema_rampup": 0.05}
    spec["models"][1]["train"].update(lr_warmup_kimg=10000)
    cfg = parse_suite(spec)
    plan = plan_suite(cfg)
    base, tuned = (m.train for m in plan.models)
    assert (base.ema_rampup, base.augment, base.schedule) == (0.05, 0.12, "round-robin")
    assert (tuned.ema_rampup, tuned.augment, tuned.lr_warmup_nimg) == (None, 0.12, 10_000_000)
    spec["models"][1]["train"].update(ema_rampup=0.1, augment=0.2)  # the suite can still say otherwise
    cfg = parse_suite(spec)
    tuned = plan_suite(cfg).models[1].train
    assert (tuned.ema_rampup, tuned.augment) == (0.1, 0.2)


def test_spectral_only_trains_on_the_target_alone():
    cfg = parse_suite(suite(ft(strategy="spectral-only"), ft("dfu+sw", strategy="spectral-weights-only")))
    plan = plan_suite(cfg)
    authors, strict = (m.train for m in plan.models[1:])
    assert (authors.resolutions, authors.weights, authors.upsampled) == ((40,), None, ((40, 24),))
    assert strict.resolutions == (16, 24, 40)


def test_mixed_weights_can_weigh_the_base_resolutions():
    spec = suite(ft())
    spec["models"][1]["train"]["weights"] = [1.0, 3.0]  # 16 and 24 px, in the base's order
    cfg = parse_suite(spec)
    s = plan_suite(cfg).models[1].train
    assert s.weights == pytest.approx((0.175, 0.525, 0.3))
    spec["models"][1]["train"]["weights"] = [1.0, 2.0, 3.0]
    with pytest.raises(BenchError, match="one weight per base resolution"):
        plan_suite(parse_suite(spec))


def test_frozen_parameters_rules():
    net = EDMPrecond(DualUNet(get_arch("cpu-tiny", mode="dual")))
    names = [n for n, _ in net.named_parameters()]
    assert parameter_level("model.enc.2_block0.conv0.spatial_conv.weight") == 2
    assert parameter_level("model.map_layer0.weight") is None
    spectral_only = set(frozen_parameters(net, "spectral-only"))  # the authors' --finetune_spectral
    assert spectral_only == {n for n in names if "spatial_conv" in n}
    assert any(n.endswith("spatial_conv.bias") for n in spectral_only)
    strict = set(frozen_parameters(net, "spectral-weights-only"))
    assert strict == {n for n in names if "spectral_conv" not in n}
    lv = set(frozen_parameters(net, "mixed", {0: ["norm"], 1: ["all"], "misc": ["all"]}))
    assert lv == {n for n in names if (parameter_level(n) == 0 and ".norm" in n or "aux_norm" in n)
                  or parameter_level(n) == 1 or parameter_level(n) is None}
    assert set(frozen_parameters(net, "mixed", {2: ["spectral"]})) == {
        n for n in names if parameter_level(n) == 2 and "spectral_conv" in n}
    with pytest.raises(ValueError, match="levels"):
        frozen_parameters(net, "mixed", {9: ["all"]})
    with pytest.raises(ValueError, match="no parameter to train"):
        frozen_parameters(net, "mixed", {lvl: ["all"] for lvl in range(4)} | {"misc": ["all"]})
    unet = EDMPrecond(DualUNet(get_arch("cpu-tiny", mode="spatial")))
    with pytest.raises(ValueError, match="spectral convolutions"):
        frozen_parameters(unet, "spectral-only")


@pytest.mark.parametrize("finetune, message", [
    ({"base": "nope"}, "is not a model listed before"),
    ({"target_resolution": 24}, "already a training resolution"),
    ({"upsample_from": 32}, "is not a training resolution of dfu"),
    ({"strategy": "spectral-only", "freeze": {7: ["all"]}}, "levels"),
])
def test_bad_finetune_is_one_line(finetune, message):
    with pytest.raises(BenchError, match=message):
        plan_suite(parse_suite(suite(ft(**finetune))))


def test_finetune_needs_same_network():
    with pytest.raises(BenchError, match="same network"):
        plan_suite(parse_suite(suite(ft(), base_adapter="unet")))


def test_resize_bilinear_is_the_fig5_upsampler():
    import numpy as np

    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[0, 0, 0] = 255
    up = resize_bilinear(img, 4)
    assert up.shape == (1, 4, 4, 3) and up[0, 0, 0, 0] == 255 and up[0, 3, 3, 0] == 0


def test_finetune_runs_from_base_and_respects_freezing(tmp_path, run_cli):
    spec = suite(ft("dfu+mixed", freeze={0: ["norm"], "misc": ["all"]}),
                 ft("dfu+spectral", strategy="spectral-weights-only"), ft("dfu+authors", strategy="spectral-only"))
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, _, err = run_cli("run", str(path), "--results", str(tmp_path), "--run-id", "r")
    assert code == 0, err
    ckpt = tmp_path / "ft" / "r" / "checkpoints"
    base = load_file(ckpt / "dfu" / "model.safetensors")
    mixed = load_file(ckpt / "dfu+mixed" / "model.safetensors")
    spectral = load_file(ckpt / "dfu+spectral" / "model.safetensors")
    changed = lambda other: {k for k in base if not bool((base[k] == other[k]).all())}
    # frozen parameters stay exactly the base's (so training started from the base) ...
    assert changed(spectral) and all("spectral_conv" in k for k in changed(spectral))
    authors = changed(load_file(ckpt / "dfu+authors" / "model.safetensors"))
    assert authors and not any("spatial_conv" in k for k in authors) and any("norm" in k for k in authors)
    moved = changed(mixed)
    assert moved and not any(parameter_level(k) is None or (parameter_level(k) == 0 and ".norm" in k) for k in moved)
    # ... and the mixed run trained on the upsampled target resolution too
    import json

    meta = json.loads((ckpt / "dfu+mixed" / "model.json").read_text())
    assert meta["train_resolutions"] == [16, 24, 40]
    assert meta["train_settings"]["upsampled"] == [[40, 24]]
