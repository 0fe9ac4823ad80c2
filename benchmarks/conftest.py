"""Throughput benchmarks (pytest-benchmark): `make bench`. Not part of `make test`."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from bench.allocator import keep_freed_memory
from bench.datasets import ToyFaces
from bench.errors import BenchError

ALLOCATOR = pytest.StashKey[str]()


def pytest_configure(config):
    """Every benchmark runs in the process state `bench` runs in (bench.allocator: glibc keeps the memory
    it frees), so `make bench` and `bench regress` time the same thing; $DFU_BENCH_MALLOC=system measures
    glibc's default instead. A bad value is a usage error (one line)."""
    try:
        config.stash[ALLOCATOR] = keep_freed_memory()
    except BenchError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_report_header(config):
    return f"allocator: {config.stash[ALLOCATOR]}"


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
