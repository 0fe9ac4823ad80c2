"""Throughput benchmarks (pytest-benchmark): `make bench`. Not part of `make test`."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from bench.datasets import ToyFaces


@pytest.fixture(scope="session")
def face_pngs(tmp_path_factory):
    """64 toyfaces at 64 px as PNGs: the same images for every feature path."""
    root = tmp_path_factory.mktemp("bench_faces")
    for k, img in enumerate(ToyFaces(size=64).images(range(64), 64)):
        Image.fromarray(img).save(root / f"{k:03d}.png")
    return root


@pytest.fixture(scope="module")
def bench_threads():
    """torch threads for a side-by-side benchmark module: 1 unless $DFU_BENCH_THREADS says otherwise
    (on the shared 2-core machine two OpenMP threads fighting other jobs make single rounds 10-20x
    slower); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("DFU_BENCH_THREADS", "1")))
    yield torch.get_num_threads()
    torch.set_num_threads(n)
