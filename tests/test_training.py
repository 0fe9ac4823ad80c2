"""Training determinism and exact resume; per-sample seeds; checkpoints without pickle."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import checkpoint
from bench.datasets import ToyFaces, to_float_tensor
from bench.errors import BenchError
from models.adapters import ADAPTERS, BilinearAdapter, DFUAdapter, UNetAdapter
from models.training import DataSchedule, TrainSettings, ema_beta, lr_at, stream_indices

FACES = ToyFaces(size=64, seed=0)


def batch_fn(idx, res):
    return to_float_tensor(FACES.images([int(i) for i in idx], res))


def settings(steps=6):
    return TrainSettings(resolutions=(16, 24), weights=(0.3, 0.7), schedule="weighted", steps=steps, batch_size=4,
                         lr=2e-3, dataset_size=len(FACES), lr_warmup_nimg=8, ema_halflife_kimg=0.01, seed=3)


def draws(s: TrainSettings, n: int, rank: int = 0, world: int = 1) -> list[tuple[int, np.ndarray]]:
    sched = DataSchedule(s, rank, world)
    return [sched.draw(k) for k in range(n)]


def test_weighted_draws_one_resolution_per_step_by_weight():
    s = TrainSettings(resolutions=(16, 24), weights=(0.2, 0.8), schedule="weighted", steps=1, batch_size=4,
                      lr=1e-3, dataset_size=10, seed=0)
    res = [r for r, _ in draws(s, 2000)]
    assert set(res) == {16, 24}
    assert abs(np.mean(np.array(res) == 24) - 0.8) < 0.04
    # the same draws whatever the process count (every rank slices one global batch)
    assert [r for r, _ in draws(s, 50, rank=1, world=2)] == res[:50]


def test_round_robin_follows_the_stated_order():
    s = TrainSettings(resolutions=(96, 80, 64, 48, 32), steps=1, batch_size=4, lr=1e-3, dataset_size=100)
    assert [r for r, _ in draws(s, 12)] == [96, 80, 64, 48, 32] * 2 + [96, 80]
    with pytest.raises(ValueError, match="round-robin"):
        TrainSettings(resolutions=(32, 64), weights=(0.5, 0.5), steps=1, batch_size=4, lr=1e-3, dataset_size=10)


def test_one_shuffled_pass_draws_every_image_exactly_once():
    s = TrainSettings(resolutions=(16, 32), steps=1, batch_size=10, lr=1e-3, dataset_size=50, seed=4)
    got = {16: [], 32: []}
    for r, idx in draws(s, 20):  # 10 steps per resolution = 100 images = two passes of 50
        got[r] += idx.tolist()
    for r, idx in got.items():
        first, second = idx[:50], idx[50:]
        assert sorted(first) == list(range(50)) and sorted(second) == list(range(50)), r
        assert first != second and first != list(range(50))  # shuffled, and reshuffled per pass
    assert got[16][:50] != got[32][:50]  # each resolution has its own stream
    # a pass boundary inside one batch: positions 45..54 = the last 5 of pass 0, the first 5 of pass 1
    np.testing.assert_array_equal(stream_indices(4, 16, 50, 45, 10),
                                  np.concatenate([stream_indices(4, 16, 50, 45, 5), stream_indices(4, 16, 50, 50, 5)]))


def test_resume_replays_the_stream_positions():
    for schedule, weights in (("round-robin", None), ("weighted", (0.3, 0.7))):
        s = TrainSettings(resolutions=(16, 24), weights=weights, schedule=schedule, steps=1, batch_size=7,
                          lr=1e-3, dataset_size=30, seed=2)
        straight = draws(s, 12)
        resumed = DataSchedule(s)
        resumed.skip_to(8)
        for k in range(8, 12):
            r, idx = resumed.draw(k)
            assert r == straight[k][0] and idx.tolist() == straight[k][1].tolist()


def test_weighted_per_rank_draws_per_process():
    s = TrainSettings(resolutions=(16, 24, 32), schedule="weighted-per-rank", steps=1, batch_size=8, lr=1e-3,
                      dataset_size=40, seed=1)
    r0, r1 = draws(s, 40, 0, 2), draws(s, 40, 1, 2)
    assert all(len(idx) == 4 for _, idx in r0 + r1)  # each rank draws its own half batch
    assert any(a[0] != b[0] for a, b in zip(r0, r1))  # ranks train on different resolutions in one step


def test_lr_is_zero_at_step_zero_and_ramps_on_images_seen():
    s = TrainSettings(resolutions=(32,), steps=1, batch_size=256, lr=1e-4, dataset_size=10,
                      lr_warmup_nimg=10_000_000)
    assert lr_at(s, 0) == 0.0
    assert lr_at(s, 1) == pytest.approx(1e-4 * 256 / 1e7)
    assert lr_at(s, 4899) == pytest.approx(1e-4 * 4899 * 256 / 1e7)  # the fine-tune at 1254 kimg: ~1.25e-5
    assert lr_at(s, 50_000) == 1e-4
    no_warmup = TrainSettings(resolutions=(32,), steps=1, batch_size=4, lr=1e-3, dataset_size=10)
    assert (lr_at(no_warmup, 0), lr_at(no_warmup, 1)) == (0.0, 1e-3)  # EDM: min(nimg / 1e-8, 1)


def test_ema_beta_of_the_first_steps_is_edms():
    """EDM: halflife = min(500 kimg, nimg * 0.05) on the images before the step,
    beta = 0.5 ** (batch / halflife); batch 256."""
    s = TrainSettings(resolutions=(32,), steps=1, batch_size=256, lr=1e-3, dataset_size=10,
                      ema_halflife_kimg=500, ema_rampup=0.05)
    want = [0.0] + [0.5 ** (256 / (k * 256 * 0.05)) for k in range(1, 5)]  # 0, 2^-20, 2^-10, 2^-6.67, 2^-5
    assert [ema_beta(s, k) for k in range(5)] == pytest.approx(want, rel=1e-12, abs=0)
    transfer = TrainSettings(resolutions=(32,), steps=1, batch_size=256, lr=1e-3, dataset_size=10,
                             ema_halflife_kimg=500, ema_rampup=None)
    assert ema_beta(transfer, 0) == pytest.approx(0.5 ** (256 / 500_000))  # no ramp-up: keeps the base's EMA


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


def test_nonfinite_names_the_first_float_tensor_with_nan_or_inf():
    """bench.checkpoint.nonfinite, which import-checkpoint and every checkpoint loaded to sample
    use: integer tensors are not checked, and finite values whose sum overflows are finite."""
    finite = {"w": torch.ones(3), "step": torch.tensor([2**62]), "big": torch.full((4,), 6e4, dtype=torch.float16)}
    assert checkpoint.nonfinite(finite) is None
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.zeros(5)
        t[3] = bad
        assert checkpoint.nonfinite({**finite, "x": t, "y": t.clone()}) == "x"


def test_bilinear_upsamples_source():
    src = FACES.images(range(3), 16)
    m = BilinearAdapter(lambda n, r, s: src[:n], base_resolution=16)
    up = m.sample(3, 32, seed=0)
    assert up.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(m.sample(3, 16, seed=0), src)
    # bilinear keeps the coarse picture: downsampling the upsampled image returns close to it
    down = torch.nn.functional.avg_pool2d(torch.from_numpy(up).permute(0, 3, 1, 2).float(), 2)
    assert (down - torch.from_numpy(src).permute(0, 3, 1, 2).float()).abs().mean() < 8


@pytest.mark.parametrize("schedule", ["round-robin", "weighted"])
def test_data_warmup_limits_resolutions_then_releases(schedule):
    s = TrainSettings(resolutions=(16, 24, 32), schedule=schedule, steps=1, batch_size=10, lr=1e-3, dataset_size=10,
                      seed=0, data_warmup_kimg=1.0, data_warmup_max_resolution=24)
    res = [r for r, _ in draws(s, 400)]
    early, late = set(res[:100]), set(res[100:])  # 100 steps x 10 images = 1 kimg
    assert early == {16, 24} and late == {16, 24, 32}


@pytest.mark.parametrize("cls", [UNetAdapter, DFUAdapter])
def test_micro_batches_accumulate_the_full_batch_gradient(cls):
    grads = []
    for micro in (None, ((16, 2), (24, 3))):
        torch.manual_seed(0)
        s = TrainSettings(resolutions=(24, 16), steps=1, batch_size=6, lr=1e-3, dataset_size=len(FACES),
                          seed=5, micro_batch=micro)
        t = cls("cpu-tiny").trainer(s)
        t.train_step(batch_fn)
        grads.append(([p.grad.clone() for p in t.net.parameters()], t.losses[0]))
    (g_full, l_full), (g_micro, l_micro) = grads
    assert l_micro == pytest.approx(l_full, rel=1e-5)
    for a, b in zip(g_full, g_micro):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)  # summation order differs
