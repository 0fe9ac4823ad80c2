"""Suite runtime options: bf16 autocast and torch.compile run (CPU here; CUDA in reports/perf/gpu.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.config import parse_suite
from bench.datasets import ToyFaces, to_float_tensor
from bench.plan import plan_suite
from bench.run import set_cuda_precision
from models.adapters import DFUAdapter
from models.training import TrainSettings

FACES = ToyFaces(size=32, seed=0)


def batch_fn(idx, res):
    return to_float_tensor(FACES.images([int(i) for i in idx], res))


def settings(**kw):
    return TrainSettings(resolutions=(16,), steps=3, batch_size=2, lr=1e-3, dataset_size=len(FACES), seed=1, **kw)


def train_and_sample(**options):
    torch.manual_seed(0)
    adapter = DFUAdapter("cpu-tiny", sample_steps=2, **options)
    trainer = adapter.trainer(settings(precision=options.get("precision", "fp32"),
                                       compile_backend=options.get("compile_backend")))
    losses = [trainer.train_step(batch_fn) for _ in range(3)]
    adapter.adopt(trainer)
    return adapter, losses, adapter.sample(2, 16, seed=0, batch_size=2)


def test_bf16_autocast_trains_and_samples(one_thread):
    seen = []
    torch.manual_seed(0)
    probe = DFUAdapter("cpu-tiny", sample_steps=2, precision="bf16")
    handles = [m.register_forward_hook(lambda mod, inp, out: seen.append(getattr(out, "dtype", None)))
               for m in probe.net.modules()]
    probe.trainer(settings(precision="bf16")).train_step(batch_fn)
    for h in handles:
        h.remove()
    assert torch.bfloat16 in seen  # the forward really ran under bf16 autocast
    adapter, losses, images = train_and_sample(precision="bf16")
    _, ref_losses, _ = train_and_sample()
    assert all(np.isfinite(losses)) and np.allclose(losses, ref_losses, rtol=0.05)
    assert images.dtype == np.uint8 and images.shape == (2, 16, 16, 3)
    assert all(p.dtype == torch.float32 for p in adapter.net.parameters())  # weights stay fp32


def test_compile_trains_and_samples(one_thread):
    # aot_eager: dynamo's graph capture and AOT autograd without inductor's C++ code
    # generation, which takes minutes per resolution on this CPU (inductor on CUDA:
    # reports/perf/gpu.md)
    torch._dynamo.reset()
    _, losses, images = train_and_sample(compile_backend="aot_eager")
    _, ref_losses, ref_images = train_and_sample()
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    assert np.abs(images.astype(int) - ref_images).max() <= 1


def test_runtime_options_reach_training_and_sampling():
    spec = {"name": "rt", "device": "cpu", "dataset": {"kind": "toyfaces", "size": 16},
            "models": [{"name": "dfu", "adapter": "dfu", "arch": "cpu-tiny",
                        "train": {"resolutions": [16], "steps": 2, "batch_size": 2}}],
            "sample": {"resolutions": [16], "n": 2, "steps": 2},
            "runtime": {"precision": "bf16", "compile": True, "compile_backend": "aot_eager"}}
    plan = plan_suite(parse_suite(spec))
    adapter = plan.model("dfu").adapter
    assert (adapter.precision, adapter.compile_backend) == ("bf16", "aot_eager")
    s = plan.model("dfu").train
    assert (s.precision, s.compile_backend) == ("bf16", "aot_eager")


def test_fp32_means_no_tf32_on_cuda():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        set_cuda_precision("fp32")
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        set_cuda_precision("tf32")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_bad_precision_is_one_line():
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="runtime.precision"):
        parse_suite({"name": "x", "dataset": {}, "models": [{"name": "b", "adapter": "bilinear"}],
                     "sample": {"resolutions": [16], "n": 2}, "runtime": {"precision": "fp8"}})


def test_whole_dfu_is_one_graph_for_torch_compile(one_thread):
    """No graph break anywhere in EDMPrecond(DualUNet): the spectral layer needs no complex dtype."""
    import torch._dynamo

    from models.edm import EDMPrecond
    from models.networks import DualUNet, get_arch

    torch._dynamo.reset()
    net = EDMPrecond(DualUNet(get_arch("cpu-tiny")))
    explanation = torch._dynamo.explain(net)(torch.randn(2, 3, 16, 16), torch.ones(2))
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0)


def test_dfu_stays_one_graph_where_dynamo_cannot_trace_autocast_availability(one_thread, monkeypatch):
    """torch 2.11 (the lent GPU machine's) cannot trace ``torch.amp.is_autocast_available``: a
    spectral layer that asked it broke the compiled DFU into a graph per layer and hit dynamo's
    recompile limit (seen under torch 2.11.0 with benchmarks/gpu_perf.py). Made opaque to
    dynamo here, as it is there, the DFU -- under autocast too -- must still be one graph."""
    import torch._dynamo

    from models.edm import EDMPrecond
    from models.networks import DualUNet, get_arch

    monkeypatch.setattr(torch.amp, "is_autocast_available", torch._dynamo.disable(torch.amp.is_autocast_available))
    net = EDMPrecond(DualUNet(get_arch("cpu-tiny")))
    for autocast in (False, True):
        torch._dynamo.reset()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            explanation = torch._dynamo.explain(net)(torch.randn(2, 3, 16, 16), torch.ones(2))
        assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
