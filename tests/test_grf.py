"""Tests for bench/grf.py: one continuous field at every resolution, and a spectrum metric whose
tolerances hold for real samples and that separates the physical from the pixel hypothesis."""

import math

import numpy as np
import pytest

from bench.config import parse_suite
from bench.datasets import DATASETS, build_dataset
from bench.errors import BenchError
from bench.grf import (
    GRF,
    QUANT_VARIANCE,
    UINT8_SCALE,
    GRFSpectrum,
    _crossing,
    _lattice_sum,
    _log_chi2_moments,
    _measure,
    _radial,
    _corr_length,
    coefficients,
    expected_mode_power,
    fourier_resample,
    from_uint8,
    grf_spectrum_metric,
    options_from_config,
    to_uint8,
)

TRAIN = 32  # the training resolution of the physical-vs-pixel question


def pixel_spectrum(spectrum: GRFSpectrum, resolution: int, train: int = TRAIN) -> GRFSpectrum:
    """What a model that keeps the PIXEL statistics of `train` px data generates at `resolution`.

    Its spectrum in cycles per pixel is the training data's: P'(k) = s^-2 P(k/s), s = N/train,
    i.e. kappa' = s kappa and A' = A s^(2 alpha - 2) (the per-pixel variance is kept).
    """
    s = resolution / train
    amplitude = spectrum.amplitude * s ** (2 * spectrum.alpha - 2)
    kappa = spectrum.kappa * s
    std = math.sqrt(amplitude * _lattice_sum(kappa, spectrum.alpha))
    return GRFSpectrum(kappa, spectrum.alpha, std, spectrum.channel_correlation)


def with_spectrum(spectrum: GRFSpectrum, seed: int) -> GRF:
    ds = GRF(size=100000, seed=seed)
    ds.spectrum = spectrum
    return ds


def assert_one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


def margins(m: dict) -> tuple[float, float]:
    """(LSD / its tolerance, |corr length - expected| / its tolerance): > 1 is flagged."""
    return (m["grf_lsd_db"] / m["grf_lsd_tol_db"],
            abs(m["grf_corr_length"] - m["grf_corr_length_expected"]) / m["grf_corr_length_tol"])


# --- the field ---------------------------------------------------------------


def test_same_field_at_every_resolution():
    # The acceptance test: 64 px truncated in Fourier space to 16 px is the 16 px field.
    ds = GRF(size=100, seed=3)
    f16, f64 = ds.fields(range(8), 16), ds.fields(range(8), 64)
    np.testing.assert_allclose(fourier_resample(f64, 16), f16, rtol=0, atol=1e-6)
    # odd sizes have no Nyquist bin and truncate the same way; upsampling adds nothing
    np.testing.assert_allclose(fourier_resample(f64, 17), ds.fields(range(8), 17), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fourier_resample(f16, 64), fourier_resample(fourier_resample(f64, 16), 64),
                               rtol=0, atol=1e-6)
    # and the fields differ between resolutions: 64 px carries detail that 16 px cannot
    assert np.abs(fourier_resample(f16, 64) - f64).std() > 0.05


def test_coefficients_do_not_depend_on_resolution():
    small, large = coefficients(0, 5, 16), coefficients(0, 5, 96)
    assert small.shape == (4 * (1 + 7) * 7 // 2, 3)  # shells 1..7 of 4m frequencies each
    np.testing.assert_array_equal(large[:len(small)], small)


def test_deterministic_batch_independent_and_seeded():
    ds = GRF(size=50, seed=0)
    first = ds.image(3, 24)
    assert first.shape == (24, 24, 3) and first.dtype == np.uint8
    assert first.tobytes() == GRF(size=50, seed=0).image(3, 24).tobytes()
    batch = ds.images([5, 3, 5, 49], 24)
    np.testing.assert_array_equal(batch, np.stack([ds.image(i, 24) for i in (5, 3, 5, 49)]))
    assert np.abs(first.astype(float) - ds.image(4, 24)).mean() > 10
    assert np.abs(first.astype(float) - GRF(size=50, seed=1).image(3, 24)).mean() > 10


def test_uint8_map_and_clipping():
    ds = GRF(size=1000)
    fields = ds.fields(range(200), 64)
    images = to_uint8(fields)
    inner = (images > 0) & (images < 255)
    assert np.abs(from_uint8(images) - fields)[inner].max() <= 0.5 / UINT8_SCALE + 1e-12
    # 2 Phi(-4.48) = 7e-6 per value for a Gaussian of std 1; 200 images: 5 of 2.5 million measured
    assert np.mean(~inner) < 2e-5
    assert 0.95 < fields.std() < 1.05


def test_amplitude_and_continuum_correlation_length():
    s = GRFSpectrum()
    k = np.arange(-600, 601)
    total = s.power(k[:, None] ** 2 + k[None, :] ** 2).sum()
    assert abs(total - 1.0) < 2e-5  # std = 1; the tail beyond |k| = 600 is ~ pi A / 600^2 = 1.2e-5
    # the closed form (Matern minus the missing k = 0 term) is the large-N limit of the estimator
    r, _, _ = _crossing(expected_mode_power(s, 512), 512)
    assert abs(r / 512 - s.corr_length_continuum()) < 2e-4
    assert abs(s.corr_length_continuum() - 0.1188) < 1e-4  # the default stated in the docstring
    assert GRFSpectrum(kappa=4.0).corr_length_continuum() < 0.6 * s.corr_length_continuum()


def test_channel_correlation():
    ds = GRF(size=1000, channel_correlation=0.6)
    f = ds.fields(range(100), 32).reshape(-1, 3)
    c = np.corrcoef(f.T)
    assert np.allclose(c[np.triu_indices(3, 1)], 0.6, atol=0.05)
    # the tolerances use the effective number of channels, 3 / (1 + 2 rho^2)
    lsd, corr = margins(grf_spectrum_metric(ds.images(range(400), 32), ds))
    assert lsd < 1 and corr < 1


# --- the metric --------------------------------------------------------------


@pytest.mark.parametrize("resolution, n", [(16, 1000), (32, 1000), (64, 1000), (96, 1000)])
def test_real_samples_match_the_analytic_spectrum(resolution, n):
    ds = GRF(size=100000, seed=0)
    m = grf_spectrum_metric(ds.images(range(n), resolution), ds.spectrum)
    assert m["resolution"] == resolution and m["n"] == n
    lsd, corr = margins(m)
    # measured (1,000 samples each): LSD 0.50, 0.61, 0.67, 0.69 x its tolerance; corr length within 0.02 x
    assert lsd < 1 and corr < 1, m
    # the expected length is the estimator on the analytic spectrum at this N: the
    # truncated field is smoother (longer) than the continuum, more so at 16 px
    assert m["grf_corr_length_expected"] > m["grf_corr_length_continuum"]
    assert abs(m["grf_corr_length_expected"] - m["grf_corr_length_continuum"]) < 0.005


def test_float_fields_and_uint8_score_alike():
    ds = GRF(size=1000, seed=2)
    fields = ds.fields(range(300), 48)
    a, b = grf_spectrum_metric(fields, ds), grf_spectrum_metric(to_uint8(fields), ds)
    assert a["grf_lsd_db"] < a["grf_lsd_tol_db"] and b["grf_lsd_db"] < b["grf_lsd_tol_db"]
    assert abs(a["grf_corr_length"] - b["grf_corr_length"]) < 0.1 * a["grf_corr_length_tol"]
    # The quantisation floor matters at 96 px: there the top bin's power is only ~25x the
    # rounding noise.  Read as floats (no floor), uint8 samples fail: measured LSD 0.070 dB
    # against a tolerance of 0.049, and 0.032 with the floor.
    images = ds.images(range(200), 96)
    assert _radial(_measure(images), ds.spectrum)["floor"] == QUANT_VARIANCE / 96 ** 2
    assert margins(grf_spectrum_metric(images, ds))[0] < 1
    assert margins(grf_spectrum_metric(from_uint8(images), ds))[0] > 1.2


@pytest.mark.parametrize("resolution", [16, 32, 64, 96])
def test_halved_correlation_length_is_flagged(resolution):
    # kappa doubled at the same std: the same contrast, half the correlation length
    ds = GRF(size=1000)
    short = GRF(size=1000, seed=1, kappa=2 * ds.spectrum.kappa)
    m = grf_spectrum_metric(short.images(range(200), resolution), ds)
    lsd, corr = margins(m)
    # measured with 200 samples: LSD 25-105x its tolerance, corr length 19-21x
    assert lsd > 10 and corr > 10, m
    assert m["grf_corr_length"] < 0.7 * m["grf_corr_length_expected"]


@pytest.mark.parametrize("resolution", [64, 96])
def test_metric_tells_physical_from_pixel_behaviour(resolution):
    """Above a 32 px training resolution, keep the correlation length in units of the
    square (physical) or in pixels (pixel)?  Real fields at N are the physical answer;
    fields with the 32 px data's spectrum per pixel, and 32 px fields tiled, are the
    pixel answer; 32 px fields Fourier-upsampled keep the physical length but lack detail."""
    n = 200
    ds = GRF(size=100000, seed=0)
    physical = grf_spectrum_metric(ds.images(range(n), resolution), ds)
    at_train = grf_spectrum_metric(ds.images(range(n), TRAIN), ds)
    pixel = grf_spectrum_metric(with_spectrum(pixel_spectrum(ds.spectrum, resolution), 7).images(range(n), resolution), ds)
    reps = resolution // TRAIN
    tiled = grf_spectrum_metric(np.tile(ds.images(range(n), TRAIN), (1, reps, reps, 1)), ds)
    upsampled = grf_spectrum_metric(to_uint8(fourier_resample(ds.fields(range(n), TRAIN), resolution)), ds)

    assert max(margins(physical)) < 1
    for m in (pixel, tiled):
        lsd, corr = margins(m)
        assert lsd > 10 and corr > 10, m  # measured: LSD 86-470x, corr length 20-28x the tolerance
        # the pixel hypothesis keeps the 32 px correlation length in pixels
        in_pixels = m["grf_corr_length"] * resolution
        assert in_pixels == pytest.approx(at_train["grf_corr_length"] * TRAIN, rel=0.15)
    # the two hypotheses are far apart in units of their spread
    gap = physical["grf_corr_length"] - pixel["grf_corr_length"]
    assert gap > 10 * physical["grf_corr_length_tol"]
    # upsampling keeps the physical correlation length (within the tolerance, give or take
    # the 32 px truncation) but the spectrum above 16 cycles is missing: LSD flags it
    assert abs(upsampled["grf_corr_length"] - at_train["grf_corr_length_expected"]) < upsampled["grf_corr_length_tol"]
    assert margins(upsampled)[0] > 10


def test_tolerances_are_calibrated():
    """Many independent sets of real samples: the spread of each bin's error and of the
    correlation length is what the tolerances assume (chi^2 with the stated dof)."""
    ds = GRF(size=100000, seed=5)
    errs, lengths, ses, lsds = [], [], [], []
    for s in range(60):
        images = ds.images(range(s * 40, (s + 1) * 40), 16)
        measurement = _measure(images)
        spec = _radial(measurement, ds.spectrum)
        errs.append(10 * np.log10(spec["measured"] / spec["expected"]))
        cl = _corr_length(measurement, ds.spectrum, 1e-3)
        lengths.append(cl["corr_length"])
        ses.append(cl["corr_length_se"])
        lsds.append(grf_spectrum_metric(images, ds)["grf_lsd_db"])
    _, var = _log_chi2_moments(spec["dof"])
    ratio = np.std(errs, axis=0) / np.sqrt(var)
    assert np.all((ratio > 0.7) & (ratio < 1.3)), ratio  # 60 sets: ~9% sampling error per ratio
    assert 0.7 < np.std(lengths) / np.mean(ses) < 1.3
    assert max(lsds) < grf_spectrum_metric(images, ds)["grf_lsd_tol_db"]


# --- errors, registry, config -------------------------------------------------


@pytest.mark.parametrize("kwargs, needle", [
    ({"kappa": 0}, "kappa must be in [0.001, 256]"), ({"kappa": 1e20}, "kappa must be in [0.001, 256]"),
    ({"alpha": 1.0}, "alpha must be in (1, 10]"),
    ({"std": 2.0}, "std must be in [0.1, 1.5]"), ({"std": 1e-300}, "std must be in [0.1, 1.5]"), ({"channel_correlation": 1.0}, "channel_correlation must be in"),
    ({"kappa": "x"}, "kappa must be a number"), ({"size": 0}, "size must be a positive integer"),
    ({"seed": -1}, "seed must be a non-negative integer")])
def test_bad_parameters_are_one_line(kwargs, needle):
    with pytest.raises(BenchError) as err:
        GRF(**kwargs)
    assert needle in assert_one_line(err)


def test_metric_rejects_bad_input():
    ds = GRF(size=10)
    for bad in (np.zeros((2, 16, 8, 3), np.uint8), np.zeros((2, 16, 16), np.uint8), np.zeros((2, 16, 16, 3), int)):
        with pytest.raises(BenchError) as err:
            grf_spectrum_metric(bad, ds)
        assert_one_line(err)
    # blank samples are scored, not refused: the error per bin is capped at 60 dB and
    # there is no correlation length to measure
    blank = grf_spectrum_metric(np.full((4, 32, 32, 3), 128, np.uint8), ds)
    assert blank["grf_lsd_db"] == pytest.approx(60.0) and math.isnan(blank["grf_corr_length"])


def test_registered_and_built_from_a_suite():
    assert DATASETS["grf"] is GRF
    base = {"name": "g", "models": [{"name": "b", "adapter": "bilinear", "source": "data", "base_resolution": 16}],
            "sample": {"resolutions": [16, 32], "n": 4}}
    cfg = parse_suite({**base, "dataset": {"kind": "grf", "size": 20, "seed": 4, "kappa": 3, "std": 0.8}})
    ds = build_dataset(cfg.dataset.kind, **options_from_config(cfg.dataset))
    assert (len(ds), ds.seed, ds.spectrum.kappa, ds.spectrum.alpha, ds.spectrum.std) == (20, 4, 3.0, 2.0, 0.8)
    assert ds.images([0, 19], 16).shape == (2, 16, 16, 3)
    assert ds.describe()["corr_length_continuum"] == pytest.approx(ds.spectrum.corr_length_continuum())
    for dataset, needle in [({"kind": "grf", "kappa": -1}, "dataset.kappa"),
                            ({"kind": "grf", "alpha": 0.5}, "dataset.alpha"),
                            ({"kind": "grf", "path": "/x"}, "remove `path`"),
                            ({"kind": "toyfaces", "kappa": 2}, "only for kind: grf")]:
        with pytest.raises(BenchError, match=needle) as err:
            parse_suite({**base, "dataset": dataset})
        assert_one_line(err)
    with pytest.raises(BenchError) as err:
        build_dataset("grf", path="/x")
    assert "no option(s) path" in assert_one_line(err)


# ---------------------------------------------------------------------------- in the harness


def test_grf_spectrum_is_in_the_one_metric_table_and_scores_through_it():
    from bench.metrics import COLUMNS, COMPANIONS, METRICS, MetricOptions, Pixels, SetStats
    from bench.scoring import score

    ds = GRF(64)
    m = METRICS["grf-spectrum"]
    assert m.exact and m.needs == "pixels" and not COLUMNS["grf_corr_length"].ranked
    images = ds.images(range(40), 32)
    direct = grf_spectrum_metric(images, ds)
    stats = SetStats(pixels=Pixels(images))
    out = score(["grf-spectrum"], stats, stats, MetricOptions(exact=ds.exact_scores))
    assert set(out) == {c.name for c in m.columns + m.companions} and set(out) <= set(COLUMNS) | set(COMPANIONS)
    assert all(out[k] == pytest.approx(direct[k]) for k in out)
    with pytest.raises(BenchError, match="exact answer") as err:
        score(["grf-spectrum"], stats, stats, MetricOptions())
    assert_one_line(err)


def test_a_suite_asks_for_it_only_on_a_grf_dataset():
    from bench.plan import plan_suite

    base = {"name": "g", "models": [{"name": "b", "adapter": "bilinear", "source": "data", "base_resolution": 16}],
            "sample": {"resolutions": [16, 32], "n": 4}, "metrics": {"metrics": ["grf-spectrum"]}}
    plan = plan_suite(parse_suite({**base, "dataset": {"kind": "grf", "size": 20}}))  # no fid needed
    assert plan.dataset.exact_scores is not None
    with pytest.raises(BenchError, match="does not have; use kind: grf") as err:
        plan_suite(parse_suite({**base, "dataset": {"kind": "toyfaces", "size": 20}}))
    assert_one_line(err)
    with pytest.raises(BenchError, match="must include fid"):
        parse_suite({**base, "dataset": {"kind": "grf"}, "metrics": {"metrics": ["kid"]}})


def test_the_grf_suite_plans_every_model_once_per_training_seed():
    from pathlib import Path

    import yaml

    from bench.plan import plan_suite

    cfg = parse_suite(yaml.safe_load((Path(__file__).parent.parent / "suites" / "grf_zero_shot.yaml").read_text()))
    plan = plan_suite(cfg)
    assert cfg.train_seeds == [0, 1, 2] and len(plan.models) == 3 * 3
    assert [m.key for m in plan.models[:3]] == ["unet-multires@t0", "unet-multires@t1", "unet-multires@t2"]
    assert {m.role for m in plan.models} == {"spatial", "spectral"}
    assert {m.train.seed for m in plan.models if m.name == "dfu"} == {0, 1, 2}
    # every training seed starts from other weights, each as the suite with `seed: T` would
    first = [next(iter(m.adapter.denoiser().parameters())).detach().clone() for m in plan.models[:2]]
    assert not np.allclose(first[0].numpy(), first[1].numpy())
    single = plan_suite(parse_suite({**yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))),
                                     "seeds": None, "seed": 1}))
    assert np.allclose(next(iter(single.model("unet-multires").adapter.denoiser().parameters())).detach().numpy(),
                       first[1].numpy())


def test_the_schemas_smallest_std_passes_validation_at_every_size():
    """std 0.1 (MIN_STD, the schema's bound) shows a little less at any N (no k = 0 or beyond-Nyquist
    terms): validation must not refuse what the schema accepts; a field hidden above 16 px's
    frequencies is refused."""
    from bench.errors import BenchError
    from bench.grf import GRF, MIN_STD

    assert GRF(size=4, std=MIN_STD).spectrum.std_at(512) < MIN_STD
    GRF(size=4, std=MIN_STD).validate([16, 512])
    with pytest.raises(BenchError, match="16 px"):
        GRF(size=4, kappa=256.0, alpha=10.0, std=MIN_STD).validate([16])


def test_the_suite_schema_bounds_are_grfs_own():
    """DatasetConfig states grf's kappa and std bounds for one-line pydantic errors; bench/grf.py owns
    them and says why. The two must not drift apart."""
    from bench.config import DatasetConfig
    from bench.grf import MAX_KAPPA, MAX_STD, MIN_KAPPA, MIN_STD

    def bounds(field):
        meta = DatasetConfig.model_fields[field].metadata
        return next(m.ge for m in meta if hasattr(m, "ge")), next(m.le for m in meta if hasattr(m, "le"))

    assert bounds("kappa") == (MIN_KAPPA, MAX_KAPPA)
    assert bounds("std") == (MIN_STD, MAX_STD)
