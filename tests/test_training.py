"""Training determinism and exact resume; per-sample seeds; checkpoints without pickle."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import checkpoint
from bench.datasets import ToyFaces, to_float_tensor
from bench.errors import BenchError
from models.adapters import ADAPTERS, BilinearAdapter, DFUAdapter, UNetAdapter
from models.training import TrainSettings, draw_step

FACES = ToyFaces(size=64, seed=0)


def batch_fn(idx, res):
    return to_float_tensor(FACES.images([int(i) for i in idx], res))


def settings(steps=6):
    return TrainSettings(resolutions=(16, 24), weights=(0.3, 0.7), steps=steps, batch_size=4, lr=2e-3,
                         dataset_size=len(FACES), lr_warmup_steps=2, ema_halflife_kimg=0.01, seed=3)


def test_one_resolution_per_step_and_weights():
    s = TrainSettings(resolutions=(16, 24), weights=(0.2, 0.8), steps=1, batch_size=4, lr=1e-3,
                      dataset_size=10, seed=0)
    draws = [draw_step(s, k)[0] for k in range(2000)]
    assert set(draws) == {16, 24}
    assert abs(np.mean(np.array(draws) == 24) - 0.8) < 0.04
    assert draw_step(s, 7)[1].tolist() == draw_step(s, 7)[1].tolist()


@pytest.mark.parametrize("cls", [UNetAdapter, DFUAdapter])
def test_resume_matches_uninterrupted(cls, tmp_path):
    torch.manual_seed(0)
    straight = cls("cpu-tiny")
    ref = straight.trainer(settings())
    for _ in range(6):
        ref.train_step(batch_fn)

    torch.manual_seed(0)
    first = cls("cpu-tiny")
    t1 = first.trainer(settings())
    for _ in range(3):
        t1.train_step(batch_fn)
    checkpoint.save(tmp_path / "state.safetensors", t1.state_tensors(), {"step": t1.step, "losses": t1.losses})

    torch.manual_seed(123)  # a fresh process would start from other weights
    second = cls("cpu-tiny")
    t2 = second.trainer(settings())
    tensors, meta = checkpoint.load(tmp_path / "state.safetensors")
    t2.load_state_tensors(tensors, meta["step"], meta["losses"])
    for _ in range(3):
        t2.train_step(batch_fn)
    assert t2.losses == ref.losses
    for (n, a), b in zip(ref.ema.state_dict().items(), t2.ema.state_dict().values()):
        assert torch.equal(a, b), n


def test_samples_use_per_sample_seeds():
    m = DFUAdapter("cpu-tiny", sample_steps=3)
    whole = m.sample(4, 16, seed=10, batch_size=4)
    parts = np.concatenate([m.sample(1, 16, seed=10, batch_size=1), m.sample(3, 16, seed=11, batch_size=2)])
    assert whole.shape == (4, 16, 16, 3) and whole.dtype == np.uint8
    np.testing.assert_array_equal(whole, parts)
    assert not np.array_equal(whole[0], whole[1])


def test_adapter_state_round_trip(tmp_path):
    m = UNetAdapter("cpu-tiny", sample_steps=2)
    tensors, meta = m.state()
    checkpoint.save(tmp_path / "m.safetensors", tensors, meta)
    back = ADAPTERS[meta["adapter"]].from_state(*checkpoint.load(tmp_path / "m.safetensors"))
    back.sample_steps = 2
    np.testing.assert_array_equal(m.sample(2, 16, 0), back.sample(2, 16, 0))


def test_corrupt_checkpoint_is_one_line(tmp_path):
    m = UNetAdapter("cpu-tiny")
    checkpoint.save(tmp_path / "m.safetensors", *m.state())
    (tmp_path / "m.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(BenchError) as e:
        checkpoint.load(tmp_path / "m.safetensors")
    assert "corrupt" in str(e.value) and "\n" not in str(e.value)


def test_bilinear_upsamples_source():
    src = FACES.images(range(3), 16)
    m = BilinearAdapter(lambda n, r, s: src[:n], base_resolution=16)
    up = m.sample(3, 32, seed=0)
    assert up.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(m.sample(3, 16, seed=0), src)
    # bilinear keeps the coarse picture: downsampling the upsampled image returns close to it
    down = torch.nn.functional.avg_pool2d(torch.from_numpy(up).permute(0, 3, 1, 2).float(), 2)
    assert (down - torch.from_numpy(src).permute(0, 3, 1, 2).float()).abs().mean() < 8


def test_data_warmup_limits_resolutions_then_releases():
    s = TrainSettings(resolutions=(16, 24, 32), steps=1, batch_size=10, lr=1e-3, dataset_size=10, seed=0,
                      data_warmup_kimg=1.0, data_warmup_max_resolution=24)
    early = {draw_step(s, k)[0] for k in range(100)}  # 100 steps x 10 images = 1 kimg
    late = {draw_step(s, k)[0] for k in range(100, 400)}
    assert early == {16, 24} and late == {16, 24, 32}


@pytest.mark.parametrize("cls", [UNetAdapter, DFUAdapter])
def test_micro_batches_accumulate_the_full_batch_gradient(cls):
    grads = []
    for micro in (None, ((16, 2), (24, 3))):
        torch.manual_seed(0)
        s = TrainSettings(resolutions=(16, 24), steps=1, batch_size=6, lr=1e-3, dataset_size=len(FACES),
                          seed=5, micro_batch=micro)
        t = cls("cpu-tiny").trainer(s)
        t.train_step(batch_fn)
        grads.append(([p.grad.clone() for p in t.net.parameters()], t.losses[0]))
    (g_full, l_full), (g_micro, l_micro) = grads
    assert l_micro == pytest.approx(l_full, rel=1e-5)
    for a, b in zip(g_full, g_micro):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)  # summation order differs
