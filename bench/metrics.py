"""The metric table and the metrics' math: every metric name, its columns and how it is computed.

`METRICS` is the one list of metrics. An entry says what a suite and `bench
metrics` call it (`name`), which metrics.csv columns it fills, with each column's
label, direction and print format (`columns`, and `companions`: a standard error,
a tolerance or an exact answer that qualifies them), what it is computed from
(`needs`: Inception features of whole images, Inception features of patch crops,
or pixels) and how (`compute`; `bootstrap` for its standard error over samples;
`exact` when it scores against the dataset's own exact answer, bench.grf). Everything else derives from it: the names a
suite may list (bench.config), the dispatch (bench.scoring), the CSV columns
(bench.results) and the tables' labels and formats (bench.tables). To add a
metric, add a function and an entry here.

`FID_MODES` is the same for the two ways an image reaches Inception (the
extractors are in bench.features): every number of a mode-dependent column is
stored with the mode it came from.

The rest is math on arrays: pure functions of features (FID, KID,
precision/recall) or of pixels (power spectra, patch crops), numpy only --
except precision/recall, which calls torch-fidelity's own code so the numbers are
theirs (imported inside, see there why). KID follows clean-fid's code line for
line and is tested equal to it.
"""
from __future__ import annotations

import math
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
    bootstrap: int = 0  # resamples of the bootstrap over samples (0: none); see `bootstrap_se`
    bootstrap_seed: int = 0
    # the dataset's exact-answer scorer (images -> {column: value}), for metrics marked `exact`;
    # set by `bench run` from a dataset that has one (bench.grf), None elsewhere
    exact: Optional[Callable[[np.ndarray], dict]] = None


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
    ranked: bool = True  # False: neither direction is better (a value to compare with its exact answer)


@dataclass(frozen=True)
class Metric:
    name: str
    needs: str  # one of NEEDS
    columns: tuple[Column, ...]
    compute: Callable[[SetStats, SetStats, MetricOptions], dict[str, float]]  # (real, fake, options) -> columns
    # columns that qualify the main ones (a standard error, a tolerance, the exact answer): written
    # to metrics.csv after the main columns, shown beside their metric, never ranked or tabled alone
    companions: tuple[Column, ...] = ()
    # (real, fake, options) -> {companion column: value}: the bootstrap over samples, when options.bootstrap
    bootstrap: Optional[Callable[[SetStats, SetStats, MetricOptions], dict[str, float]]] = None
    exact: bool = False  # scored against the dataset's exact answer (options.exact), not a reference set


def _fid(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"fid": frechet_distance(fake.features, real.features)}


def _kid(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    value, std = kid_with_std(fake.features, real.features, o.kid_subset_seed)
    return {"kid": value, "kid_subset_std": std}


def _fid_bootstrap(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"fid_se": bootstrap_se(real.features, fake.features, frechet_distance, o)}


def _kid_bootstrap(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"kid_se": kid_bootstrap_se(fake.features, real.features, o)}


def _exact(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    if o.exact is None:
        raise BenchError("grf-spectrum is scored against a dataset's exact answer; only a suite whose dataset has "
                         "one (kind: grf) can ask for it")
    out = o.exact(fake.pixels.images)
    return {c.name: float(out[c.name]) for m in METRICS.values() if m.exact for c in m.columns + m.companions}


def _pr(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return precision_recall(real.features, fake.features, k=o.pr_k)


def _patch_fid(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"patch_fid": frechet_distance(fake.patches, real.patches)}


def _patch_kid(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"patch_kid": kid(fake.patches, real.patches, o.kid_subset_seed)}


def _spectral(real: SetStats, fake: SetStats, o: MetricOptions) -> dict[str, float]:
    return {"spectral_lsd": spectral_lsd(real.pixels.spectrum, fake.pixels.spectrum)}


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fid", "features", (Column("fid", "FID", True, "{:.2f}"),), _fid,
           companions=(Column("fid_se", "FID bootstrap standard error", True, "{:.2f}"),), bootstrap=_fid_bootstrap),
    Metric("kid", "features", (Column("kid", "KID", True, "{:.4f}"),), _kid,
           companions=(Column("kid_subset_std", "KID std over subsets", True, "{:.4f}"),
                       Column("kid_se", "KID bootstrap standard error", True, "{:.4f}")), bootstrap=_kid_bootstrap),
    Metric("pr", "features", (Column("precision", "precision", False, "{:.3f}"),
                              Column("recall", "recall", False, "{:.3f}")), _pr),
    Metric("patch-fid", "patches", (Column("patch_fid", "patch FID", True, "{:.2f}"),), _patch_fid),
    Metric("patch-kid", "patches", (Column("patch_kid", "patch KID", True, "{:.4f}"),), _patch_kid),
    Metric("spectral", "pixels", (Column("spectral_lsd", "log-spectral distance (dB)", True, "{:.2f}"),),
           _spectral),
    # bench.grf.grf_spectrum_metric: the analytic power spectrum and correlation length, no reference set
    Metric("grf-spectrum", "pixels", (
        Column("grf_lsd_db", "log-spectral error vs the analytic spectrum (dB)", True, "{:.2f}"),
        Column("grf_corr_length", "correlation length (image widths)", True, "{:.4f}", ranked=False)), _exact,
        companions=(Column("grf_lsd_tol_db", "its tolerance for real samples (dB)", True, "{:.2f}"),
                    Column("grf_corr_length_expected", "exact correlation length (image widths)", True, "{:.4f}"),
                    Column("grf_corr_length_tol", "its tolerance for real samples", True, "{:.4f}")),
        exact=True),
)}
# every metric column, in table order (the order of metrics.csv and of the report's tables)
COLUMNS: dict[str, Column] = {c.name: c for m in METRICS.values() for c in m.columns}
# the companion columns, in table order (after the main ones in metrics.csv)
COMPANIONS: dict[str, Column] = {c.name: c for m in METRICS.values() for c in m.companions}
# columns computed from Inception features, so they depend on the FID mode (the pixel ones do not)
INCEPTION_COLUMNS: frozenset[str] = frozenset(c.name for m in METRICS.values() if m.needs != "pixels"
                                              for c in m.columns + m.companions)
# main column -> its bootstrap standard-error column (the companions named <column>_se)
SE_COLUMNS: dict[str, str] = {c.name: f"{c.name}_se" for m in METRICS.values() for c in m.columns
                              if f"{c.name}_se" in COMPANIONS}
BOOTSTRAP_RESAMPLES = 100  # what `bench run` asks for where a suite has one training seed
BOOTSTRAP_MAX_N = 500  # the bootstrap over samples runs only on sets this small (its cost grows as N^2)
Z95 = 1.959963984540054  # the standard normal's 0.975 quantile


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
    return kid_with_std(f1, f2, subset_seed, num_subsets, max_subset_size)[0]


def kid_with_std(f1: np.ndarray, f2: np.ndarray, subset_seed: int = 0, num_subsets: int = 100,
                 max_subset_size: int = 1000) -> tuple[float, float]:
    """(KID, its standard deviation over the subsets): clean-fid's `kernel_distance`, line for line.

    The same subset draws from the global numpy RNG (seeded here and restored), the
    same arithmetic in the same order, so the KID is clean-fid's to the last bit
    (tests/test_metrics.py compares the two); the per-subset values it sums are kept
    for their standard deviation (ddof 1; 0 when every subset is the whole set).
    """
    state = np.random.get_state()
    np.random.seed(subset_seed)
    try:
        n = f1.shape[1]
        m = min(min(f1.shape[0], f2.shape[0]), max_subset_size)
        t, values = 0, []
        for _ in range(num_subsets):
            x = f2[np.random.choice(f2.shape[0], m, replace=False)]
            y = f1[np.random.choice(f1.shape[0], m, replace=False)]
            a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
            b = (x @ y.T / n + 1) ** 3
            v = (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
            t += v
            values.append(v / m)
    finally:
        np.random.set_state(state)
    std = float(np.std(values, ddof=1)) if num_subsets > 1 else 0.0
    return float(t / num_subsets / m), std


def _resamples(n_real: int, n_fake: int, o: MetricOptions):
    """The bootstrap's index draws: (real indices, fake indices) o.bootstrap times, from one seeded generator."""
    rng = np.random.default_rng([o.bootstrap_seed, n_real, n_fake])
    for _ in range(o.bootstrap):
        yield rng.integers(0, n_real, n_real), rng.integers(0, n_fake, n_fake)


def bootstrap_se(real: np.ndarray, fake: np.ndarray, fn: Callable[[np.ndarray, np.ndarray], float],
                 o: MetricOptions) -> float:
    """Standard error of fn(fake, real) over samples: both sets resampled with replacement
    o.bootstrap times (seeded: the same sets give the same number), the std of the recomputed
    values. NaN when either set is larger than BOOTSTRAP_MAX_N or o.bootstrap < 2."""
    if o.bootstrap < 2 or max(len(real), len(fake)) > BOOTSTRAP_MAX_N:
        return math.nan
    values = [fn(fake[j], real[i]) for i, j in _resamples(len(real), len(fake), o)]
    return float(np.std(values, ddof=1))


def kid_bootstrap_se(f1: np.ndarray, f2: np.ndarray, o: MetricOptions) -> float:
    """bootstrap_se of KID (f1 generated, f2 real), from the kernel matrices computed once.

    Each resample's KID is the unbiased MMD^2 of the whole resampled sets (clean-fid's
    estimator with one subset of all images); pairs of copies of one image are left out of
    the within-set sums, as the unbiased estimator leaves out an image paired with itself. A resample
    that draws one image only, in either set, has no such pair and no KID: it is left out (the
    bootstrap conditioned on a defined estimate), which matters for tiny sets only (of 3 images, 1 in
    9 resamples; of 8, 1 in 2 million); NaN when fewer than two resamples remain."""
    if o.bootstrap < 2 or max(len(f1), len(f2)) > BOOTSTRAP_MAX_N:
        return math.nan
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    d = f1.shape[1]
    kxx, kyy, kxy = ((f2 @ f2.T / d + 1) ** 3, (f1 @ f1.T / d + 1) ** 3, (f2 @ f1.T / d + 1) ** 3)

    def within(k: np.ndarray, idx: np.ndarray) -> float:
        distinct = idx[:, None] != idx[None, :]
        return float(k[np.ix_(idx, idx)][distinct].mean())

    values = [within(kxx, i) + within(kyy, j) - 2 * float(kxy[np.ix_(i, j)].mean())
              for i, j in _resamples(len(f2), len(f1), o) if np.ptp(i) > 0 and np.ptp(j) > 0]
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan


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

