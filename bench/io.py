"""Atomic file writes, project paths and rank awareness (no torch: every command imports this).

Every file the harness writes goes through `atomic_path`: written to a temporary
name beside the target, then renamed, so an interrupted run never leaves a
half-written file that a later run would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Project cache (Inception weights, reference features); $DFU_BENCH_CACHE overrides."""
    return Path(os.environ.get("DFU_BENCH_CACHE", PROJECT_ROOT / ".cache")).expanduser()


def data_root() -> Path:
    """Where `bench data prepare` puts datasets and `prepared` datasets are read; $DFU_BENCH_DATA overrides."""
    return Path(os.environ.get("DFU_BENCH_DATA", PROJECT_ROOT / "data")).expanduser()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in target's folder; rename it onto target on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: Path, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def rank_info() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment; (0, 1) when run alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
