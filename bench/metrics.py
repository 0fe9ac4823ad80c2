"""Inception features in two FID modes, and FID (and friends) as pure functions of features.

Both modes run the 2015-12-05 Inception-v3 on the offline weights from
`bench.inception`; they differ in how an image reaches 299x299, which moves FID
by several points, so every number is stored with its mode:

* ``clean`` reproduces clean-fid's `compute_fid(..., mode="clean")` exactly: each
  uint8 image is resized to 299x299 with clean-fid's own PIL bicubic float
  resizer and passed through clean-fid's `InceptionV3W`. Resizing runs in a
  thread pool (PIL releases the GIL) so it overlaps with the network.
* ``legacy`` is the protocol of EDM's fid.py, which made the paper's numbers:
  uint8 NCHW at native size into torch-fidelity's `inception-v3-compat`
  extractor (bench.fidelity, converted offline weights), which resizes to 299
  inside with its emulation of TensorFlow 1.x's bilinear resize.

`build_feature_extractor(mode, ...)` is the one place a mode becomes an
extractor; `bench run`, `bench fid` and `bench metrics` all go through it.
"""
from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from bench.errors import BenchError
from bench.images import ImageFiles
from bench.inception import FEATURE_DIM
from bench.io import atomic_path, rank_info
from bench.progress import console, progress

FID_MODES = ("clean", "legacy")


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
        from cleanfid.resize import build_resizer

        from bench.inception import build_extractor, weights_sha256

        self.model = build_extractor(self.device, inception_path)
        # what produced a feature: the network file's checksum and the resize mode
        self.identity = f"inception-2015-12-05:{weights_sha256(inception_path)[:16]}:{self.mode}"
        self._resize = build_resizer(self.mode)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def _prepare(self, img: np.ndarray) -> torch.Tensor:
        _check_image(img)
        return torch.from_numpy(self._resize(img).transpose((2, 0, 1))).contiguous()

    def _forward(self, batch: list[np.ndarray]) -> np.ndarray:
        x = torch.stack(list(self._pool.map(self._prepare, batch)))
        # channels_last: ~30% faster on 2 CPU cores, features equal to 1e-5
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
        from bench import dist

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
        import torch_fidelity

        from bench.fidelity import EXTRACTOR_NAME, FORMAT_VERSION, fidelity_extractor
        from bench.inception import weights_sha256

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
    if mode not in EXTRACTORS:
        raise BenchError(f"FID mode {mode!r} is not known; use one of: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[mode](device, batch_size, inception_path)


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two feature sets.

    Same quantity as clean-fid's `frechet_distance(mu1, cov1, mu2, cov2)`, but
    tr sqrt(C1 C2) is computed without scipy's sqrtm (tens of seconds per call on
    2 CPU cores, and inaccurate when N < 2048 makes the covariances singular).
    With centred features A, B: the non-zero eigenvalues of C1 C2 are the squared
    singular values of A B^T / sqrt((n1-1)(n2-1)), so the trace is that matrix's
    nuclear norm (exact, O(n1 n2 d)). For large sets, the d x d route:
    eigenvalues of C1^1/2 C2 C1^1/2 (symmetric PSD, so eigvalsh is exact).
    """
    if len(f1) < 2 or len(f2) < 2:
        raise BenchError("FID needs at least 2 images in each set")
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    n1, n2, d = len(f1), len(f2), f1.shape[1]
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a, b = f1 - mu1, f2 - mu2
    tr1, tr2 = (a * a).sum() / (n1 - 1), (b * b).sum() / (n2 - 1)
    if min(n1, n2) <= d:
        tr_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    else:
        c1, c2 = a.T @ a / (n1 - 1), b.T @ b / (n2 - 1)
        w, v = np.linalg.eigh(c1)
        root = (v * np.sqrt(w.clip(min=0))) @ v.T
        m = root @ c2 @ root
        tr_sqrt = np.sqrt(np.linalg.eigvalsh((m + m.T) / 2).clip(min=0)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2 * tr_sqrt)


def fid_of_sets(a: str | Path, b: str | Path, extractor: FeatureExtractor) -> dict:
    """FID between two folders/zips, with the set sizes and mode recorded."""
    set_a, set_b = ImageFiles(a), ImageFiles(b)
    fa = extractor.features(iter(set_a), total=len(set_a), desc=f"features {Path(a).name}")
    fb = extractor.features(iter(set_b), total=len(set_b), desc=f"features {Path(b).name}")
    return {"fid": frechet_distance(fa, fb), "n_a": len(set_a), "n_b": len(set_b), "mode": extractor.mode}


# ---------------------------------------------------------------------------
# Metrics as pure functions of features (or, for the spectrum, of pixels)


def kid(f1: np.ndarray, f2: np.ndarray, subset_seed: int = 0, num_subsets: int = 100,
        max_subset_size: int = 1000) -> float:
    """KID: clean-fid's `kernel_distance`, with its numpy subset draws seeded.

    clean-fid draws subsets with the global numpy RNG; seeding it makes KID
    reproducible (and, with equal set sizes <= max_subset_size, every subset is
    the whole set, so the estimator is deterministic whatever the seed).
    """
    from cleanfid.fid import kernel_distance

    state = np.random.get_state()
    np.random.seed(subset_seed)
    try:
        return float(kernel_distance(f1, f2, num_subsets=num_subsets, max_subset_size=max_subset_size))
    finally:
        np.random.set_state(state)


def radial_power_spectrum(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean radially averaged power spectrum of NHWC uint8 images (luminance, mean removed).

    Returns (frequency in cycles/pixel, power) for radial bins k/H, k = 1 .. H/2
    (each frequency rounded to the nearest bin; DC is left out), so two sets at
    the same resolution share their bins.
    """
    x = np.asarray(images, np.float64).mean(axis=3) / 255.0
    n, h, w = x.shape
    x = x - x.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(x)) ** 2).mean(axis=0) / (h * w)
    return radial_average(power)


def power_sum(images: np.ndarray) -> np.ndarray:
    """Sum over NHWC uint8 images of the 2-D power that radial_power_spectrum averages:
    a streamed set adds these up batch by batch, then radial_average(total / (N * H * W))."""
    x = np.asarray(images, np.float64).mean(axis=3) / 255.0
    x = x - x.mean(axis=(1, 2), keepdims=True)
    return (np.abs(np.fft.fft2(x)) ** 2).sum(axis=0)


def radial_average(power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequency, radially averaged power) of an HxW power spectrum (see radial_power_spectrum)."""
    h, w = power.shape
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    k = np.rint(np.sqrt(fx ** 2 + fy ** 2) * h).astype(int).ravel()
    nbins = h // 2
    keep = (k >= 1) & (k <= nbins)
    sums = np.bincount(k[keep], weights=power.ravel()[keep], minlength=nbins + 1)[1:]
    counts = np.bincount(k[keep], minlength=nbins + 1)[1:]
    return np.arange(1, nbins + 1) / h, sums / counts


def log_spectral_distance(images_a: np.ndarray, images_b: np.ndarray) -> float:
    """RMS difference in dB between the radial power spectra of two image sets."""
    if images_a.shape[1:] != images_b.shape[1:]:
        raise BenchError(f"spectral distance needs equal image sizes, got {images_a.shape[1:3]} "
                         f"and {images_b.shape[1:3]}; compare sets at the same resolution")
    _, pa = radial_power_spectrum(images_a)
    _, pb = radial_power_spectrum(images_b)
    return spectrum_distance(pa, pb)


def spectrum_distance(pa: np.ndarray, pb: np.ndarray) -> float:
    """RMS difference in dB between two radial power spectra of the same bins."""
    eps = 1e-12
    return float(np.sqrt(np.mean((10 * np.log10((pa + eps) / (pb + eps))) ** 2)))


def random_crops(images: np.ndarray, size: int, per_image: int, seed: int = 0, first: int = 0) -> np.ndarray:
    """`per_image` square crops of `size` px per image, at native resolution.

    Crop positions of image i come from a generator keyed by (seed, i), so real
    and generated sets go through the very same transform. `first`: the set index
    of images[0], so a set streamed in batches gets the crops of the whole array.
    """
    n, h, w, _ = images.shape
    if size > min(h, w):
        raise BenchError(f"patch size {size} is larger than the {h}x{w} images; "
                         f"lower metrics.patch_size or drop patch metrics at this resolution")
    out = np.empty((n * per_image, size, size, images.shape[3]), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, first + i])
        ys = rng.integers(0, h - size + 1, per_image)
        xs = rng.integers(0, w - size + 1, per_image)
        for k, (y, x) in enumerate(zip(ys, xs)):
            out[i * per_image + k] = images[i, y:y + size, x:x + size]
    return out


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

    def hasher(self, shape: tuple, *salt: str):
        """content_hasher for this extractor: feed it the pixels, then load/store by its hexdigest."""
        return content_hasher(shape, self.extractor.identity, *salt)

    def load(self, key: str, rows: int, kind: str) -> np.ndarray | None:
        """The stored features of `key` (rows x 2048), or None; collective under torchrun."""
        from bench import dist

        path = self.root / key[:2] / f"{key}.npy"
        feats = None
        if path.is_file():
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
            with atomic_path(self.root / key[:2] / f"{key}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, feats)
        self.computed[kind] = self.computed.get(kind, 0) + 1

    def _load_or_compute(self, key: str, images: np.ndarray, kind: str, desc: str) -> np.ndarray:
        feats = self.load(key, len(images), kind)
        if feats is None:
            feats = self.extractor.array_features(images, desc=desc)
            self.store(key, feats, kind)
        return feats


METRIC_NAMES = ("fid", "kid", "pr", "patch-fid", "patch-kid", "spectral")
FEATURE_ONLY = {"fid", "kid", "pr"}


def load_set(path: str | Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(images, features) of a folder/zip (images) or .npz ('images' and/or 'features')."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise BenchError(f"{path} does not exist; give a folder, .zip or .npz")
        try:
            with np.load(path) as z:
                images = z["images"] if "images" in z.files else None
                feats = z["features"] if "features" in z.files else None
        except (OSError, ValueError) as exc:
            raise BenchError(f"{path} is not a readable .npz ({type(exc).__name__}); re-create it") from None
        if images is None and feats is None:
            raise BenchError(f"{path} holds neither 'images' (NHWC uint8) nor 'features' (Nx2048)")
        if feats is not None and (feats.ndim != 2 or feats.shape[1] != FEATURE_DIM):
            raise BenchError(f"{path}: 'features' has shape {feats.shape}, expected (N, {FEATURE_DIM})")
        return images, feats
    s = ImageFiles(path)
    imgs = [s.read(i) for i in range(len(s))]
    if len({im.shape for im in imgs}) == 1:
        return np.stack(imgs), None
    return np.array(imgs, dtype=object), None


def compare_sets(a, b, names: Sequence[str], device: str = "auto", batch_size: int = 32,
                 inception_path: str | None = None, patch_size: int = 32, patches_per_image: int = 4,
                 kid_subset_seed: int = 0, mode: str = "clean") -> dict:
    """The `bench metrics` computation: A is the generated set, B the reference.

    Inception metrics are in FID mode `mode`; features given in an .npz are taken
    as made in that mode (they carry no mode of their own)."""
    from bench.io import cache_dir, pick_device

    if mode not in EXTRACTORS:
        raise BenchError(f"FID mode {mode!r} is not known; use one of: {', '.join(EXTRACTORS)}")
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or not names:
        raise BenchError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(METRIC_NAMES)}")
    (ia, fa), (ib, fb) = load_set(a), load_set(b)
    for label, imgs in (("A", ia), ("B", ib)):
        if imgs is None and set(names) - FEATURE_ONLY:
            raise BenchError(f"set {label} has features only; {', '.join(sorted(set(names) - FEATURE_ONLY))} "
                             "need images (give a folder, zip or .npz with 'images')")
        if imgs is not None and imgs.dtype == object and set(names) - FEATURE_ONLY:
            raise BenchError(f"set {label} mixes image sizes; patch and spectral metrics need one size")
    cache = None
    if fa is None or fb is None or {"patch-fid", "patch-kid"} & set(names):
        cache = FeatureCache(cache_dir() / "features",
                             build_feature_extractor(mode, pick_device(device), batch_size, inception_path))

    def feats(imgs, f, label):
        if f is not None:
            return f
        if imgs.dtype == object:  # mixed sizes: no content key over one array; compute directly
            return cache.extractor.features(iter(imgs), total=len(imgs), desc=f"features {label}")
        return cache.features(imgs, label, f"features {label}")

    out: dict = {"n_a": int(len(fa) if fa is not None else len(ia)),
                 "n_b": int(len(fb) if fb is not None else len(ib)), "mode": mode}
    if FEATURE_ONLY & set(names):
        f1, f2 = feats(ia, fa, "A"), feats(ib, fb, "B")
        if "fid" in names:
            out["fid"] = frechet_distance(f1, f2)
        if "kid" in names:
            out["kid"] = kid(f1, f2, kid_subset_seed)
            out["kid_subset_seed"] = kid_subset_seed
        if "pr" in names:
            from bench.fidelity import precision_recall

            out.update(precision_recall(f2, f1))
    if "spectral" in names:
        out["spectral_lsd"] = log_spectral_distance(ia, ib)
    if {"patch-fid", "patch-kid"} & set(names):
        salt = f"patches:{patch_size}x{patches_per_image}"
        pa = cache.features(random_crops(ia, patch_size, patches_per_image), "A", "patches A", salt)
        pb = cache.features(random_crops(ib, patch_size, patches_per_image), "B", "patches B", salt)
        if "patch-fid" in names:
            out["patch_fid"] = frechet_distance(pa, pb)
        if "patch-kid" in names:
            out["patch_kid"] = kid(pa, pb, kid_subset_seed)
    return out
