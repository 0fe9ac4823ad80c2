"""The metric table and the metrics' math: every metric name, its columns and how it is computed.

`METRICS` is the one list of metrics. An entry says what a suite and `bench
metrics` call it (`name`), which metrics.csv columns it fills, with each column's
label, direction and print format (`columns`), what it is computed from
(`needs`: Inception features of whole images, Inception features of patch crops,
or pixels) and how (`compute`). Everything else derives from it: the names a
suite may list (bench.config), the dispatch (bench.scoring), the CSV columns
(bench.results) and the tables' labels and formats (bench.tables). To add a
metric, add a function and an entry here.

`FID_MODES` is the same for the two ways an image reaches Inception (the
extractors are in bench.features): every number of a mode-dependent column is
stored with the mode it came from.

The rest is math on arrays: pure functions of features (FID, KID,
precision/recall) or of pixels (power spectra, patch crops), numpy only --
except two functions that call clean-fid's and torch-fidelity's own code, so the
numbers are theirs; those import inside (see there why).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable, Optional

import numpy as np

from bench.errors import BenchError

# ---------------------------------------------------------------------------- FID modes


@dataclass(frozen=True)
class FidMode:
    name: str
    impl: str  # how tables name the implementation
    how: str   # how an image reaches Inception's 299x299 input
    text: str  # one sentence for reports


FID_MODES: dict[str, FidMode] = {m.name: m for m in (
    FidMode("clean", "clean-fid clean mode", "clean-fid, PIL bicubic to 299",
            "clean-fid's `clean` mode: PIL bicubic resize to 299"),
    FidMode("legacy", "legacy mode (EDM fid.py protocol)",
            "EDM fid.py's protocol, as the paper: native-size uint8 into torch-fidelity's inception-v3-compat, "
            "TF1 bilinear resize inside",
            "the `legacy` mode, EDM fid.py's protocol: uint8 at native size, TF1-style bilinear resize inside "
            "Inception (torch-fidelity's inception-v3-compat)"),
)}


def fid_impl(mode: str) -> str:
    """'clean' -> 'clean-fid clean mode': how a table names the FID implementation of a mode."""
    return FID_MODES[mode].impl if mode in FID_MODES else f"{mode} mode"


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class MetricOptions:
    """The knobs of the metrics (a suite's `metrics:` section and `bench metrics` options share these defaults)."""

    kid_subset_seed: int = 0
    pr_k: int = 3  # k of the k-NN manifolds of precision/recall
    patch_size: int = 32  # patch crops, px at the native resolution
    patches_per_image: int = 4


@dataclass(frozen=True)
class Spectrum:
    """An image set's radially averaged power spectrum, with the image shape (H, W, C) it belongs to."""

    shape: tuple
    power: np.ndarray

    @classmethod
    def of(cls, images: np.ndarray) -> "Spectrum":
        return cls(tuple(images.shape[1:]), radial_power_spectrum(images)[1])


class Pixels:
    """An image set's pixels, as the pixel metrics see them: the images where the set is held in
    memory, or only their spectrum (a streamed reference set). The spectrum is computed once."""

    def __init__(self, images: Optional[np.ndarray] = None, spectrum: Optional[Spectrum] = None):
        if images is None and spectrum is None:
            raise ValueError("Pixels needs images or a spectrum")
        self.images = images
        if spectrum is not None:
            self.spectrum = spectrum  # fills the cached property

    @cached_property
    def spectrum(self) -> Spectrum:
        return Spectrum.of(self.images)


@dataclass
class SetStats:
    """What the metrics read from one image set in one FID mode; None where it was not computed."""

    features: Optional[np.ndarray] = None  # Inception features of the whole images, N x 2048
    patches: Optional[np.ndarray] = None  # Inception features of its patch crops
    pixels: Optional[Pixels] = None

    def has(self, need: str) -> bool:
        return getattr(self, need) is not None


NEEDS = ("features", "patches", "pixels")  # the SetStats fields a metric can need

# ---------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Column:
    """A metrics.csv column and how tables and figures show it."""

    name: str
    label: str
    lower_is_better: bool
    fmt: str


@dataclass(frozen=True)
class Metric:
    name: str
    needs: str  # one of NEEDS
    columns: tuple[Column, ...]
    compute: Callable[[SetStats, SetStats, MetricOptions], dict[str, float]]  # (real, fake, options) -> columns


def _fid(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"fid": frechet_distance(fake.features, real.features)}


def _kid(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"kid": kid(fake.features, real.features, o.kid_subset_seed)}


def _pr(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return precision_recall(real.features, fake.features, k=o.pr_k)


def _patch_fid(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"patch_fid": frechet_distance(fake.patches, real.patches)}


def _patch_kid(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"patch_kid": kid(fake.patches, real.patches, o.kid_subset_seed)}


def _spectral(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"spectral_lsd": spectral_lsd(real.pixels.spectrum, fake.pixels.spectrum)}


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fid", "features", (Column("fid", "FID", True, "{:.2f}"),), _fid),
    Metric("kid", "features", (Column("kid", "KID", True, "{:.4f}"),), _kid),
    Metric("pr", "features", (Column("precision", "precision", False, "{:.3f}"),
                              Column("recall", "recall", False, "{:.3f}")), _pr),
    Metric("patch-fid", "patches", (Column("patch_fid", "patch FID", True, "{:.2f}"),), _patch_fid),
    Metric("patch-kid", "patches", (Column("patch_kid", "patch KID", True, "{:.4f}"),), _patch_kid),
    Metric("spectral", "pixels", (Column("spectral_lsd", "log-spectral distance (dB)", True, "{:.2f}"),),
           _spectral),
)}
# every metric column, in table order (the order of metrics.csv and of the report's tables)
COLUMNS: dict[str, Column] = {c.name: c for m in METRICS.values() for c in m.columns}
# columns computed from Inception features, so they depend on the FID mode (the pixel ones do not)
INCEPTION_COLUMNS: frozenset[str] = frozenset(c.name for m in METRICS.values() if m.needs != "pixels"
                                              for c in m.columns)


def select(names: Iterable[str]) -> list[Metric]:
    """The named metrics in table order; BenchError naming unknown ones (or none given)."""
    names = list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise BenchError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(METRICS)}")
    return [m for m in METRICS.values() if m.name in names]


def needs(names: Iterable[str]) -> set[str]:
    """What the named metrics are computed from (a subset of NEEDS)."""
    return {m.needs for m in select(names)}


# ---------------------------------------------------------------------------- features


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


def kid(f1: np.ndarray, f2: np.ndarray, subset_seed: int = 0, num_subsets: int = 100,
        max_subset_size: int = 1000) -> float:
    """KID: clean-fid's `kernel_distance`, with its numpy subset draws seeded.

    clean-fid draws subsets with the global numpy RNG; seeding it makes KID
    reproducible (and, with equal set sizes <= max_subset_size, every subset is
    the whole set, so the estimator is deterministic whatever the seed).
    """
    # inside: cleanfid.fid pulls in torchvision, 1.2 s after torch (python -X importtime), and this
    # module is imported by bench.config, i.e. by every command
    from cleanfid.fid import kernel_distance

    state = np.random.get_state()
    np.random.seed(subset_seed)
    try:
        return float(kernel_distance(f1, f2, num_subsets=num_subsets, max_subset_size=max_subset_size))
    finally:
        np.random.set_state(state)


def precision_recall(features_real, features_fake, k: int = 3) -> dict[str, float]:
    """Improved precision/recall (Kynkaanniemi et al.) via torch-fidelity's own function.

    precision: share of fake samples inside some real sample's k-NN ball;
    recall: share of real samples inside some fake sample's k-NN ball.
    """
    # inside: torch (1.5 s) and torch-fidelity (0.9 s more, python -X importtime); this module is
    # imported by bench.config, i.e. by every command
    import torch
    from torch_fidelity.metric_prc import prc_features_to_metric

    real = torch.as_tensor(features_real).detach().cpu()
    fake = torch.as_tensor(features_fake).detach().cpu()
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise BenchError(f"precision/recall needs two NxD feature sets of the same D, "
                         f"got {tuple(real.shape)} and {tuple(fake.shape)}")
    if min(len(real), len(fake)) <= k:
        raise BenchError(f"precision/recall with k={k} needs more than {k} samples per set, "
                         f"got {len(real)} real and {len(fake)} fake")
    dtype = torch.promote_types(torch.promote_types(real.dtype, fake.dtype), torch.float32)
    # torch-fidelity's convention: features_1 is generated (input1), features_2 is real (input2)
    out = prc_features_to_metric(fake.to(dtype), real.to(dtype), prc_neighborhood=k,
                                 prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    return {"precision": float(out["precision"]), "recall": float(out["recall"])}


# ---------------------------------------------------------------------------- pixels


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


def spectrum_distance(pa: np.ndarray, pb: np.ndarray) -> float:
    """RMS difference in dB between two radial power spectra of the same bins."""
    eps = 1e-12
    return float(np.sqrt(np.mean((10 * np.log10((pa + eps) / (pb + eps))) ** 2)))


def spectral_lsd(real: Spectrum, fake: Spectrum) -> float:
    """The `spectral` metric: spectrum_distance(fake, real), for sets of one image size."""
    if fake.shape != real.shape:
        raise BenchError(f"spectral distance needs equal image sizes, got {fake.shape[:2]} "
                         f"and {real.shape[:2]}; compare sets at the same resolution")
    return spectrum_distance(fake.power, real.power)


def log_spectral_distance(images_a: np.ndarray, images_b: np.ndarray) -> float:
    """RMS difference in dB between the radial power spectra of two image sets (A generated, B real)."""
    return spectral_lsd(Spectrum.of(images_b), Spectrum.of(images_a))


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


def patch_crops(images: np.ndarray, options: MetricOptions, first: int = 0) -> np.ndarray:
    """The crops the patch metrics compare: the same positions for real and generated sets."""
    return random_crops(images, options.patch_size, options.patches_per_image, seed=0, first=first)

