"""`grf`: Gaussian random fields with an exact answer at every resolution, and the metric that checks it.

Why: FID needs Inception and reference images and cannot say *what* is wrong
above the training resolution.  For these fields the right answer is known in
closed form at every resolution, so a sampler's output can be scored against it
with a tolerance that follows from the number of samples alone.

The field
---------
Image i is a real, zero-mean, periodic Gaussian field on the unit square
[0, 1)^2 with three channels,

    f(x) = sum_k c_k exp(2 pi i k.x),   k = (ky, kx) in Z^2 \\ {0},  c_{-k} = conj(c_k),

whose coefficients are complex Gaussians with E|c_k|^2 = P(k) per channel,

    P(k) = A (|k|^2 + kappa^2)^(-alpha),   k in cycles per unit length (physical, not per pixel).

A is set by `std`, the standard deviation of the continuous field (per channel):
A = std^2 / sum_{k != 0} (|k|^2 + kappa^2)^(-alpha).  Channels have correlation
`channel_correlation` (rho) at every frequency: E[c_k c_k^H] = P(k) R with
R = ones on the diagonal, rho elsewhere.  The mean (k = 0) is exactly zero.

At N px the image is the SAME continuous field truncated to the frequencies N
pixels can represent, K_N = {k : |ky| < N/2 and |kx| < N/2}, point-sampled at the
pixel centres x_j = (j + 1/2)/N (the convention of toyfaces and PIL).  For even
N the Nyquist row and column (|k| = N/2) are left out, i.e. set to zero: at
pixel centres a cosine at Nyquist and its sine cannot both be represented, and a
frequency that is dropped is unambiguous while one that is folded is not.  For
odd N every |k| <= (N-1)/2 is representable and nothing is dropped.  So there is
no pixel window and no aliasing: pixel values are exact samples of a band-limited
function.

Cost: 0.16 ms per image at 16 px, 0.52 at 32, 1.6 at 64, 3.2 at 96 (batches of
1,000 on a shared 2-core machine); nothing is cached, as nothing needs to be.

Coefficients are drawn in square shells m = max(|ky|, |kx|) = 1, 2, ...: shell m
of image i comes from numpy's default_rng([seed, i, m]) as 4m half-plane
frequencies (kx > 0, or kx = 0 and ky > 0) in (kx, ky) order, each with a
complex normal per channel.  K_N is the shells m <= (N-1)//2, so a frequency's
coefficient never depends on N: the 64 px image of seed s, truncated in Fourier
space to 16 px, is the 16 px image of seed s (to float round-off; tested to 1e-6).

uint8: one fixed affine map for every parameter set and resolution,
u = clip(rint(127.5 + f * 127.5/4.5), 0, 255): field values +-4.5 reach 0 and 255
(one quantisation step = 0.0353 field units).  The field is exactly Gaussian, so
with the default std = 1 a value clips with probability 2 Phi(-4.48) = 7e-6 in
the continuum limit, and less at finite N where the truncated field has less
variance.  Measured over 1,000 images (default parameters, seed 0): 2 of 768,000
values at 16 px (2.6e-6), 56 of 12.3 million at 64 px (4.6e-6), 117 of 27.6
million at 96 px (4.2e-6); clipped pixels come in clusters (one blob above 4.5),
so these counts are noisier than Poisson.  `std` is capped at 1.5 (at most
2 Phi(-3) = 2.7e-3) and bounded below by 0.1 = 2.8 steps (the rounding noise is then
at most 1% of the variance); the field truncated to K_N must still show half of that
at every resolution a suite reads (`GRF.validate`).  The metric below works on field
values: it maps uint8 back with the inverse map and accounts for the quantisation
noise (variance 1/12 step^2, white), so the test tolerances hold for uint8 images as
for floats.

Defaults kappa = 2, alpha = 2 (Matern smoothness nu = alpha - 1 = 1), std = 1.  The
field's correlation falls to 1/e at r = 0.1188 units of the square (1/kappa = 0.5):
1.9 px at 16 px and 11.4 px at 96 px -- resolved at 16 px, and still about eight
correlation lengths across a 96 px image.  (The Matern correlation
(lam r) K_1(lam r), lam = 2 pi kappa, alone would give 0.132; the field has no k = 0
term, which lowers the correlation by the constant P(0), see corr_length_continuum.)

The metric (`grf_spectrum_metric`)
----------------------------------
Per resolution N, from n images (uint8 NHWC, or float NHWC field values):

* the per-mode power |fft2(f)/N^2|^2, averaged over images and channels, i.e. the
  estimate of E|c_k|^2 in physical units, binned by round(|k|) = 1 .. (N-1)//2
  (cycles per unit length; DC and the Nyquist row/column left out), against the
  bin mean of P(k) + the quantisation floor (1/12 step^2)/N^2 per mode (uint8 input
  only).  `grf_lsd_db` = RMS over bins of 10 log10(measured/expected).
* `grf_corr_length`: the lag (physical units) where the measured correlation
  along the x and y axes (inverse DFT of the floor-subtracted mode power over
  K_N, averaged over the two axes, linear between pixel lags) first falls to 1/e;
  `grf_corr_length_expected` is the same estimator applied to the analytic
  spectrum at that N (what real samples give), `grf_corr_length_continuum` the
  closed-form e-folding length of the continuous field.

Tolerances follow from n alone.  A mode's power estimate is P(k) chi^2_2/2 per
image and channel, so a bin mean is approximately P chi^2_nu/nu with
nu = n c (sum_b E)^2 / sum_b E^2 over the bin's modes (= 2 x independent modes x n x c
for a flat bin; Satterthwaite for a sloped one), where c = 3/(1 + 2 rho^2) is the
effective number of independent channels.  The log of chi^2_nu/nu has exact mean
psi(nu/2) - ln(nu/2) and variance psi'(nu/2); the sum of squared bin errors is
matched to a scaled chi^2 and `grf_lsd_tol_db` is its (1 - p) quantile.  The
correlation length's standard error is the delta method through the same
per-mode variances, and `grf_corr_length_tol` = z_(1-p/2) times it.  p = 1e-3.
Checked by simulation (tests/test_grf.py): over 60-80 independent sets of 50
images, each bin's empirical spread is 0.8-1.1x the predicted one and the
correlation length's 0.9x.

Caveat: the periodogram is circular, as the data are periodic.  A model whose
samples are not periodic (zero-padded convolutions) puts its edge discontinuity
into the k_x = 0 and k_y = 0 axes of the spectrum, and this metric counts that
as error: periodicity is part of the data distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats

from bench.errors import BenchError
from bench.images import check_index, check_resolution

# The fixed field -> uint8 map (see the module docstring).
UINT8_OFFSET = 127.5
UINT8_RANGE = 4.5  # field units that reach 0 and 255
UINT8_SCALE = 127.5 / UINT8_RANGE  # uint8 steps per field unit
QUANT_VARIANCE = 1.0 / 12.0 / UINT8_SCALE ** 2  # rounding noise per pixel, field units^2

MAX_STD = 1.5  # clipping probability <= 2 Phi(-3) = 2.7e-3 per value
# The smallest standard deviation an image may have, in field units: 0.1 = 2.8 uint8 steps, so the
# rounding noise (variance step^2/12) is at most 1% of the image's variance; below it images are
# nearly constant (std 1e-300: every pixel 127 or 128, and FID 0 between any two models).
MIN_STD = 0.1
# What an image at N px must still show of it (GRF.validate): the truncated field's std is below the
# whole field's at every N (no k = 0 or beyond-Nyquist terms), so the schema's MIN_STD itself must pass;
# at half of it the rounding noise is still at most 4% of the variance.
MIN_SHOWN_STD = MIN_STD / 2
# kappa below the lowest frequency |k| = 1 changes P(k) by a factor (1 + kappa^2/|k|^2)^-alpha, under
# 1e-5 at kappa 1e-3: smaller knees give the same field, and kappa^(-2 alpha) (the k = 0 term of
# corr_length_continuum) stays finite.  Above 256 cycles, the Nyquist frequency of the largest
# resolution a suite may use (512 px), the knee lies beyond every frequency an image can show: the
# spectrum is flat (white noise) at every resolution and most of the variance is invisible (kappa
# 1e20: constant images; 1e300: kappa^2 overflows and the amplitude divides by zero).
MIN_KAPPA = 1e-3
MAX_KAPPA = 256.0
DEFAULT_FALSE_ALARM = 1e-3
_CHANNELS = 3
_E = math.exp(-1.0)
# Images synthesised per vectorised step: bounds the complex temporaries to ~30 MB at 512 px.
_SYNTH_CHUNK_PIXELS = 1 << 20


def _number(value, name: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)):
        raise BenchError(f"grf {name} must be a number, got {value!r}; set {name} to e.g. {example}")
    return float(value)


@lru_cache(maxsize=32)
def _lattice_sum(kappa: float, alpha: float) -> float:
    """sum over k in Z^2 \\ {0} of (|k|^2 + kappa^2)^(-alpha); within 1.2e-9 relative of the
    same sum taken to radius 2048, for alpha >= 1.1 (measured).

    Exact over the disk |k| <= 512, plus the integral of the same function outside a
    disk of the same area as the lattice points counted (the lattice-point error of
    the boundary is of lower order than the tail itself).
    """
    r = 512
    k = np.arange(-r, r + 1, dtype=np.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    inside = k2 <= r * r
    terms = np.where(inside & (k2 > 0), (k2 + kappa * kappa) ** -alpha, 0.0)
    area = np.count_nonzero(inside)  # one unit of area per lattice point
    tail = math.pi * (area / math.pi + kappa * kappa) ** (1.0 - alpha) / (alpha - 1.0)
    return float(terms.sum() + tail)


@dataclass(frozen=True)
class GRFSpectrum:
    """The field's statistics: P(k) = A (|k|^2 + kappa^2)^(-alpha) per channel, channel correlation rho."""

    kappa: float = 2.0
    alpha: float = 2.0
    std: float = 1.0
    channel_correlation: float = 0.0

    def __post_init__(self):
        kappa = _number(self.kappa, "kappa", "2.0")
        alpha = _number(self.alpha, "alpha", "2.0")
        std = _number(self.std, "std", "1.0")
        rho = _number(self.channel_correlation, "channel_correlation", "0.0")
        if not MIN_KAPPA <= kappa <= MAX_KAPPA:
            raise BenchError(f"grf kappa must be in [{MIN_KAPPA:g}, {MAX_KAPPA:g}] (cycles per unit length; above, "
                             f"the knee is beyond every frequency a 512 px image shows), got {kappa}; set kappa "
                             "to e.g. 2.0")
        if not 1.0 < alpha <= 10.0:
            raise BenchError(f"grf alpha must be in (1, 10] (alpha <= 1 gives a field of infinite variance), "
                             f"got {alpha}; set alpha to e.g. 2.0")
        if not MIN_STD <= std <= MAX_STD:
            raise BenchError(f"grf std must be in [{MIN_STD}, {MAX_STD}] (smaller gives nearly constant uint8 "
                             f"images, larger clips them), got {std}; set std to e.g. 1.0")
        if not -0.5 < rho < 1.0:
            raise BenchError(f"grf channel_correlation must be in (-0.5, 1) (a valid 3x3 correlation), got {rho}; "
                             "set channel_correlation to e.g. 0.0")
        for name, value in (("kappa", kappa), ("alpha", alpha), ("std", std), ("channel_correlation", rho)):
            object.__setattr__(self, name, value)

    @property
    def amplitude(self) -> float:
        """A in P(k): the field's continuum variance is std^2."""
        return self.std ** 2 / _lattice_sum(self.kappa, self.alpha)

    def power(self, k2: np.ndarray) -> np.ndarray:
        """P(k) at squared physical frequencies k2 = |k|^2 (cycles per unit length, squared); P(0) = 0."""
        k2 = np.asarray(k2, dtype=np.float64)
        return np.where(k2 > 0, self.amplitude * (k2 + self.kappa ** 2) ** -self.alpha, 0.0)

    @property
    def channel_mixing(self) -> np.ndarray:
        """Lower Cholesky factor L of the channel correlation matrix R (L L^T = R)."""
        r = np.full((_CHANNELS, _CHANNELS), self.channel_correlation)
        np.fill_diagonal(r, 1.0)
        return np.linalg.cholesky(r)

    @property
    def effective_channels(self) -> float:
        """Independent channels worth of power estimates: Var of a 3-channel mean of |c|^2 is (1 + 2 rho^2)/3."""
        return _CHANNELS / (1.0 + 2.0 * self.channel_correlation ** 2)

    def std_at(self, resolution: int) -> float:
        """The standard deviation of the field at `resolution` px: of its frequencies K_N only, so at most std."""
        return math.sqrt(float(expected_mode_power(self, check_resolution(resolution)).sum()))

    def corr_length_continuum(self) -> float:
        """Lag (units of the square) where the continuous field's correlation falls to 1/e.

        Summed over all of Z^2, P is the Matern spectrum whose 2-D transform, k in cycles,
        is rho_M(r) = (lam r)^nu K_nu(lam r) 2^(1-nu)/Gamma(nu), nu = alpha - 1, lam = 2 pi kappa.
        The field has no k = 0 term, which removes P(0) from the covariance:
        C(r) = (std^2 + P(0)) rho_M(r) - P(0).  (The unit torus's periodic images add
        rho_M(1 - r), below 2e-5 at the defaults, and are neglected.)
        """
        nu = self.alpha - 1.0
        p0 = self.amplitude * self.kappa ** (-2.0 * self.alpha)
        lam = 2.0 * math.pi * self.kappa

        def excess(r):
            x = lam * r
            matern = x ** nu * special.kv(nu, x) * 2.0 ** (1.0 - nu) / special.gamma(nu)
            return ((self.std ** 2 + p0) * matern - p0) / self.std ** 2 - _E

        try:
            return optimize.brentq(excess, 1e-9 / lam, 0.5, xtol=1e-12)
        except ValueError:  # no crossing within half the square: no e-folding length to report
            return math.nan

    def describe(self) -> dict:
        return {"kappa": self.kappa, "alpha": self.alpha, "std": self.std,
                "channel_correlation": self.channel_correlation, "amplitude": self.amplitude,
                "spectrum": "A (|k|^2 + kappa^2)^(-alpha), k in cycles per unit length",
                "corr_length_continuum": self.corr_length_continuum()}


# ----------------------------------------------------------------------------
# synthesis


def max_shell(resolution: int) -> int:
    """Largest m with m < N/2: K_N is the shells 1 .. max_shell(N)."""
    return (int(resolution) - 1) // 2


@lru_cache(maxsize=None)
def shell_frequencies(m: int) -> np.ndarray:
    """The 4m half-plane frequencies (ky, kx) with max(|ky|, |kx|) = m, in (kx, ky) order (read-only)."""
    k = np.arange(-m, m + 1)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    keep = (np.maximum(np.abs(ky), np.abs(kx)) == m) & ((kx > 0) | ((kx == 0) & (ky > 0)))
    ky, kx = ky[keep], kx[keep]
    order = np.lexsort((ky, kx))
    out = np.stack([ky[order], kx[order]], axis=1)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=64)
def _frequencies(resolution: int) -> np.ndarray:
    shells = [shell_frequencies(m) for m in range(1, max_shell(resolution) + 1)]
    out = np.concatenate(shells) if shells else np.zeros((0, 2), dtype=int)
    out.flags.writeable = False
    return out


def coefficients(seed: int, index: int, resolution: int) -> np.ndarray:
    """Unit-variance complex normals z (F x 3) for the half-plane frequencies of K_N, shell by shell.

    Row f belongs to `_frequencies(N)[f]`; the rows of shell m are the same for every N
    that contains it.  c_k = sqrt(P(k)) L z_k.
    """
    parts = []
    for m in range(1, max_shell(resolution) + 1):
        z = np.random.default_rng([seed, index, m]).standard_normal((4 * m, _CHANNELS, 2))
        parts.append((z[..., 0] + 1j * z[..., 1]) * math.sqrt(0.5))
    return np.concatenate(parts) if parts else np.zeros((0, _CHANNELS), dtype=np.complex128)


def synthesise(z: np.ndarray, spectrum: GRFSpectrum, resolution: int) -> np.ndarray:
    """Fields (B x N x N x 3 float64) at pixel centres from unit normals z (B x F x 3) over K_N."""
    n = int(resolution)
    freqs = _frequencies(n)
    ky, kx = freqs[:, 0], freqs[:, 1]
    amp = np.sqrt(spectrum.power(ky.astype(float) ** 2 + kx.astype(float) ** 2))
    # Pixel-centre sampling: f(x_j) = sum_k c_k e^{i pi (ky + kx)/N} e^{2 pi i k.j/N}; irfft2 divides by N^2.
    weight = amp * np.exp(1j * math.pi * (ky + kx) / n) * n * n
    c = np.einsum("bfc,dc->bdf", z, spectrum.channel_mixing) * weight  # B x 3 x F
    half = np.zeros((z.shape[0], _CHANNELS, n, n // 2 + 1), dtype=np.complex128)
    half[:, :, ky % n, kx] = c
    # The kx = 0 column holds both k and -k: store the conjugate explicitly so the
    # inverse transform sees an exactly Hermitian column.
    col0 = kx == 0
    half[:, :, (-ky[col0]) % n, 0] = np.conj(c[:, :, col0])
    fields = np.fft.irfft2(half, s=(n, n), axes=(-2, -1))
    return np.ascontiguousarray(fields.transpose(0, 2, 3, 1))


def to_uint8(fields: np.ndarray) -> np.ndarray:
    """The fixed map: u = clip(rint(127.5 + f * 127.5/4.5), 0, 255)."""
    return np.clip(np.rint(UINT8_OFFSET + UINT8_SCALE * np.asarray(fields)), 0, 255).astype(np.uint8)


def from_uint8(images: np.ndarray) -> np.ndarray:
    """The inverse map: field values (float64) of uint8 images."""
    return (np.asarray(images, dtype=np.float64) - UINT8_OFFSET) / UINT8_SCALE


def fourier_resample(fields: np.ndarray, resolution: int) -> np.ndarray:
    """Band-limited resampling of periodic NHWC fields sampled at pixel centres to `resolution` px.

    The continuous coefficients c_k are read off the input (fft2 / N^2 with the
    half-pixel phase undone), truncated to the frequencies both sizes represent
    (|k| < min(N_in, N_out)/2 per axis: Nyquist rows and columns are dropped) and
    resampled at the output's pixel centres.  Exact (to round-off) on grf images.
    """
    x = np.asarray(fields, dtype=np.float64)
    n_in, n_out = x.shape[1], int(resolution)
    kin = np.rint(np.fft.fftfreq(n_in) * n_in).astype(int)
    spec = np.fft.fft2(x, axes=(1, 2)) / n_in ** 2
    spec *= np.exp(-1j * math.pi * (kin[:, None] + kin[None, :]) / n_in)[None, :, :, None]
    m = max_shell(min(n_in, n_out))
    k = np.arange(-m, m + 1)
    out = np.zeros((x.shape[0], n_out, n_out, x.shape[3]), dtype=np.complex128)
    phase = np.exp(1j * math.pi * (k[:, None] + k[None, :]) / n_out)[None, :, :, None]
    out[:, (k % n_out)[:, None], (k % n_out)[None, :]] = spec[:, (k % n_in)[:, None], (k % n_in)[None, :]] * phase
    return np.fft.ifft2(out * n_out ** 2, axes=(1, 2)).real


class GRF:
    """Gaussian random fields on the unit square: image i is one continuous field at every resolution."""

    name = "grf"
    synthesis = "grf-shell-seeded-centre-sampled-v1"  # bump when the pixels change: it keys caches

    def __init__(self, size: int = 10000, seed: int = 0, kappa: float = 2.0, alpha: float = 2.0,
                 std: float = 1.0, channel_correlation: float = 0.0):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise BenchError(f"grf size must be a positive integer, got {size!r}; set size to e.g. 10000")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise BenchError(f"grf seed must be a non-negative integer, got {seed!r}; set seed to e.g. 0")
        self.size = int(size)
        self.seed = int(seed)
        self.spectrum = GRFSpectrum(kappa, alpha, std, channel_correlation)

    def __len__(self) -> int:
        return self.size

    def validate(self, resolutions: Sequence[int] | None = None) -> dict:
        """Raise BenchError unless the field shows at every resolution the suite reads: at N px the
        image holds only the frequencies of K_N, and with a high knee (kappa) or a shallow spectrum
        (alpha near 1) most of the variance lies above them, leaving nearly constant images."""
        sp = self.spectrum
        for n in sorted(set(resolutions or [])):
            shown = sp.std_at(n)
            if shown < MIN_SHOWN_STD:
                raise BenchError(f"grf dataset at {n} px: the field's standard deviation there is {shown:.4g} "
                                 f"(std {sp.std:g} of the whole field; kappa {sp.kappa:g}, alpha {sp.alpha:g} put "
                                 f"the rest above the frequencies {n} px can show), under {MIN_SHOWN_STD}: the images "
                                 "would be nearly constant; lower kappa, raise std or alpha, or use larger "
                                 "resolutions")
        return {"count": self.size, "resolutions": sorted(set(resolutions or []))}

    def fields(self, indices: Sequence[int], resolution: int) -> np.ndarray:
        """Field values (NxHxWx3 float64) before the uint8 map: what the metric is defined on."""
        resolution = check_resolution(resolution)
        indices = [check_index(i, self.size, self.name) for i in indices]
        out = np.empty((len(indices), resolution, resolution, _CHANNELS), dtype=np.float64)
        step = max(1, _SYNTH_CHUNK_PIXELS // (resolution * resolution))
        for start in range(0, len(indices), step):
            chunk = indices[start:start + step]
            z = np.stack([coefficients(self.seed, i, resolution) for i in chunk])
            out[start:start + len(chunk)] = synthesise(z, self.spectrum, resolution)
        return out

    def images(self, indices: Sequence[int], resolution: int) -> np.ndarray:
        return to_uint8(self.fields(indices, resolution))

    def image(self, i: int, resolution: int) -> np.ndarray:
        return self.images([i], resolution)[0]

    def exact_scores(self, images: np.ndarray) -> dict:
        """The `grf-spectrum` metric of one resolution's samples against this field's exact answer
        (what `bench run` hands the metric table as its exact-answer scorer)."""
        return grf_spectrum_metric(images, self)

    def describe(self) -> dict:
        return {"kind": self.name, "size": self.size, "seed": self.seed, "synthesis": self.synthesis,
                **self.spectrum.describe(),
                "uint8_map": f"clip(rint({UINT8_OFFSET} + f * {UINT8_SCALE:.6g}), 0, 255)",
                "sampling": "pixel centres; frequencies |ky|, |kx| < N/2 (even N: Nyquist row/column zero)"}


# ----------------------------------------------------------------------------
# the reference metric


def _as_fields(images: np.ndarray) -> tuple[np.ndarray, float]:
    """(field values, quantisation variance per pixel): uint8 goes through the inverse map."""
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[3] != _CHANNELS or arr.shape[1] != arr.shape[2]:
        raise BenchError(f"the grf metric needs square NxHxWx3 images, got shape {arr.shape}; "
                         "pass one resolution's samples at a time")
    if arr.shape[0] < 1 or arr.shape[1] < 8:
        raise BenchError(f"the grf metric needs at least one image of at least 8 px, got shape {arr.shape}; "
                         "pass the samples of one resolution")
    if arr.dtype == np.uint8:
        return from_uint8(arr), QUANT_VARIANCE
    if not np.issubdtype(arr.dtype, np.floating):
        raise BenchError(f"the grf metric takes uint8 images or float field values, got {arr.dtype}; "
                         "convert the samples to uint8")
    return arr.astype(np.float64, copy=False), 0.0


@lru_cache(maxsize=64)
def _grid(resolution: int):
    """On the fft2 grid: integer frequencies ky, kx, the mask of K_N, each mode's radial bin (0 = unused), bins."""
    n = resolution
    k = np.rint(np.fft.fftfreq(n) * n).astype(int)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    inside = np.maximum(np.abs(ky), np.abs(kx)) < n / 2  # K_N: Nyquist row/column out
    radial = np.rint(np.sqrt(ky ** 2 + kx ** 2)).astype(int)
    nbins = max_shell(n)
    bins = np.where(inside & (radial >= 1) & (radial <= nbins), radial, 0)
    for a in (ky, kx, inside, bins):
        a.flags.writeable = False
    return ky, kx, inside, bins, nbins


def mode_power(fields: np.ndarray) -> np.ndarray:
    """Mean |c_k|^2 over images and channels on the fft2 grid: the estimate of E|c_k|^2 (physical units)."""
    n = fields.shape[1]
    out = np.zeros((n, n))
    for start in range(0, fields.shape[0], 256):  # bounds the complex temporaries
        chunk = np.ascontiguousarray(fields[start:start + 256].transpose(0, 3, 1, 2))  # FFT over contiguous axes
        spec = np.fft.fft2(chunk)
        out += (spec.real ** 2 + spec.imag ** 2).sum(axis=(0, 1))
    return out / (fields.shape[0] * fields.shape[3] * float(n) ** 4)


def _axis_correlation_basis(resolution: int, lags: np.ndarray) -> np.ndarray:
    """a_k(j) = (cos(2 pi ky j/N) + cos(2 pi kx j/N))/2 on the fft2 grid, for each lag j: (J x N x N)."""
    ky, kx, *_ = _grid(resolution)
    t = 2.0 * math.pi * lags[:, None, None] / resolution
    return 0.5 * (np.cos(t * ky[None]) + np.cos(t * kx[None]))


def _crossing(power: np.ndarray, resolution: int) -> tuple[float, int, np.ndarray]:
    """(lag in px where the axis correlation first reaches 1/e, the lag index j after it, rho at all lags)."""
    lags = np.arange(resolution // 2 + 1)
    cov = np.fft.ifft2(power).real * resolution ** 2  # C(dy, dx) = sum_k P_k cos(2 pi k.d / N)
    c = 0.5 * (cov[0, lags] + cov[lags, 0])
    if not c[0] > 0:  # no power at all (e.g. constant images): no correlation to measure
        return math.nan, -1, np.full_like(c, math.nan)
    rho = c / c[0]
    below = np.nonzero(rho <= _E)[0]
    if below.size == 0:
        return math.nan, -1, rho
    j = int(below[0])
    return j - 1 + (rho[j - 1] - _E) / (rho[j - 1] - rho[j]), j, rho


def expected_mode_power(spectrum: GRFSpectrum, resolution: int) -> np.ndarray:
    """P(k) on the fft2 grid over K_N, zero elsewhere (DC, Nyquist row/column)."""
    ky, kx, inside, *_ = _grid(resolution)
    return np.where(inside, spectrum.power(ky.astype(float) ** 2 + kx.astype(float) ** 2), 0.0)


def radial_spectrum(images: np.ndarray, spectrum) -> dict:
    """Measured and expected radially binned power per mode, bin by bin (arrays), in physical units.

    Keys: k (cycles per unit length, bins 1 .. (N-1)//2), measured, expected (P + the
    quantisation floor for uint8 input), dof (nu per bin), floor, n, resolution.
    """
    return _radial(_measure(images), getattr(spectrum, "spectrum", spectrum))


def _measure(images: np.ndarray) -> tuple[np.ndarray, float, int, int]:
    """(mode power, quantisation variance per pixel, number of images, resolution)."""
    fields, qvar = _as_fields(images)
    return mode_power(fields), qvar, fields.shape[0], fields.shape[1]


def _radial(measurement, spectrum: GRFSpectrum) -> dict:
    measured_modes, qvar, n_img, res = measurement
    *_, bins, nbins = _grid(res)
    floor = qvar / res ** 2  # white rounding noise: variance q per pixel -> q/N^2 per mode
    expected_modes = np.where(bins > 0, expected_mode_power(spectrum, res) + floor, 0.0)
    flat = bins.ravel()
    counts = np.bincount(flat, minlength=nbins + 1)[1:]
    sums_e = np.bincount(flat, weights=expected_modes.ravel(), minlength=nbins + 1)[1:]
    sums_e2 = np.bincount(flat, weights=expected_modes.ravel() ** 2, minlength=nbins + 1)[1:]
    sums_m = np.bincount(flat, weights=measured_modes.ravel(), minlength=nbins + 1)[1:]
    # The bin holds k and -k (the same variable); over all modes (sum E)^2 / sum E^2 is
    # twice the half-plane ratio, so nu = n c (sum E)^2 / sum E^2 over all of them.
    dof = n_img * spectrum.effective_channels * sums_e ** 2 / sums_e2
    return {"resolution": res, "n": n_img, "k": np.arange(1, nbins + 1, dtype=float),
            "measured": sums_m / counts, "expected": sums_e / counts, "dof": dof, "floor": floor,
            "modes": counts}


def _log_chi2_moments(dof: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of 10 log10(chi^2_nu / nu) in dB."""
    db = 10.0 / math.log(10.0)
    mean = db * (special.digamma(dof / 2) - np.log(dof / 2))
    var = db ** 2 * special.polygamma(1, dof / 2)
    return mean, var


def lsd_tolerance(dof: np.ndarray, false_alarm: float = DEFAULT_FALSE_ALARM) -> float:
    """The (1 - false_alarm) quantile of the LSD of real samples with these per-bin dof.

    Bin errors d_b are independent (disjoint modes) with the moments of a log chi^2;
    sum d_b^2 is matched in mean and variance to a scaled chi^2 (Satterthwaite).
    """
    mu, var = _log_chi2_moments(np.asarray(dof, dtype=float))
    m = float(np.sum(var + mu ** 2))
    v = float(np.sum(2 * var ** 2 + 4 * mu ** 2 * var))
    nu = 2 * m * m / v
    return math.sqrt(m / nu * stats.chi2.ppf(1 - false_alarm, nu) / len(dof))


def corr_length(images: np.ndarray, spectrum,
                false_alarm: float = DEFAULT_FALSE_ALARM) -> dict:
    """Measured and expected 1/e correlation length (units of the square) with a tolerance.

    The measured mode power, minus the quantisation floor, over K_N only (the data
    have no power at DC or at Nyquist), gives the correlation along the two axes.
    The tolerance is z_(1 - p/2) times the delta-method standard error through the
    per-mode variances E_k^2 / (n c).
    """
    return _corr_length(_measure(images), getattr(spectrum, "spectrum", spectrum), false_alarm)


def _corr_length(measurement, spectrum: GRFSpectrum, false_alarm: float) -> dict:
    power, qvar, n_img, res = measurement
    _, _, inside, *_ = _grid(res)
    floor = qvar / res ** 2
    nonzero = inside.copy()
    nonzero[0, 0] = False
    measured = np.where(nonzero, power - floor, 0.0)
    expected = expected_mode_power(spectrum, res)
    r_meas, _, _ = _crossing(measured, res)
    r_exp, j, rho = _crossing(expected, res)
    if j < 1:
        raise BenchError(f"the grf correlation at {res} px does not fall to 1/e within half the image; "
                         "lower the resolution or raise kappa")
    # d r / d P_k through the two lags the crossing interpolates between.
    a = _axis_correlation_basis(res, np.array([j - 1, j]))
    c0 = expected.sum()
    drho = (a - rho[[j - 1, j]][:, None, None]) / c0  # d rho_j / d P_k
    gap = rho[j - 1] - rho[j]
    grad = ((_E - rho[j]) * drho[0] + (rho[j - 1] - _E) * drho[1]) / gap ** 2
    var_modes = np.where(nonzero, (expected + floor) ** 2, 0.0) / (n_img * spectrum.effective_channels)
    # k and -k are one variable: its gradient counts twice, so Var = 2 sum_all grad^2 var.
    se = math.sqrt(2.0 * float(np.sum(grad ** 2 * var_modes))) / res
    z = stats.norm.ppf(1 - false_alarm / 2)
    return {"corr_length": float(r_meas / res), "corr_length_expected": float(r_exp / res),
            "corr_length_tol": float(z * se), "corr_length_se": se,
            "corr_length_continuum": spectrum.corr_length_continuum()}


def grf_spectrum_metric(images: np.ndarray, spectrum,
                        false_alarm: float = DEFAULT_FALSE_ALARM) -> dict:
    """The `grf-spectrum` metric of one resolution's samples (uint8 NHWC, or float field values).

    `spectrum`: the dataset's GRFSpectrum, or the GRF dataset itself.

    Returns JSON-safe scalars: grf_lsd_db and its tolerance grf_lsd_tol_db, grf_corr_length,
    grf_corr_length_expected, grf_corr_length_tol, grf_corr_length_continuum, and n, resolution.
    Real samples stay within both tolerances with probability ~1 - false_alarm each.
    """
    spectrum = getattr(spectrum, "spectrum", spectrum)  # a GRF dataset or its GRFSpectrum
    measurement = _measure(images)  # one FFT pass serves both numbers
    spec = _radial(measurement, spectrum)
    # A bin with no power at all (tiled images leave every odd bin empty) would be -inf dB;
    # clipping the error at +-60 dB keeps the number finite and still enormous.
    ratio = np.clip(spec["measured"] / spec["expected"], 1e-6, 1e6)
    err_db = 10.0 * np.log10(ratio)
    cl = _corr_length(measurement, spectrum, false_alarm)
    return {"resolution": spec["resolution"], "n": spec["n"],
            "grf_lsd_db": float(np.sqrt(np.mean(err_db ** 2))),
            "grf_lsd_tol_db": lsd_tolerance(spec["dof"], false_alarm),
            "grf_corr_length": cl["corr_length"], "grf_corr_length_expected": cl["corr_length_expected"],
            "grf_corr_length_tol": cl["corr_length_tol"], "grf_corr_length_continuum": cl["corr_length_continuum"]}


def options_from_config(dataset_config) -> dict:
    """build_dataset keyword arguments from a suite's `dataset:` section (kind: grf); unset keys keep GRF's defaults."""
    d = dataset_config
    options = {"size": d.size or 10000, "seed": d.seed}
    for key in ("kappa", "alpha", "std", "channel_correlation"):
        if getattr(d, key) is not None:
            options[key] = getattr(d, key)
    return options
