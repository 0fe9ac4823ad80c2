"""Inception feature extraction: ours vs clean-fid's stock `compute_fid` feature path.

Both run on the same 64 PNGs with the same weights; the numbers must agree
(max abs diff 1e-4) and the ratio of the two timings, from the same run, is
what `make bench` prints.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.inception import resolve
from bench.features import FeatureExtractor
from bench.images import ImageFiles

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
RESULTS: dict[str, np.ndarray] = {}


@pytest.mark.benchmark(group="inception-features")
def test_features_ours(benchmark, face_pngs):
    ex = FeatureExtractor(DEVICE, batch_size=32)
    images = ImageFiles(face_pngs)
    RESULTS["ours"] = benchmark.pedantic(lambda: ex.features(iter(images), total=len(images)),
                                         rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="inception-features")
def test_features_clean_fid_stock(benchmark, face_pngs):
    from cleanfid import fid as cfid
    from cleanfid.inception_torchscript import InceptionV3W

    model = InceptionV3W(str(resolve()[0].parent), download=False).to(DEVICE).eval()
    RESULTS["clean-fid"] = benchmark.pedantic(
        lambda: cfid.get_folder_features(str(face_pngs), model, num_workers=0, batch_size=32, device=DEVICE,
                                         mode="clean", verbose=False),
        rounds=3, warmup_rounds=1)
    assert np.abs(RESULTS["clean-fid"] - RESULTS["ours"]).max() <= 1e-4
