"""Inception features of image sets: the two FID modes' extractors and the content-keyed cache.

Both modes run the 2015-12-05 Inception-v3 on the offline weights from
`bench.inception`; they differ in how an image reaches 299x299, which moves FID
by several points (bench.metrics.FID_MODES names them):

* ``clean`` reproduces clean-fid's `compute_fid(..., mode="clean")`: each uint8
  image is resized to 299x299 with clean-fid's own PIL bicubic float resizer
  and passed through the network of clean-fid's `InceptionV3W`, run as an
  eager module with folded batch norms (bench.fidelity.CleanInception; features
  within 2e-5 of the TorchScript file's, 1.5-1.9x faster). Resizing runs in a
  thread pool (PIL releases the GIL) so it overlaps with the network.
* ``legacy`` is the protocol of EDM's fid.py, which made the paper's numbers:
  uint8 NCHW at native size into torch-fidelity's `inception-v3-compat`
  extractor (bench.fidelity, converted offline weights), which resizes to 299
  inside with its emulation of TensorFlow 1.x's bilinear resize.

`build_feature_extractor(mode, ...)` is the one place a mode becomes an
extractor; `bench run`, `bench fid` and `bench metrics` all go through it.
`FeatureCache` stores features under `<cache>/features/` (not in a run
directory), keyed by the pixels and the extractor's identity, so no image set is
passed through Inception twice. `load_set` reads the sets `bench metrics` is given.
"""
from __future__ import annotations

import hashlib
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from cleanfid.resize import build_resizer

from bench import dist
from bench.errors import BenchError
from bench.fidelity import CLEAN_NETWORK_VERSION, EXTRACTOR_NAME, FORMAT_VERSION, clean_network, fidelity_extractor
from bench.images import ImageFiles
from bench.inception import FEATURE_DIM, weights_sha256
from bench.io import atomic_path, cache_dir, rank_info, sha256_file, write_text
from bench.metrics import MetricOptions
from bench.progress import console, progress


def _check_image(img: np.ndarray) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected HxWx3 uint8 image, got {img.dtype} {img.shape}")


class FeatureExtractor:
    """Inception features for uint8 images of any size: clean mode here, legacy in the subclass.

    Batching, timing and the torchrun split are shared; a mode is `_load` (the
    network and the `identity` that keys the feature cache) and `_forward`.
    """

    mode = "clean"

    def __init__(self, device: torch.device, batch_size: int = 32, inception_path: str | None = None,
                 workers: int = 2):
        self.device = device
        self.batch_size = batch_size
        self._load(inception_path, workers)
        self.images_done, self.seconds = 0, 0.0

    def _load(self, inception_path: str | None, workers: int) -> None:
        self.model = clean_network(self.device, inception_path)
        # what produced a feature: the network file's checksum, the resize mode and the network's code
        self.identity = (f"inception-2015-12-05:{weights_sha256(inception_path)[:16]}:{self.mode}:"
                         f"{CLEAN_NETWORK_VERSION}")
        self._resize = build_resizer(self.mode)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def _prepare(self, img: np.ndarray) -> torch.Tensor:
        _check_image(img)
        return torch.from_numpy(self._resize(img).transpose((2, 0, 1))).contiguous()

    def _forward(self, batch: list[np.ndarray]) -> np.ndarray:
        x = torch.stack(list(self._pool.map(self._prepare, batch)))
        # channels_last, as the network's weights (reports/perf/cpu.md)
        x = x.to(self.device, memory_format=torch.channels_last)
        return self.model(x).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def _run(self, batch: list[np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        feats = self._forward(batch)
        self.images_done += len(batch)
        self.seconds += time.perf_counter() - t0
        return feats

    def batch_features(self, arr: np.ndarray) -> np.ndarray:
        """Features of an NxHxWx3 array in this process, `batch_size` images at a time, no progress bar."""
        bs = self.batch_size
        return np.concatenate([self._run(list(arr[k:k + bs])) for k in range(0, len(arr), bs)])

    @property
    def images_per_second(self) -> float:
        return self.images_done / self.seconds if self.seconds else float("nan")

    def features(self, images: Iterable[np.ndarray], total: int | None = None,
                 desc: str = "features") -> np.ndarray:
        """(N, 2048) float64 features of an iterable of HxWx3 uint8 images."""
        out: list[np.ndarray] = []
        batch: list[np.ndarray] = []
        with progress() as p:
            task = p.add_task(desc, total=total, unit="img")
            for img in images:
                batch.append(img)
                if len(batch) == self.batch_size:
                    out.append(self._run(batch))
                    p.advance(task, len(batch))
                    batch = []
            if batch:
                out.append(self._run(batch))
                p.advance(task, len(batch))
        if not out:
            raise BenchError(f"no images to compute {desc} from")
        return np.concatenate(out)

    def array_features(self, arr: np.ndarray, desc: str = "features") -> np.ndarray:
        """Features of an NxHxWx3 array; under torchrun, batch k runs on rank k % world
        and every rank gets all rows (the same batches as one process: same features)."""
        if not dist.enabled():
            return self.features(iter(arr), total=len(arr), desc=desc)
        rank, world = rank_info()
        bs, n = self.batch_size, len(arr)
        n_batches = -(-n // bs)
        mine = dist.my_batches(n_batches, rank, world)
        console.log(f"(rank {rank}/{world}) {desc}: batches {dist.describe_batches(mine)} of {n_batches}")
        local = []
        with progress() as p:
            task = p.add_task(f"{desc} (rank {rank})", total=sum(min(bs, n - k * bs) for k in mine), unit="img")
            for k in mine:
                local.append(self._run(list(arr[k * bs:(k + 1) * bs])))
                p.advance(task, len(local[-1]))
        return dist.gather_batches(local, n_batches, [min(bs, n - k * bs) for k in range(n_batches)])


class LegacyFeatureExtractor(FeatureExtractor):
    """EDM fid.py's protocol: uint8 NCHW at native size into torch-fidelity's inception-v3-compat,
    which resizes to 299 inside (TF1-style bilinear) and returns the 2048-d pool features."""

    mode = "legacy"

    def _load(self, inception_path: str | None, workers: int) -> None:
        # inside: torch-fidelity takes 0.9 s to import after torch (python -X importtime), and only
        # this mode needs it
        import torch_fidelity

        # channels_last weights: 1.5x faster on 2 CPU cores (2.6 s -> 1.7 s for 32 images),
        # features equal to 1e-5, as the clean path's channels_last input
        self.model = fidelity_extractor(self.device, ["2048"], inception_path).to(memory_format=torch.channels_last)
        # the source network's checksum, the weight conversion and the resize code's version
        self.identity = (f"inception-2015-12-05:{weights_sha256(inception_path)[:16]}:{self.mode}:"
                         f"{EXTRACTOR_NAME}-v{FORMAT_VERSION}:torch-fidelity-{torch_fidelity.__version__}")

    def _forward(self, batch: list[np.ndarray]) -> np.ndarray:
        for img in batch:
            _check_image(img)
        out = np.empty((len(batch), FEATURE_DIM))
        # a folder may mix sizes; the resize is per image, so equal sizes go through together
        for shape in dict.fromkeys(img.shape for img in batch):
            idx = [i for i, img in enumerate(batch) if img.shape == shape]
            x = torch.from_numpy(np.stack([batch[i] for i in idx])).permute(0, 3, 1, 2).to(self.device)
            (feats,) = self.model(x)
            out[idx] = feats.cpu().numpy()
        return out


EXTRACTORS: dict[str, type[FeatureExtractor]] = {"clean": FeatureExtractor, "legacy": LegacyFeatureExtractor}


def build_feature_extractor(mode: str, device: torch.device, batch_size: int = 32,
                            inception_path: str | None = None) -> FeatureExtractor:
    """The Inception feature extractor of an FID mode (clean or legacy), on the offline weights."""
    check_mode(mode)
    return EXTRACTORS[mode](device, batch_size, inception_path)


def check_mode(mode: str) -> str:
    """An FID mode's name, or BenchError listing the known ones."""
    if mode not in EXTRACTORS:
        raise BenchError(f"FID mode {mode!r} is not known; use one of: {', '.join(EXTRACTORS)}")
    return mode


def content_hasher(shape: tuple, *salt: str):
    """A sha256 primed with what will be computed (salt) and the array's shape; feed it the
    pixels in order, all at once (content_key) or batch by batch (a streamed set): same key."""
    h = hashlib.sha256()
    for s in salt:
        h.update(s.encode())
        h.update(b"\0")
    h.update(str(tuple(shape)).encode())
    return h


def content_key(images: np.ndarray, *salt: str) -> str:
    """sha256 of the pixels, their shape and what will be computed from them."""
    h = content_hasher(images.shape, *salt)
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


def feature_cache(extractor: FeatureExtractor) -> "FeatureCache":
    """The project's feature cache (<cache>/features, $DFU_BENCH_CACHE moves it) for an extractor."""
    return FeatureCache(cache_dir() / "features", extractor)


def patch_salt(options: MetricOptions) -> str:
    """What the cache key of patch-crop features adds: the crop size and count."""
    return f"patches:{options.patch_size}x{options.patches_per_image}"


class FeatureCache:
    """Inception features on disk, keyed by image content and extractor identity (which names the FID mode).

    One feature pass per image set: any stage, run or suite that asks for the
    features of the same pixels through the same extractor gets the stored
    array. `computed` / `reused` count what happened, for the run log.
    A set too large to hold (bench.refset) uses hasher / load / store directly.
    """

    def __init__(self, root: Path, extractor: "FeatureExtractor"):
        self.root = Path(root)
        self.extractor = extractor
        self.computed: dict[str, int] = {}
        self.reused: dict[str, int] = {}
        self._memo: dict[str, np.ndarray] = {}

    def features(self, images: np.ndarray, kind: str, desc: str, *salt: str) -> np.ndarray:
        key = content_key(images, self.extractor.identity, *salt)
        if key in self._memo:  # asked again within this process: not a new reuse
            return self._memo[key]
        self._memo[key] = self._load_or_compute(key, images, kind, desc)
        return self._memo[key]

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    @staticmethod
    def _sha_path(path: Path) -> Path:
        """The sha256 of a cache entry as it was stored, beside it (entries stored before have none)."""
        return path.with_suffix(".sha256")

    def _check(self, path: Path) -> None:
        """A stored entry whose bytes are not the ones stored: one line naming it, and the fix."""
        sha_path = self._sha_path(path)
        if not sha_path.is_file():
            return
        if sha256_file(path) != sha_path.read_text().strip():
            raise BenchError(f"cached features {path} are damaged (their sha256 is not the one in {sha_path.name}); "
                             "delete it and run again: the features are computed anew")

    def hasher(self, shape: tuple, *salt: str):
        """content_hasher for this extractor: feed it the pixels, then load/store by its hexdigest."""
        return content_hasher(shape, self.extractor.identity, *salt)

    def load(self, key: str, rows: int, kind: str) -> np.ndarray | None:
        """The stored features of `key` (rows x 2048), or None; collective under torchrun."""
        path = self._path(key)
        feats = None
        if path.is_file():
            self._check(path)
            try:
                feats = np.load(path)
                if feats.shape != (rows, FEATURE_DIM):
                    feats = None
            except (OSError, ValueError):
                feats = None  # unreadable cache entry: recompute and overwrite it
        # under torchrun every rank must take the same branch (the computation is collective)
        if not dist.broadcast(feats is not None):
            return None
        if dist.all_reduce_sum(float(feats is None)):  # a rank without the file (no shared disk)
            feats = dist.broadcast(feats)
        self.reused[kind] = self.reused.get(kind, 0) + 1
        return feats

    def store(self, key: str, feats: np.ndarray, kind: str) -> None:
        if rank_info()[0] == 0:
            path = self._path(key)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, feats)
                sha = sha256_file(tmp)
            write_text(self._sha_path(path), sha + "\n")
        self.computed[kind] = self.computed.get(kind, 0) + 1

    def _load_or_compute(self, key: str, images: np.ndarray, kind: str, desc: str) -> np.ndarray:
        feats = self.load(key, len(images), kind)
        if feats is None:
            feats = self.extractor.array_features(images, desc=desc)
            self.store(key, feats, kind)
        return feats


def load_set(path: str | Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(images, features) of a folder/zip (images) or .npz ('images' and/or 'features').

    A folder is a folder of images whatever its name (x.npz/ too)."""
    path = Path(path)
    if path.suffix.lower() == ".npz" and not path.is_dir():
        if not path.is_file():
            raise BenchError(f"{path} does not exist; give a folder, .zip or .npz")
        try:
            with np.load(path) as z:
                images = z["images"] if "images" in z.files else None
                feats = z["features"] if "features" in z.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise BenchError(f"{path} is not a readable .npz ({type(exc).__name__}); re-create it") from None
        if images is None and feats is None:
            raise BenchError(f"{path} holds neither 'images' (NHWC uint8) nor 'features' (Nx2048)")
        if images is not None and images.dtype != np.uint8:
            raise BenchError(f"{path}: 'images' are {images.dtype}, expected uint8 (0-255) in NHWC layout; "
                             "re-create it")
        if images is not None and (images.ndim != 4 or images.shape[3] != 3):
            raise BenchError(f"{path}: 'images' has shape {images.shape}, expected NHWC with 3 channels "
                             "(N x H x W x 3, uint8 RGB); re-create it")
        if feats is not None and (feats.ndim != 2 or feats.shape[1] != FEATURE_DIM):
            raise BenchError(f"{path}: 'features' has shape {feats.shape}, expected (N, {FEATURE_DIM})")
        if feats is not None and (not np.issubdtype(feats.dtype, np.number) or not np.isfinite(feats).all()):
            raise BenchError(f"{path}: 'features' holds NaN or infinite values (or no numbers); give finite "
                             "features")
        return images, feats
    imgs = list(ImageFiles(path))
    if len({im.shape for im in imgs}) == 1:
        return np.stack(imgs), None
    return np.array(imgs, dtype=object), None

