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
from typing import Callable, Iterator, Optional

from bench.errors import BenchError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Project cache (Inception weights, reference features); $DFU_BENCH_CACHE overrides."""
    return Path(os.environ.get("DFU_BENCH_CACHE", PROJECT_ROOT / ".cache")).expanduser()


def data_root() -> Path:
    """Where `bench data prepare` puts datasets and `prepared` datasets are read; $DFU_BENCH_DATA overrides."""
    return Path(os.environ.get("DFU_BENCH_DATA", PROJECT_ROOT / "data")).expanduser()


def _umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in target's folder; rename it onto target on success.

    The file gets the mode `open()` would give it (0666 minus the umask), not mkstemp's 0600,
    so results and caches can be shared as the user's umask says."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # after the writer: some (safetensors) replace the file they are given with one of their own
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    _notify(target)


# folder -> callback(path) after each file atomic_path writes under it (bench.integrity records
# the checksum of every file a run writes this way)
_WATCHERS: dict[Path, Callable[[Path], None]] = {}


def watch(folder: Path, callback: Optional[Callable[[Path], None]]) -> None:
    """Call `callback(path)` after every atomic write under `folder`; None stops it."""
    key = Path(os.path.abspath(folder))
    if callback is None:
        _WATCHERS.pop(key, None)
    else:
        _WATCHERS[key] = callback


def _notify(target: Path) -> None:
    if not _WATCHERS:
        return
    path = Path(os.path.abspath(target))
    for folder, callback in list(_WATCHERS.items()):
        if folder in path.parents:
            callback(path)


def check_output_dir(path: str | os.PathLike, what: str, file: bool = False) -> Path:
    """Refuse (BenchError) an output location that cannot be written, before anything is.

    `path` is a folder (made if missing) or, with file=True, a file to be created or replaced.
    The nearest existing folder on the way must be a folder and writable; writability is
    probed with a temporary folder that is removed at once."""
    path = Path(path).expanduser()
    if file and path.is_dir():
        raise BenchError(f"{what} {path} is a folder; give the name of a file to write")
    if not file and path.exists() and not path.is_dir():
        raise BenchError(f"{what} {path} is a file, not a folder; give a folder (it is made if missing)")
    probe = path.parent if file else path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise BenchError(f"{what} {path}: {probe} is a file, not a folder; give a path inside a folder")
    try:
        if not os.access(probe, os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied")
        os.rmdir(tempfile.mkdtemp(prefix=".dfu-bench-probe.", dir=probe))
    except OSError as exc:
        raise BenchError(f"{what} {path} is not writable ({probe}: {exc.strerror or type(exc).__name__}); "
                         "choose a folder you can write to") from None
    return path


def check_cache() -> Path:
    """The project cache (Inception weights, features) is a folder that can be written: checked
    before a command that fills it starts."""
    return check_output_dir(cache_dir(), "the cache folder ($DFU_BENCH_CACHE)")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path``, or ValueError saying what is wrong, worded to follow the file's
    name: "is unreadable (...)", "is not JSON (...)" or "is not a JSON object (...)"."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"is unreadable ({exc.strerror or type(exc).__name__})") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"is not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"is not a JSON object (it holds a {type(data).__name__})")
    return data


_SHA: dict[tuple, str] = {}  # (path, size, mtime) -> sha256


def sha256_cached(path: Path) -> str:
    """``sha256_file``, each file version hashed once per process (the Inception files are ~100 MB)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        _SHA[key] = sha256_file(path)
    return _SHA[key]


# A derived file (converted weights) and its sidecar ``<name>.json``: metadata plus the file's
# sha256, so a sidecar that does not describe the file beside it -- left from an interrupted
# write, or the file replaced -- is not believed.

def write_with_sidecar(target: Path, write: Callable[[Path], None], meta: dict) -> dict:
    """``write(tmp)`` the file atomically to ``target``, then its sidecar: ``meta`` + sha256 (returned)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        write(tmp)
    meta = {**meta, "sha256": sha256_cached(target)}
    write_json(target.with_suffix(".json"), meta)
    return meta


def read_sidecar(target: Path) -> Optional[dict]:
    """The sidecar of ``target`` when both exist and it names the file's sha256, else None."""
    sidecar = target.with_suffix(".json")
    if not (target.is_file() and sidecar.is_file()):
        return None
    try:
        meta = read_json_object(sidecar)
        return meta if meta.get("sha256") == sha256_cached(target) else None
    except (OSError, ValueError):  # (OSError: the file went away while being hashed)
        return None


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: Path, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def rank_info() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment; (0, 1) when run alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
