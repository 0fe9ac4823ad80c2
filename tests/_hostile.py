"""Shared helpers of the hostile-input catalogue (issue #13): tests/test_hostile.py,
test_corruption.py, test_paths.py, test_lock.py and test_images.py.

The house rule under test: bad input gets exit status 2, exactly one line that
starts with `error:` (naming the problem and the fix), no traceback, and nothing
written -- the folders a case can reach are byte-for-byte what they were.

Everything a case touches lives in its own workspace (`Workspace`): results/,
reports/, a project cache ($DFU_BENCH_CACHE, with the Inception weights linked
in, so the lookup of bench/inception.py finds them as "project cache"), data/
($DFU_BENCH_DATA) and the working directory. The workspace is snapshotted
(relative path -> size and sha256) before and after each case.

One finished run of TINY is built once per session (`finished_run`, ~5 s) and
copied into a workspace by the cases that need one, with the feature cache it
filled, so no case recomputes its reference features.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import resource
import shutil
import signal
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PROJECT_CACHE = ROOT / ".cache"  # where `make install` leaves the Inception weights
INCEPTION_FILES = ("inception-2015-12-05.pt", "inception-2015-12-05.json")

# The smallest suite that has every file kind of a run directory: a trained DFU
# (checkpoints with a train_state: checkpoint_every < steps, a model card) and a
# bilinear baseline from the data (so Fig. 5 reads references/); one resolution,
# one seed set, 8 samples with 2 Heun steps.
TINY = {
    "name": "hostile",
    "description": "tiny suite of the hostile-input tests",
    "seed": 0,
    "device": "cpu",
    "dataset": {"kind": "toyfaces", "size": 64},
    "models": [
        {"name": "dfu", "adapter": "dfu", "arch": "cpu-tiny",
         "train": {"resolutions": [16], "steps": 4, "batch_size": 4, "lr": 0.002, "checkpoint_every": 2}},
        {"name": "bilinear-data", "adapter": "bilinear", "source": "data", "base_resolution": 16},
    ],
    "sample": {"resolutions": [16], "n": 8, "steps": 2, "batch_size": 8},
    "metrics": {"batch_size": 8, "metrics": ["fid", "kid", "spectral"]},
}
# No training at all (bilinear upsampling of real images): for cases where only the
# paths matter; a run of it takes about a second.
DATA_ONLY = {**copy.deepcopy(TINY), "name": "hostile-data",
             "models": [copy.deepcopy(TINY["models"][1])]}

TIMING = ["seconds", "feature_seconds"]  # metrics.csv columns that are not values
BUILD_UMASK = 0o022  # the umask the finished run is made under
FINISHED_ID = "base"


# ----------------------------------------------------------------------------- snapshots


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under root: relative path -> ('dir',), ('link', target) or ('file', size, sha256).

    Links are not followed (the workspace caches link the 90 MB Inception file)."""
    root = Path(root)
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                data = p.read_bytes()
                out[rel] = ("file", len(data), hashlib.sha256(data).hexdigest())
    return out


def tree_diff(before: dict, after: dict) -> list[str]:
    """Human-readable differences between two snapshots (at most 12)."""
    lines = [f"new: {k}" for k in sorted(set(after) - set(before))]
    lines += [f"gone: {k}" for k in sorted(set(before) - set(after))]
    lines += [f"changed: {k}" for k in sorted(set(before) & set(after)) if before[k] != after[k]]
    return lines[:12] + ([f"... and {len(lines) - 12} more"] if len(lines) > 12 else [])


def assert_unchanged(before: dict, after: dict, where: str = "the workspace") -> None:
    diff = tree_diff(before, after)
    assert not diff, f"{where} changed: " + "; ".join(diff)


# ----------------------------------------------------------------------------- the one error line

Says = Union[str, Sequence[str]]


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


def assert_refused(result: tuple[int, str, str], says: Says) -> str:
    """Exit 2, one `error:` line holding every fragment of `says`, no traceback. Returns the line.

    Checked in the order that says most about what happens today when it fails:
    traceback, then exit code (with the error lines), then one line, then its words."""
    code, out, err = result
    lines = error_lines(err)
    shown = lines[-3:] or err.strip().splitlines()[-3:]
    assert "Traceback" not in out + err, f"a traceback (exit {code}): {shown}"
    assert code == 2, f"exit {code}, not 2: {shown}"
    assert len(lines) == 1, f"{len(lines)} error lines, not 1: {lines[:4]}"
    for s in ([says] if isinstance(says, str) else says):
        assert s in lines[0], f"{s!r} not in {lines[0]!r}"
    return lines[0]


# ----------------------------------------------------------------------------- guards


class CaseTimeout(BaseException):
    """Raised by `guarded` when a case runs too long (a BaseException: the CLI's
    `except Exception` must not turn it into an exit code)."""


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def guarded(seconds: float = 60, extra_memory_gib: float = 4):
    """Run a case that today may start an absurd amount of work (10^9-image batches,
    10^12 steps): an address-space cap turns a huge allocation into an immediate
    error instead of swapping the shared machine, and SIGALRM ends a case that runs
    past `seconds` (the test then fails, which a strict xfail expects)."""
    armed = [True]

    def alarm(signum, frame):
        if armed[0]:
            raise CaseTimeout(f"still running after {seconds} s: the input was not refused up front")

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_bytes() + int(extra_memory_gib * 2**30)
    use_cap = cap > 0 and (soft == resource.RLIM_INFINITY or soft > cap)
    if use_cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    old = signal.signal(signal.SIGALRM, alarm)
    # and again every half second: a handler that fires inside a finalizer (__del__, a GC
    # callback) has its exception printed and dropped, and the case would run on for ever
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    finally:
        while armed[0]:  # a last alarm may land in here: disarm first, then stop the timer
            try:
                armed[0] = False
            except CaseTimeout:
                pass
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if use_cap:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ----------------------------------------------------------------------------- files


def dump_suite(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def edited(base: dict, edit: Optional[Callable[[dict], None]]) -> dict:
    data = copy.deepcopy(base)
    if edit is not None:
        edit(data)
    return data


def link_inception(cache: Path) -> None:
    """Make `cache` a project cache that already holds the Inception weights (links)."""
    cache.mkdir(parents=True, exist_ok=True)
    source = PROJECT_CACHE
    if not all((source / name).is_file() for name in INCEPTION_FILES):
        from bench.inception import resolve  # the cache in use (make install fills it)

        source = resolve(allow_download=False)[0].parent
    for name in INCEPTION_FILES:
        (cache / name).symlink_to(source / name)


def faces(n: int, res: int, first: int = 0) -> np.ndarray:
    from bench.datasets import ToyFaces

    return ToyFaces(size=1000, seed=0).images(range(first, first + n), res)


def write_pngs(folder: Path, images: Iterable, mode: Optional[str] = None) -> Path:
    """Save arrays (or PIL images) as 0000.png, 0001.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(images):
        im = img if isinstance(img, Image.Image) else Image.fromarray(img, mode) if mode else Image.fromarray(img)
        im.save(folder / f"{k:04d}.png")
    return folder


def png_bytes(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width x height, all black, built by hand: the IDAT of a
    14000 x 14000 image is ~24 KB and costs ~0.1 s, where PIL would hold 196 MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the finished run

@dataclass
class Finished:
    """A finished run of TINY: its suite file, run directory and the cache its features are in."""

    root: Path
    suite: Path
    results: Path
    cache: Path

    @property
    def run_dir(self) -> Path:
        return self.results / TINY["name"] / FINISHED_ID


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def finished_run(tmp_path_factory) -> Finished:
    """TINY run to the end (in-process, one thread); tests/conftest.py's session fixture
    `finished` calls it once per session."""
    import torch

    from bench.cli import main

    root = tmp_path_factory.mktemp("finished")
    f = Finished(root, dump_suite(root / "suite.yaml", TINY), root / "results", root / "cache")
    link_inception(f.cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    umask = os.umask(BUILD_UMASK)  # a known umask: test_hostile checks the files' modes
    err = io.StringIO()
    try:
        with (_env(DFU_BENCH_CACHE=str(f.cache)), contextlib.redirect_stderr(err),
              contextlib.redirect_stdout(io.StringIO())):
            code = main(["run", str(f.suite), "--results", str(f.results), "--run-id", FINISHED_ID,
                         "--report-dir", str(root / "reports")])
    finally:
        torch.set_num_threads(threads)
        os.umask(umask)
    assert code == 0, err.getvalue()[-3000:]
    return f


class Workspace:
    """One case's world: results/, reports/, cache/, data/ and the working directory."""

    def __init__(self, root: Path, finished: Optional[Finished] = None):
        self.root = root
        self.results = root / "results"
        self.reports = root / "reports"
        self.cache = root / "cache"
        self.data = root / "data"
        self.finished = finished
        link_inception(self.cache)
        if finished is not None:  # reuse the features the finished run computed
            shutil.copytree(finished.cache / "features", self.cache / "features")

    def env(self, monkeypatch) -> "Workspace":
        monkeypatch.setenv("DFU_BENCH_CACHE", str(self.cache))
        monkeypatch.setenv("DFU_BENCH_DATA", str(self.data))
        monkeypatch.delenv("DFU_BENCH_INCEPTION", raising=False)
        monkeypatch.delenv("RANK", raising=False)
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        monkeypatch.chdir(self.root)
        return self

    # suites and runs
    def suite(self, edit: Optional[Callable[[dict], None]] = None, base: dict = TINY,
              name: str = "suite.yaml") -> str:
        return str(dump_suite(self.root / name, edited(base, edit)))

    def text(self, name: str, text: str) -> str:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return str(p)

    def blob(self, name: str, data: bytes) -> str:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return str(p)

    def run(self, *extra: str, edit=None, base: dict = TINY) -> list[str]:
        return ["run", self.suite(edit, base), "--results", str(self.results), *extra]

    def copy_finished(self) -> Path:
        """The finished run, copied to results/hostile/base; returns its run directory."""
        assert self.finished is not None
        dst = self.results / TINY["name"] / FINISHED_ID
        shutil.copytree(self.finished.run_dir, dst, symlinks=True)
        shutil.copyfile(self.finished.suite, self.root / "suite.yaml")
        return dst

    def resume(self, *extra: str) -> list[str]:
        return ["run", str(self.root / "suite.yaml"), "--results", str(self.results), "--run-id", FINISHED_ID,
                "--report-dir", str(self.reports), *extra]

    # image sets
    def pngs(self, name: str, images: Iterable, mode: Optional[str] = None) -> str:
        return str(write_pngs(self.root / name, images, mode))

    def npz(self, name: str, **arrays) -> str:
        return self.blob(name, npz_bytes(**arrays))


def metrics_values(path: Path):
    """metrics.csv without its timing columns (the values a resume must reproduce)."""
    import pandas as pd

    df = pd.read_csv(path)
    return df.drop(columns=[c for c in TIMING if c in df.columns])


def dfu_checkpoint(root: Path, name: str = "ck.safetensors") -> Path:
    """A tiny untrained DFU (cpu-tiny, trained at 16 px by its metadata) saved as a run saves its
    models, for `bench sample`: root/<name> and its .json."""
    import torch

    from bench import checkpoint
    from models.adapters import ADAPTERS

    torch.manual_seed(0)
    tensors, meta = ADAPTERS["dfu"]("cpu-tiny").state()
    path = Path(root) / name
    checkpoint.save(path, tensors, {**meta, "train_resolutions": [16]})
    return path


def with_cache(path: Union[str, Path], args: list[str]) -> list[str]:
    """`args`, to be run with $DFU_BENCH_CACHE set to `path` (the test's monkeypatch set it for the
    workspace, so it restores it after the case)."""
    os.environ["DFU_BENCH_CACHE"] = str(path)
    return args


def nonfinite_state_dict_file(w: Workspace, value: float = float("nan"), only: Optional[str] = None,
                              name: str = "nonfinite.pt") -> str:
    """A state dict of the authors' EDMPrecond for cpu-tiny (as test_hostile's state_dict_file) with
    every floating-point tensor -- or only the first element of tensor `only` -- set to `value`."""
    import torch

    from models.edm import EDMPrecond
    from models.networks import DualUNet, get_arch

    sd = EDMPrecond(DualUNet(get_arch("cpu-tiny"))).state_dict()
    for key, t in sd.items():
        if t.is_floating_point() and only is None:
            t.fill_(value)
        elif key == only:
            t.view(-1)[0] = value
    path = w.root / name
    torch.save(sd, path)
    return str(path)
