"""Throughput benchmarks (pytest-benchmark): `make bench`. Not part of `make test`."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.datasets import ToyFaces


@pytest.fixture(scope="session")
def face_pngs(tmp_path_factory):
    """64 toyfaces at 64 px as PNGs: the same images for every feature path."""
    root = tmp_path_factory.mktemp("bench_faces")
    for k, img in enumerate(ToyFaces(size=64).images(range(64), 64)):
        Image.fromarray(img).save(root / f"{k:03d}.png")
    return root
