"""Shared fixtures: small image folders and a CLI runner that captures exit codes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.datasets import ToyFaces


if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    # `make test` runs two workers on the two cores. With torch's default of a thread per core in
    # each (and in the `bench` processes tests start), OpenMP threads wait on each other's cores:
    # the suite took 35.7 min of user time instead of 27.9 in one process. One thread each, subprocesses too.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_runtest_logstart(nodeid, location):
    """With $DFU_TEST_TRACE set (.ci/run sets it), write the id of the test about to run there: a
    fatal signal takes pytest down with a stack dump but no test name, and .ci/run prints it.
    Each of `make test`'s xdist workers writes its own file, the path plus "." and its name (gw0)."""
    trace = os.environ.get("DFU_TEST_TRACE")
    if trace:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        try:
            Path(f"{trace}.{worker}" if worker else trace).write_text(nodeid + "\n")
        except OSError:  # a full disk, say: the tests themselves will tell
            pass


@pytest.fixture
def one_thread():
    """Run single-threaded: on a shared 2-core machine OpenMP threads fighting other
    processes made the layer/network tests ~15x slower (5 s -> 80 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """tests/_hostile.py's TINY suite run to the end, once per session (the hostile, corruption,
    path and lock tests damage copies of it)."""
    from _hostile import finished_run  # a test helper module, only where a test asks for it
    return finished_run(tmp_path_factory)


@pytest.fixture
def run_cli(capsys):
    """Call the `bench` entry point in-process; returns (exit code, stdout, stderr)."""

    def _run(*args: str):
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


def write_pngs(folder, images) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{k:04d}.png")


@pytest.fixture(scope="session")
def face_folders(tmp_path_factory):
    """Two different image folders: toyfaces 0-23 at 32 px and toyfaces 100-123 at 48 px, noised."""
    root = tmp_path_factory.mktemp("faces")
    faces = ToyFaces(size=1000, seed=0)
    a = faces.images(range(24), 32)
    rng = np.random.default_rng(0)
    b = faces.images(range(100, 124), 48).astype(np.int16) + rng.integers(-40, 40, (24, 48, 48, 3))
    write_pngs(root / "a", a)
    write_pngs(root / "b", b.clip(0, 255).astype(np.uint8))
    return root / "a", root / "b"
