"""Image datasets for the benchmark: the procedural `toyfaces` and real `imagefolder`s.

Every dataset answers the same question -- "image i at resolution r" -- so the
stages can train at 32-96 and compare samples against references at up to ~2x
that, from one definition of the data.

* `toyfaces` (bench/toyfaces.py) is a resolution-free picture: face i is
  rendered analytically at any resolution, so image i at 32 and at 160 are the
  same picture sampled at two densities.
* `imagefolder` reads a folder or a .zip of images; each is converted to RGB,
  centre-cropped to a square (the shorter side is kept) and resized with one
  filter of RESIZE_FILTERS: `lanczos` (default; PIL's LANCZOS, as EDM's dataset
  tool made the FFHQ sets) or `bilinear-aa` (antialiased bilinear, as the
  authors' datasets/resize.py made their LSUN-Church sets).
* `prepared` reads what `bench data prepare` (bench/prepare.py) made from such a
  folder: the same pixels, resized once ahead of time and stored as PNG shards
  per resolution, so a 70,000-image dataset is not decoded and resized on
  every run.

`DATASETS` maps a kind to its constructor; `build_dataset(kind, **options)` is
the entry point the config uses.
"""

from __future__ import annotations

import inspect
import io
import re
import shlex
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from bench.errors import BenchError
from bench.grf import GRF
from bench.images import (IMAGE_EXTENSIONS, MAX_RESOLUTION, MIN_RESOLUTION, CachedImages, ImageFiles, check_index,
                          check_resolution, verify_image)
from bench.io import data_root, read_json_object
from bench.openmoji import OpenMoji
from bench.toyfaces import ToyFaces

RESIZE_FILTER = "lanczos"  # the default filter


@runtime_checkable
class ImageDataset(Protocol):
    """What the stages need from a dataset: indexed square RGB images at any resolution."""

    name: str

    def __len__(self) -> int: ...

    def image(self, i: int, resolution: int) -> np.ndarray: ...  # HxWx3 uint8

    def images(self, indices: Sequence[int], resolution: int) -> np.ndarray: ...  # NxHxWx3 uint8

    def describe(self) -> dict: ...  # JSON-safe provenance


# ----------------------------------------------------------------------------
# imagefolder


# One decode -> crop -> resize path for every real image: ImageFolder and
# `bench data prepare` (bench/prepare.py) both call these, so prepared shards
# hold exactly the pixels an imagefolder dataset would produce.

CROP_RULE = ("centre square on the shorter side: left = (w - side) // 2, top = (h - side) // 2, "
             "side = min(w, h)")
# name -> (PIL filter, description for manifests). Both are PIL's resampling, which
# widens the kernel with the downscale factor (antialiased). `bilinear-aa` is PIL's
# BILINEAR without reducing_gap, which is what torchvision's Resize(size) calls on a
# PIL image (tests/test_datasets.py checks the two are equal byte for byte); with a
# reducing_gap PIL first box-reduces and the bytes differ at >= 4x downscales.
RESIZE_FILTERS = {
    "lanczos": (Image.LANCZOS, "lanczos: PIL Image.resize with Image.LANCZOS (antialiased: the kernel widens "
                               "with the downscale factor), once from the centre square to each resolution, as "
                               "EDM's dataset_tool"),
    "bilinear-aa": (Image.BILINEAR, "bilinear-aa: PIL Image.resize with Image.BILINEAR and no reducing_gap "
                                    "(antialiased: the kernel widens with the downscale factor), once from the "
                                    "centre square to each resolution; equal to torchvision Resize(size) on a PIL "
                                    "image, as the authors' datasets/resize.py"),
}


def check_filter(name: str) -> str:
    """A resize filter's name, or BenchError listing the known ones."""
    if name not in RESIZE_FILTERS:
        raise BenchError(f"resize filter {name!r} is not known; use one of: {', '.join(RESIZE_FILTERS)}")
    return name


def centre_square(img: Image.Image) -> Image.Image:
    """Crop to a centred square whose side is the shorter side (see CROP_RULE)."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def resize_square(square: Image.Image, resolution: int, filter: str = RESIZE_FILTER) -> np.ndarray:
    """A square RGB image resized with a filter of RESIZE_FILTERS -> resolution x resolution x 3 uint8."""
    resample = RESIZE_FILTERS[check_filter(filter)][0]
    return np.asarray(square.resize((resolution, resolution), resample), dtype=np.uint8).copy()


class ImageFolder(CachedImages, ImageFiles):
    """A folder or .zip of images (bench.images.ImageFiles), as a dataset at any resolution.

    Each image is converted to RGB (alpha is dropped), centre-cropped to a square
    on its shorter side, and resized to the requested resolution with `filter`
    (RESIZE_FILTERS; default PIL's LANCZOS).  Decoded arrays are cached in memory
    per resolution.  Hidden files and __MACOSX/ entries are ignored.
    """

    name = "imagefolder"

    def __init__(self, path: str | Path, filter: str = RESIZE_FILTER):
        self.filter = check_filter(filter)
        super().__init__(path)
        self._cache: dict[int, dict[int, np.ndarray]] = {}

    def validate(self, resolutions: Sequence[int] | None = None) -> dict:
        """Open and fully decode every image; raise BenchError naming the first bad one.

        Any resolution can be made from a folder, so `resolutions` is accepted
        (plan_suite passes what the suite needs) and not checked.  Returns a
        summary (count, smallest and largest side) so a caller can tell whether
        references at a resolution will be upsampled.
        """
        sides = []
        for rel in self.files:
            try:
                sides.append(verify_image(self.read_bytes(rel)))
            except Exception as err:
                raise self.bad_image(rel, err) from err
        return {"count": len(self.files), "min_side": min(sides), "max_side": max(sides)}

    def _make(self, i: int, resolution: int) -> np.ndarray:
        return resize_square(centre_square(self.decode(i)), resolution, self.filter)

    def describe(self) -> dict:
        return {"kind": self.name, "path": str(self.path.resolve()), "container": self.container,
                "size": len(self.files), "filter": self.filter, "crop": "centre square",
                "mode": "RGB", "extensions": list(IMAGE_EXTENSIONS)}


# ----------------------------------------------------------------------------
# prepared: the read side of `bench data prepare` (the write side is bench/prepare.py)

PREPARED_FORMAT = "dfu-bench-prepared-v1"
MANIFEST_NAME = "manifest.json"
DEFAULT_SHARD_SIZE = 4096  # ~18 shards for FFHQ's 70,000; 110 MB per shard at 96 px
_DATASET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_dataset_name(name: str) -> str:
    """A prepared dataset's name becomes a folder name: letters, digits, _ . - only."""
    if not isinstance(name, str) or not _DATASET_NAME.match(name):
        raise BenchError(f"dataset name {name!r} is not a plain folder name; "
                         "use letters, digits, '_', '.' and '-' (e.g. ffhq)")
    return name


def resolution_dir(resolution: int) -> str:
    return f"r{resolution:03d}"


def shard_path(resolution: int, shard: int) -> str:
    """An archive's path relative to the dataset folder: image i lives in shard i // shard_size."""
    return f"{resolution_dir(resolution)}/shard-{shard:05d}.zip"


def entry_name(index: int) -> str:
    return f"{index:08d}.png"


def _count(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def manifest_problem(m: dict) -> str | None:
    """What makes a manifest unreadable as `bench data prepare` writes it (None: nothing).

    Every field the readers compute with: the image count and shard size (image i is in shard
    i // shard_size), and per resolution the shard list those two imply, file by file."""
    for key, least in (("kept_count", 1), ("source_count", 1), ("shard_size", 1), ("min_side", 1),
                       ("max_side", 1)):
        if not _count(m.get(key), least):
            return f"{key} is {m.get(key)!r}, not an integer >= {least}"
    if not isinstance(m.get("skipped"), list):
        return f"skipped is {m.get('skipped')!r}, not a list"
    for key in ("source", "created", "mode", "dfu_bench_version", "pillow_version"):
        if not isinstance(m.get(key), str):
            return f"{key} is {m.get(key)!r}, not text"
    if not isinstance(m.get("filter", RESIZE_FILTER), str) or m.get("filter", RESIZE_FILTER) not in RESIZE_FILTERS:
        return f"filter is {m.get('filter')!r}, not one of {', '.join(RESIZE_FILTERS)}"
    per_resolution = m.get("resolutions")
    if not isinstance(per_resolution, dict) or not per_resolution:
        return f"resolutions is {per_resolution!r}, not a mapping of resolutions to shards"
    kept, size = m["kept_count"], m["shard_size"]
    n_shards = -(-kept // size)
    for key, entry in per_resolution.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit()  # "²".isdigit(), but int("²") fails
                and MIN_RESOLUTION <= int(key) <= MAX_RESOLUTION):
            return f"resolutions has the key {key!r}, not a resolution in px"
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if not isinstance(shards, list) or len(shards) != n_shards:
            return (f"resolutions.{key}.shards is not a list of {n_shards} shards ({kept} images, shard_size "
                    f"{size})")
        for k, shard in enumerate(shards):
            first = k * size
            want = {"file": shard_path(int(key), k), "first": first, "count": min(size, kept - first)}
            if not isinstance(shard, dict) or any(shard.get(f) != v for f, v in want.items()) \
                    or not _count(shard.get("bytes"), 0) or not isinstance(shard.get("sha256"), str):
                return f"resolutions.{key}.shards.{k} is not {want} with bytes and sha256"
    return None


def shown_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (shorter messages)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (OSError, ValueError):
        return str(path)


def prepare_command(name: str, source: str | None, resolutions: Sequence[int], root: Path | None = None,
                    skip_bad: bool = False, shard_size: int = DEFAULT_SHARD_SIZE,
                    filter: str = RESIZE_FILTER) -> str:
    """The exact `bench data prepare` line that makes (or completes) a prepared dataset."""
    words = ["bench", "data", "prepare", name, "--source", shlex.quote(str(source)) if source else "PATH/TO/IMAGES",
             "--resolutions", ",".join(str(r) for r in sorted(set(resolutions))) or "32,64,..."]
    if root is not None and Path(root).expanduser().resolve() != data_root().resolve():
        words += ["--out", shlex.quote(str(root))]
    if skip_bad:
        words.append("--skip-bad")
    if shard_size != DEFAULT_SHARD_SIZE:
        words += ["--shard-size", str(shard_size)]
    if filter != RESIZE_FILTER:
        words += ["--filter", filter]
    return " ".join(words)


class PreparedDataset:
    """Images made by `bench data prepare NAME`: ROOT/NAME/manifest.json and rNNN/shard-KKKKK.zip.

    Construction reads nothing, so that `validate(resolutions)` can say exactly
    which command makes the missing data; every other method reads the manifest.
    Image i at resolution r is entry 0000000i.png of shard i // shard_size.
    `filter`: the resize filter the suite expects; validate() refuses data
    prepared with another one (None: whatever the manifest says).
    """

    kind = "prepared"

    def __init__(self, name: str, root: str | Path | None = None, source: str | None = None,
                 filter: str | None = None):
        self.name = check_dataset_name(name)
        self.root = Path(root).expanduser() if root else data_root()
        self.dir = self.root / self.name
        self.source_hint = source  # only for the message that says how to prepare
        self.filter = check_filter(filter) if filter is not None else None
        self._manifest: dict | None = None
        self._zips: dict[tuple[int, int], zipfile.ZipFile] = {}

    def __getstate__(self) -> dict:
        # Open zip handles cannot cross a process boundary; they reopen lazily.
        return {**self.__dict__, "_zips": {}}

    # -- manifest -------------------------------------------------------------
    def _command(self, resolutions: Sequence[int], filter: str | None = None) -> str:
        m = self._manifest
        if m is None:
            return prepare_command(self.name, self.source_hint, resolutions, self.root,
                                   filter=self.filter or RESIZE_FILTER)
        return prepare_command(self.name, m["source"], resolutions, self.root, m["skip_bad"], m["shard_size"],
                               filter or m.get("filter", RESIZE_FILTER))

    def manifest(self) -> dict:
        if self._manifest is None:
            path = self.dir / MANIFEST_NAME
            if not path.is_file():
                raise BenchError(f"dataset {self.name} is not prepared in {shown_path(self.dir)} (no {MANIFEST_NAME}); "
                                 f"run: {self._command([])}")
            try:
                manifest = read_json_object(path)
            except ValueError as exc:
                raise BenchError(f"{shown_path(path)} {exc}; delete {shown_path(self.dir)} "
                                 "and prepare it again") from None
            if manifest.get("format") != PREPARED_FORMAT:
                raise BenchError(f"{shown_path(path)} is not a {PREPARED_FORMAT} manifest; delete "
                                 f"{shown_path(self.dir)} and prepare it again")
            problem = manifest_problem(manifest)
            if problem:
                raise BenchError(f"{shown_path(path)} is damaged: {problem}; delete {shown_path(self.dir)} "
                                 "and prepare it again")
            self._manifest = manifest
        return self._manifest

    def resolutions(self) -> list[int]:
        return sorted(int(r) for r in self.manifest()["resolutions"])

    def validate(self, resolutions: Sequence[int] | None = None) -> dict:
        """Raise BenchError, with the command that fixes it, unless every needed resolution is prepared.

        `resolutions`: what the suite reads from data (None: whatever is prepared).
        Only file presence and sizes are checked here (milliseconds, before any
        run directory exists); checksums are `bench data prepare`'s job.
        """
        needed = sorted({check_resolution(r) for r in resolutions or []})
        if not (self.dir / MANIFEST_NAME).is_file():
            raise BenchError(f"dataset {self.name} is not prepared in {shown_path(self.dir)} (no {MANIFEST_NAME}); "
                             f"run: {self._command(needed)}")
        m = self.manifest()
        made_with = m.get("filter", RESIZE_FILTER)
        if self.filter is not None and made_with != self.filter:
            raise BenchError(f"dataset {self.name} in {shown_path(self.dir)} was prepared with --filter {made_with}, "
                             f"but the suite's dataset says filter: {self.filter}; delete {shown_path(self.dir)} "
                             f"and run: {self._command(needed or self.resolutions(), self.filter)}")
        have = self.resolutions()
        missing = [r for r in needed if r not in have]
        if missing:
            raise BenchError(f"dataset {self.name} in {shown_path(self.dir)} is not prepared at "
                             f"{', '.join(map(str, missing))} px (has {', '.join(map(str, have))}); "
                             f"run: {self._command(missing)}")
        for r in needed or have:
            for shard in m["resolutions"][str(r)]["shards"]:
                path = self.dir / shard["file"]
                if not path.is_file() or path.stat().st_size != shard["bytes"]:
                    raise BenchError(f"dataset {self.name}: {shown_path(path)} is missing or changed size; "
                                     f"run: {self._command([r])}")
        return {"count": m["kept_count"], "min_side": m["min_side"], "max_side": m["max_side"], "resolutions": have}

    # -- images ---------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.manifest()["kept_count"])

    def _zip(self, resolution: int, shard: int) -> zipfile.ZipFile:
        key = (resolution, shard)
        if key not in self._zips:
            path = self.dir / shard_path(resolution, shard)
            try:
                self._zips[key] = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise BenchError(f"cannot open {shown_path(path)} ({exc}); run: {self._command([resolution])}") from None
        return self._zips[key]

    def image(self, i: int, resolution: int) -> np.ndarray:
        return self.images([i], resolution)[0]

    def images(self, indices: Sequence[int], resolution: int) -> np.ndarray:
        resolution = check_resolution(resolution)
        m = self.manifest()
        if str(resolution) not in m["resolutions"]:
            raise BenchError(f"dataset {self.name} is not prepared at {resolution} px; "
                             f"run: {self._command([resolution])}")
        size, shard_size = len(self), int(m["shard_size"])
        out = np.empty((len(indices), resolution, resolution, 3), dtype=np.uint8)
        for k, i in enumerate(indices):
            i = check_index(i, size, self.name)
            zf = self._zip(resolution, i // shard_size)
            try:
                with Image.open(io.BytesIO(zf.read(entry_name(i)))) as img:
                    arr = np.asarray(img.convert("RGB"))
            except Exception as exc:  # a missing entry (KeyError) or a damaged PNG
                raise BenchError(f"dataset {self.name}: image {i} at {resolution} px is unreadable ({exc}); "
                                 f"delete {shown_path(self.dir / resolution_dir(resolution))} and run: "
                                 f"{self._command([resolution])}") from None
            if arr.shape != out.shape[1:]:
                raise BenchError(f"dataset {self.name}: image {i} in {resolution_dir(resolution)} is "
                                 f"{arr.shape[1]}x{arr.shape[0]}, not {resolution}x{resolution}; delete "
                                 f"{shown_path(self.dir)} and prepare it again")
            out[k] = arr
        return out

    def describe(self) -> dict:
        m = self.manifest()
        return {"kind": self.kind, "name": self.name, "path": str(self.dir.resolve()), "size": m["kept_count"],
                "source": m["source"], "source_count": m["source_count"], "skipped": len(m["skipped"]),
                "filter": m["filter"], "crop": "centre square", "mode": m["mode"], "shard_size": m["shard_size"],
                "resolutions": self.resolutions(), "created": m["created"],
                "dfu_bench_version": m["dfu_bench_version"], "pillow_version": m["pillow_version"]}


# ----------------------------------------------------------------------------
# registry and tensor conversion

# toyfaces, grf and openmoji live in their own modules (bench/toyfaces.py, grf.py, openmoji.py).
DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "toyfaces": ToyFaces,
    "imagefolder": ImageFolder,
    "prepared": PreparedDataset,
    "grf": GRF,
    "openmoji": OpenMoji,
}


def build_dataset(kind: str, **kwargs) -> ImageDataset:
    """Construct the dataset registered as `kind` from its options."""
    if kind not in DATASETS:
        raise BenchError(f"unknown dataset kind '{kind}'; use one of: {', '.join(sorted(DATASETS))}")
    factory = DATASETS[kind]
    params = inspect.signature(factory).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise BenchError(f"dataset '{kind}' has no option(s) {', '.join(unknown)}; "
                         f"valid options: {', '.join(params)}")
    missing = [k for k, v in params.items() if v.default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise BenchError(f"dataset '{kind}' needs option(s) {', '.join(missing)}; add them to the dataset config")
    return factory(**kwargs)


def to_float_tensor(batch_uint8: np.ndarray) -> torch.Tensor:
    """NxHxWx3 uint8 -> Nx3xHxW float32 in [-1, 1], as EDM feeds its networks."""
    batch = np.asarray(batch_uint8)
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected an NxHxWx3 uint8 array, got {batch.dtype} {batch.shape}")
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
