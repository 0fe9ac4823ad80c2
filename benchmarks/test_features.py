"""Inception feature extraction: ours vs clean-fid's stock feature path, side by side (issue #16).

Both read the same 64 PNGs (64 px toyfaces) with the same weights, clean mode:
clean-fid's `get_folder_features(..., mode="clean", num_workers=0)` with its own
TorchScript `InceptionV3W`, and `bench.features.FeatureExtractor` (eager network with
folded batch norms, resizing in a thread pool). The features must agree within 1e-4
(checked before timing). Rounds are interleaved (benchmarks/_timing.py): clean-fid
runs right before each of our rounds; `ratios.py` prints ours / clean-fid in CPU and
wall time. Throughput is the inverse: the target is ours / clean-fid <= 1/1.3 = 0.77.

Threads: 1 torch thread unless $DFU_BENCH_THREADS says otherwise (see test_spectral.py:
on the shared machine, two OpenMP threads fighting other jobs make wall times noise).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from _timing import interleaved
from bench.features import FeatureExtractor
from bench.images import ImageFiles
from bench.inception import resolve

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROUNDS = int(os.environ.get("DFU_BENCH_ROUNDS", "5"))


pytestmark = pytest.mark.usefixtures("bench_threads")


@pytest.mark.benchmark(group="inception-features")
def test_features_ours_vs_clean_fid_stock(benchmark, face_pngs):
    from cleanfid import fid as cfid
    from cleanfid.inception_torchscript import InceptionV3W

    stock = InceptionV3W(str(resolve()[0].parent), download=False).to(DEVICE).eval()
    ours = FeatureExtractor(DEVICE, batch_size=32)
    images = ImageFiles(face_pngs)

    def run_ours():
        return ours.features(iter(images), total=len(images))

    def run_stock():
        return cfid.get_folder_features(str(face_pngs), stock, num_workers=0, batch_size=32, device=DEVICE,
                                        mode="clean", verbose=False)

    diff = float(np.abs(run_ours() - run_stock()).max())
    assert diff <= 1e-4
    interleaved(benchmark, run_ours, {"clean_fid": run_stock}, rounds=ROUNDS, targets={"clean_fid": 1 / 1.3})
    benchmark.extra_info.update(images=len(images), max_abs_feature_diff=diff, device=str(DEVICE))
