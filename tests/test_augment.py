"""EDM's augmentation pipe: identity when off, exact geometry, EDM's label encoding, slice-consistency."""
from __future__ import annotations

import math

import pytest
import torch

from bench.config import parse_suite
from bench.errors import BenchError
from bench.plan import plan_suite
from models.augment import LABEL_DIM, AugmentPipe

PIPE = AugmentPipe(p=1.0)
ZERO = ["scale", "theta", "aniso", "phi", "tx", "ty"]


def params(n=1, **kw):
    par = {k: torch.zeros(n) for k in ["xflip", "yflip", *ZERO]}
    par.update({k: torch.full((n,), float(v)) for k, v in kw.items()})
    return par


def dot(size=32, at=(10, 12)):
    x = torch.zeros(1, 3, size, size)
    x[:, :, at[0], at[1]] = 1.0
    return x


def test_identity_and_flips_are_exact():
    x = torch.randn(2, 3, 24, 24)
    y, labels = PIPE.apply(x, params(2))
    assert torch.equal(y, x) and labels.shape == (2, LABEL_DIM) and not labels.any()
    y, labels = PIPE.apply(x, params(2, xflip=1, yflip=1))
    assert torch.equal(y, x.flip(3).flip(2)) and labels[:, :2].eq(1).all()


def test_translation_moves_content_by_the_stated_pixels():
    # tx = 1 standard unit = 0.125 x 32 px = 4 px to the right
    y, labels = PIPE.apply(dot(), params(tx=1.0))
    assert torch.nonzero(y[0, 0] > 0.99).tolist() == [[10, 16]]
    assert labels[0, 7] == 1.0


def test_quarter_rotation_is_a_rot90():
    x = torch.randn(1, 3, 16, 16)
    y, labels = PIPE.apply(x, params(theta=math.pi / 2))
    assert min((y - torch.rot90(x, k, dims=(2, 3))).abs().max().item() for k in (1, -1)) < 1e-5
    assert labels[0, 3].item() == pytest.approx(-1.0) and labels[0, 4].item() == pytest.approx(1.0)


def test_label_encoding_follows_edm():
    par = params(xflip=1, yflip=0, scale=0.5, theta=0.3, aniso=-1.2, phi=0.7, tx=0.1, ty=-0.4)
    got = AugmentPipe.labels(par)[0]
    want = [1, 0, 0.5, math.cos(0.3) - 1, math.sin(0.3), -1.2 * math.cos(0.7), -1.2 * math.sin(0.7), 0.1, -0.4]
    assert got.tolist() == pytest.approx(want, abs=1e-6)


def test_draws_gate_each_transform_with_p():
    par = AugmentPipe(p=0.12).draw(20000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert abs(par["xflip"].mean().item() - 0.5) < 0.02  # EDM: x-flips always a coin flip
    for k in ("yflip",):
        assert abs(par[k].mean().item() - 0.06) < 0.01
    for k in ("scale", "theta", "aniso", "tx"):
        assert abs((par[k] != 0).float().mean().item() - 0.12) < 0.01, k
    assert torch.equal((par["tx"] != 0), (par["ty"] != 0))  # one gate for both translation axes


def test_a_slice_of_the_batch_gets_exactly_its_augmentation():
    x = torch.randn(6, 3, 20, 20)
    par = PIPE.draw(6, torch.Generator().manual_seed(3), torch.device("cpu"))
    full, lab = PIPE.apply(x, par)
    part, lab2 = PIPE.apply(x[2:5], {k: v[2:5] for k, v in par.items()})
    assert torch.equal(part, full[2:5]) and torch.equal(lab2, lab[2:5])


def suite(**train):
    return {"name": "aug", "device": "cpu", "dataset": {"kind": "toyfaces", "size": 16},
            "models": [{"name": "dfu", "adapter": "dfu", "arch": "cpu-tiny",
                        "train": {"resolutions": [16], "steps": 2, "batch_size": 4, "augment": 0.5, **train}}],
            "sample": {"resolutions": [16], "n": 2, "steps": 2}}


def test_augment_trains_with_the_label_embedding(one_thread):
    plan = plan_suite(parse_suite(suite(micro_batch={16: 2})))
    adapter = plan.model("dfu").adapter
    assert adapter.augment_dim == 9  # set for the suite, as the authors' networks have it
    s = plan.model("dfu").train
    assert s.augment == 0.5
    from bench.datasets import ToyFaces, to_float_tensor

    faces = ToyFaces(size=16, seed=0)
    batch_fn = lambda idx, r: to_float_tensor(faces.images([int(i) for i in idx], r))
    split = [adapter.trainer(s).train_step(batch_fn) for _ in range(1)]
    torch.manual_seed(0)
    whole = plan_suite(parse_suite(suite())).model("dfu").adapter
    unsplit = whole.trainer(s.__class__(**{**s.to_dict(), "micro_batch": None, "resolutions": (16,)})
                            ).train_step(batch_fn)
    assert math.isfinite(split[0]) and split[0] == pytest.approx(unsplit, rel=1e-5)


def test_augment_refuses_a_network_without_labels():
    with pytest.raises(BenchError, match="augment_dim"):
        plan_suite(parse_suite({**suite(), "models": [{**suite()["models"][0], "arch_overrides": {"augment_dim": 0}}]}))
