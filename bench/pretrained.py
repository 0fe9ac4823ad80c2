"""A dfu-bench checkpoint as a model: read, checked and built into its adapter, with user-facing errors.

A checkpoint is `NAME.safetensors` (the network's tensors) with `NAME.json` beside
it (the metadata: `arch_config`, and for a model trained by a run its adapter and
`train_resolutions`). `bench import-checkpoint` writes them, and so does every run
for each model it trains. `bench sample`, a suite's `checkpoint:` model and the
Python API all load one through `load_model`; every problem (a missing file, a
file that is not a readable checkpoint, weights that are NaN or infinite, a network
that does not fit what its metadata or the suite says) is one BenchError line that
names the file and the fix.

Nothing is unpickled: the tensors are safetensors, the metadata JSON.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from bench.checkpoint import meta_path, nonfinite
from bench.errors import BenchError
from bench.io import read_json_object
from models.adapters import ADAPTERS, EDMAdapter
from models.networks import ArchConfig

WHAT = ("a dfu-bench checkpoint (the .safetensors written by `bench import-checkpoint`, or a model a run "
        "trained, with its .json beside it)")


def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a checkpoint, or BenchError naming what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"checkpoint {path} is a folder; give {WHAT}")
    if not path.is_file():
        raise BenchError(f"checkpoint {path} does not exist; give {WHAT}")
    meta_file = meta_path(path)
    if not meta_file.is_file():
        raise BenchError(f"checkpoint {path} has no {meta_file.name} beside it (its architecture); "
                         f"give {WHAT}")
    try:
        meta = read_json_object(meta_file)
    except ValueError as exc:
        raise BenchError(f"checkpoint metadata {meta_file} {exc}; restore it or convert the network "
                         "again") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BenchError(f"checkpoint {path} is not a readable safetensors file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:80] if str(exc) else ''}); restore it or convert the "
                         "network again") from None
    bad = nonfinite(tensors)
    if bad is not None:  # it would sample NaN: black images
        raise BenchError(f"checkpoint {path}: tensor {bad} holds NaN or infinite values (a diverged or damaged "
                         "network); give a checkpoint from before it diverged")
    return tensors, meta


def load_model(path: str | Path, device: torch.device | str = "cpu", adapter: Optional[str] = None,
               **options) -> EDMAdapter:
    """The checkpoint's network behind its adapter, weights loaded, ready to sample.

    `adapter`: the adapter a suite names (the network must be of its kind); None: the
    one the checkpoint records or implies. `options`: sample_steps, precision,
    compile_backend (models.adapters.EDMAdapter)."""
    tensors, meta = read(path)
    cls = EDMAdapter
    if adapter is not None:
        cls = ADAPTERS.get(adapter)
        if cls is None or not issubclass(cls, EDMAdapter):
            raise BenchError(f"adapter {adapter!r} does not load checkpoints; use one of "
                             f"{', '.join(sorted(k for k, c in ADAPTERS.items() if issubclass(c, EDMAdapter)))}")
    try:
        return cls.pretrained(tensors, meta, device=device, **options)
    except ValueError as exc:
        raise BenchError(f"checkpoint {path}: {exc}") from None


def recorded_resolutions(path: str | Path) -> tuple[int, ...]:
    """The training resolutions a checkpoint's metadata records; () when it records none or
    cannot be read (read() says why)."""
    path = Path(path)
    try:
        stamp = os.stat(meta_path(path)).st_mtime_ns
    except OSError:
        return ()
    return _recorded(str(meta_path(path)), stamp)


@functools.lru_cache(maxsize=64)
def _recorded(meta_file: str, stamp: int) -> tuple[int, ...]:
    try:
        rec = read_json_object(Path(meta_file)).get("train_resolutions") or ()
        return tuple(int(r) for r in rec)
    except (ValueError, TypeError):
        return ()


def arch_of(path: str | Path):
    """The ArchConfig a checkpoint's metadata records, or None when it cannot be read."""
    try:
        return ArchConfig.from_checkpoint(read_json_object(meta_path(Path(path)))["arch_config"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
