"""Checkpoints on disk: safetensors for tensors, a JSON file beside it for metadata.

Both files are written atomically (temp file + rename), the JSON last, so a
checkpoint whose JSON exists is complete. Nothing is ever unpickled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bench.errors import BenchError
from bench.io import atomic_path, read_json_object, write_json


def meta_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def nonfinite(tensors: dict[str, torch.Tensor]) -> Optional[str]:
    """The name of the first floating-point tensor that holds NaN or infinity (None: all finite).

    A network with such a weight samples NaN, which images save as black. One sum per tensor:
    a finite sum means finite elements; only a sum that is not finite (which finite values
    can also give, by overflow) is checked element by element."""
    for name, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
            return name
    return None


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    write_json(meta_path(path), meta)


def exists(path: Path) -> bool:
    return Path(path).is_file() and meta_path(path).is_file()


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    if not exists(path):
        raise BenchError(f"checkpoint {path} (or its {meta_path(path).name}) is missing; "
                         "train the model first or point at an existing checkpoint")
    try:
        tensors = load_file(str(path))
        meta = read_json_object(meta_path(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BenchError(f"checkpoint {path} is corrupt ({type(exc).__name__}: {str(exc)[:80]}); "
                         "delete it and its .json to retrain from the previous checkpoint") from None
    return tensors, meta
