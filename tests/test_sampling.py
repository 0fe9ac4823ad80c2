"""models/sampling.py: seeding, the Heun loop (eager, compiled), precision, batch size."""
from __future__ import annotations

import pytest
import torch

from models.adapters import latents
from models.edm import EDMPrecond, heun_sample
from models.networks import DualUNet, get_arch
from models.sampling import (
    CPU_BATCH,
    HeunSampler,
    auto_batch_size,
    batch_from_probes,
    precision,
    seeded_latents,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return EDMPrecond(DualUNet(get_arch("cpu-tiny"))).eval()


def test_seeded_latents_are_the_adapters_and_independent_of_batching():
    assert torch.equal(seeded_latents(3, 16, seed=7), latents(3, 16, 7))
    assert torch.equal(seeded_latents(2, 16, seed=7, first=1), latents(3, 16, 7)[1:])


def test_eager_loop_is_edm_heun_sample(net):
    z = seeded_latents(2, 16, seed=0)
    assert torch.equal(HeunSampler(net, num_steps=3)(z), heun_sample(net, z, num_steps=3))


def test_compiled_loop_equals_eager_within_1e_5(net):
    """torch.compile(aot_eager) for fixed shapes -- on CUDA the same code runs mode
    'reduce-overhead' (CUDA graphs) -- gives the eager loop's images."""
    torch._dynamo.reset()
    z = seeded_latents(2, 16, seed=3)
    eager = HeunSampler(net, num_steps=3)(z)
    compiled = HeunSampler(net, num_steps=3, compile="aot_eager")(z)
    assert (compiled - eager).abs().max().item() <= 1e-5


def test_sample_pads_batches_and_drops_the_padding(net):
    sampler = HeunSampler(net, num_steps=2)
    whole = sampler.sample(5, 16, seed=11, batch_size=5, device="cpu")
    padded = sampler.sample(5, 16, seed=11, batch_size=2, device="cpu", pad=True)  # 2 + 2 + (1 of 2)
    assert whole.shape == padded.shape == (5, 3, 16, 16)
    # (an untrained net after 2 steps: values ~50; float32 GEMMs differ with the batch size)
    assert (whole - padded).abs().max().item() <= 1e-5 * whole.abs().max().item()
    one = sampler.sample(1, 16, seed=11, batch_size=1, device="cpu")
    assert (whole[:1] - one).abs().max().item() <= 1e-5 * whole.abs().max().item()


def test_precision_contexts():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with precision("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with precision("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before
    with pytest.raises(ValueError, match="sampling precision"):
        with precision("fp16", "cpu"):
            pass


def test_bf16_sampling_runs_and_stays_close(net):
    sampler = HeunSampler(net, num_steps=2)
    fp32 = sampler.sample(2, 16, seed=0, batch_size=2, device="cpu")
    bf16 = sampler.sample(2, 16, seed=0, batch_size=2, device="cpu", precision_name="bf16")
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert 0 < (bf16 - fp32).abs().mean().item() < 0.1


def test_auto_batch_size_cpu_default_and_the_memory_fit(net):
    assert auto_batch_size(net, 64, "cpu") == CPU_BATCH
    mib = 2 ** 20
    # 100 MiB fixed + 10 MiB per sample; 85% of 2000 MiB free -> (1700 - 100) / 10 = 160
    assert batch_from_probes((4, 8), (140 * mib, 180 * mib), 2000 * mib) == 160
    assert batch_from_probes((4, 8), (140 * mib, 180 * mib), 2000 * mib, multiple=64) == 128
    assert batch_from_probes((4, 8), (140 * mib, 180 * mib), 50 * mib) == 1  # never below one
    assert batch_from_probes((4, 8), (140 * mib, 140 * mib), 2000 * mib) == 96  # flat probes: 17.5 MiB/sample
    assert batch_from_probes((4, 8), (140 * mib, 180 * mib), 10 ** 9 * mib, max_batch=512) == 512
