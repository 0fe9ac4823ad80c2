"""Metrics as pure functions of features/pixels, `bench metrics`, and the feature cache."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench.datasets import ToyFaces
from bench.errors import BenchError
from bench.features import FeatureCache
from bench.metrics import frechet_distance, kid, log_spectral_distance, radial_power_spectrum, random_crops
from bench.results import aggregate, lead_metrics
from bench.tables import markdown_table

FACES = ToyFaces(size=200, seed=0)


def blur(images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_spectral_distance_known_answers():
    real = FACES.images(range(40), 64)
    assert log_spectral_distance(real, real) == 0.0
    blurred = blur(real)
    other = FACES.images(range(40, 80), 64)
    assert log_spectral_distance(blurred, real) > 3 * log_spectral_distance(other, real)
    f, p_real = radial_power_spectrum(real)
    _, p_blur = radial_power_spectrum(blurred)
    assert f[0] > 0 and f[-1] <= 0.5 and len(f) == 32
    assert p_blur[-1] < 0.5 * p_real[-1]  # blurring removes high-frequency power
    with pytest.raises(BenchError):
        log_spectral_distance(real, FACES.images(range(4), 32))


def test_random_crops_same_transform_for_both_sets():
    a = FACES.images(range(5), 64)
    ca, cb = random_crops(a, 32, 3, seed=0), random_crops(a.copy(), 32, 3, seed=0)
    assert ca.shape == (15, 32, 32, 3)
    np.testing.assert_array_equal(ca, cb)
    assert not np.array_equal(ca, random_crops(a, 32, 3, seed=1))
    with pytest.raises(BenchError, match="patch size 48"):
        random_crops(FACES.images(range(2), 32), 48, 1)


def test_kid_and_fid_known_answers():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((300, 64))
    shifted = f + 0.5
    other = rng.standard_normal((300, 64))
    # the unbiased estimator's cross term keeps the diagonal: identical sets score
    # slightly below 0, an independent draw ~0, a shifted set far above
    assert kid(f, f) <= 0
    assert abs(kid(other, f)) < 0.01
    assert kid(shifted, f) > 0.5
    assert frechet_distance(shifted, f) == pytest.approx(64 * 0.25, rel=1e-6)


def test_kid_equals_clean_fid_kernel_distance():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(1)
    f1, f2 = rng.standard_normal((120, 2048)), rng.standard_normal((120, 2048)) * 1.1
    # equal sizes <= 1000: every subset is the whole set, the estimator is deterministic
    assert kid(f1, f2, subset_seed=5) == pytest.approx(kernel_distance(f1, f2), abs=1e-6)


def test_bench_metrics_matches_clean_fid(run_cli, face_folders, tmp_path, monkeypatch):
    from cleanfid import fid as cfid
    from cleanfid.inception_torchscript import InceptionV3W

    from bench.inception import resolve

    a, b = face_folders
    code, out, err = run_cli("metrics", str(a), str(b), "--metrics", "fid,kid", "--json", "--device", "cpu")
    assert code == 0, err
    ours = json.loads(out.strip().splitlines()[-1])
    model = InceptionV3W(str(resolve()[0].parent), download=False).eval()
    kw = dict(model=model, num_workers=0, device=torch.device("cpu"), mode="clean", verbose=False)
    fa, fb = cfid.get_folder_features(str(a), **kw), cfid.get_folder_features(str(b), **kw)
    theirs = cfid.compute_fid(str(a), str(b), mode="clean", custom_feat_extractor=model,
                              device=torch.device("cpu"), num_workers=0, verbose=False)
    assert ours["fid"] == pytest.approx(theirs, abs=1e-3)
    assert ours["kid"] == pytest.approx(cfid.kernel_distance(fa, fb), abs=1e-6)
    # the same folder against itself
    code, out, _ = run_cli("metrics", str(a), str(a), "--metrics", "fid,kid,spectral", "--json", "--device", "cpu")
    same = json.loads(out.strip().splitlines()[-1])
    assert abs(same["fid"]) < 1e-3 and same["kid"] <= 1e-9 and same["spectral_lsd"] == 0.0
    assert same["kid"] < ours["kid"]


def test_bench_metrics_mode_keys_the_feature_cache(run_cli, face_folders, tmp_path, monkeypatch):
    """--mode legacy computes its own features (the extractor identity, and so the key, names the
    mode); asked again, it reuses them."""
    monkeypatch.setenv("DFU_BENCH_CACHE", str(tmp_path / "cache"))
    features = tmp_path / "cache" / "features"
    a, b = face_folders

    def metrics(*mode):
        code, out, err = run_cli("metrics", str(a), str(b), "--metrics", "fid,kid", "--json", "--device", "cpu",
                                 *mode)
        assert code == 0, err
        return json.loads(out.strip().splitlines()[-1]), sorted(features.rglob("*.npy"))

    clean, files = metrics()
    assert clean["mode"] == "clean" and len(files) == 2
    legacy, files = metrics("--mode", "legacy")
    assert legacy["mode"] == "legacy" and len(files) == 4  # two more feature sets: nothing shared with clean
    assert abs(legacy["fid"] - clean["fid"]) > 1.0
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again, files = metrics("--mode", "legacy")
    assert again == legacy and {f: f.stat().st_mtime_ns for f in files} == stamps  # read back, not recomputed


def test_bench_metrics_blurred_set_is_worse(run_cli, tmp_path):
    from conftest import write_pngs

    real = FACES.images(range(30), 64)
    write_pngs(tmp_path / "real", real)
    write_pngs(tmp_path / "blur", blur(real))
    np.savez(tmp_path / "real.npz", images=real)
    res = {}
    for name in ("real.npz", "blur"):
        code, out, err = run_cli("metrics", str(tmp_path / name), str(tmp_path / "real"), "--json",
                                 "--metrics", "fid,kid,spectral,patch-fid,patch-kid", "--device", "cpu",
                                 "--patches-per-image", "1")
        assert code == 0, err
        res[name] = json.loads(out.strip().splitlines()[-1])
    for m in ("fid", "kid", "spectral_lsd", "patch_fid", "patch_kid"):
        assert res["blur"][m] > res["real.npz"][m] + 1e-6, m


def test_bench_metrics_bad_input(run_cli, tmp_path, face_folders):
    np.savez(tmp_path / "f.npz", features=np.zeros((5, 2048)))
    code, _, err = run_cli("metrics", str(tmp_path / "f.npz"), str(face_folders[0]), "--metrics", "spectral")
    assert code == 2 and "features only" in err
    code, _, err = run_cli("metrics", str(face_folders[0]), str(face_folders[0]), "--metrics", "fid,is")
    assert code == 2 and "unknown metric" in err


def test_two_feature_sets_need_no_cache(run_cli, tmp_path, monkeypatch):
    """FID and KID of two .npz of features read nothing from the cache and write nothing to it, so an
    unusable cache (a shared read-only one) does not stop them; image sets need it, and are refused."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.npz", features=rng.normal(size=(16, 2048)))
    monkeypatch.setenv("DFU_BENCH_CACHE", "/proc/dfu-bench-cache")
    code, out, err = run_cli("metrics", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--device", "cpu")
    assert code == 0, err
    assert "fid: " in out and "kid: " in out
    np.savez(tmp_path / "c.npz", images=np.zeros((4, 16, 16, 3), np.uint8))
    code, _, err = run_cli("metrics", str(tmp_path / "c.npz"), str(tmp_path / "b.npz"), "--device", "cpu")
    assert code == 2 and "the cache folder ($DFU_BENCH_CACHE)" in err and "writable" in err


def test_a_folder_named_npz_is_read_as_an_image_folder(tmp_path):
    """`bench fid`/`metrics` take a folder as a folder of images whatever its name: x.npz/ is not
    "missing" because it is not a file."""
    from PIL import Image

    from bench.features import load_set

    images = ToyFaces(size=10, seed=0).images(range(3), 16)
    (tmp_path / "set.npz").mkdir()
    for k, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / "set.npz" / f"{k:04d}.png")
    got, feats = load_set(tmp_path / "set.npz")
    assert feats is None and np.array_equal(got, images)


def test_feature_cache_reuses_by_content(tmp_path):
    class Fake:
        identity = "fake"

        def __init__(self):
            self.calls = 0

        def array_features(self, images, desc=""):
            self.calls += 1
            return np.full((len(images), 2048), float(images.mean()))

    ex = Fake()
    cache = FeatureCache(tmp_path, ex)
    imgs = FACES.images(range(4), 16)
    a = cache.features(imgs, "reference", "x")
    assert cache.features(imgs, "reference", "x") is a  # same process: memo, not a new reuse
    assert cache.computed == {"reference": 1} and cache.reused == {}
    later = FeatureCache(tmp_path, ex)  # a later run: read from disk
    b = later.features(imgs.copy(), "reference", "x")
    np.testing.assert_array_equal(a, b)
    assert ex.calls == 1 and later.computed == {} and later.reused == {"reference": 1}
    cache.features(imgs, "reference", "x", "patches:32x4")  # other transform, other key
    imgs2 = imgs.copy()
    imgs2[0, 0, 0, 0] ^= 1
    cache.features(imgs2, "reference", "x")
    assert ex.calls == 3


def test_seed_sets_aggregate_to_mean_std_and_kid_leads_at_small_n():
    rows = [{"model": "dfu", "adapter": "dfu", "train_resolutions": "16/24", "sample_resolution": 32,
             "seed_set": s, "n": 100, "n_ref": 100, "fid": f, "kid": k, "fid_mode": "clean"}
            for s, f, k in ((0, 10.0, 0.01), (1, 12.0, 0.02), (2, 14.0, 0.03))]
    df = pd.DataFrame(rows)
    agg = aggregate(df)
    assert agg.loc[0, "fid"] == pytest.approx(12.0) and agg.loc[0, "fid_std"] == pytest.approx(2.0)
    assert agg.loc[0, "seed_sets"] == 3
    assert lead_metrics(df)[0] == "kid"
    from bench.config import parse_suite
    import yaml
    from pathlib import Path

    cfg = parse_suite(yaml.safe_load((Path(__file__).parent.parent / "suites" / "smoke.yaml").read_text()))
    md = markdown_table(cfg, df)
    assert "12.00 ± 2.00" in md and "biased" in md
    assert md.index("## KID") < md.index("## FID")
    big = df.assign(n=50000)
    assert lead_metrics(big)[0] == "fid"


def test_kid_is_clean_fids_to_the_bit_and_keeps_its_std_over_subsets():
    from cleanfid.fid import kernel_distance

    from bench.metrics import kid_with_std

    rng = np.random.default_rng(2)
    f1, f2 = rng.standard_normal((300, 64)), rng.standard_normal((260, 64)) * 1.1
    state = np.random.get_state()
    np.random.seed(7)
    theirs = kernel_distance(f1, f2, num_subsets=20, max_subset_size=100)
    np.random.set_state(state)
    value, std = kid_with_std(f1, f2, subset_seed=7, num_subsets=20, max_subset_size=100)
    assert value == theirs and std > 0  # subsets of 100 out of 260-300 differ
    assert kid_with_std(f1[:50], f2[:50], num_subsets=5)[1] == pytest.approx(0, abs=1e-15)  # whole sets each time


def test_bootstrap_standard_errors_are_seeded_and_shrink_with_n():
    from bench.metrics import BOOTSTRAP_MAX_N, MetricOptions, bootstrap_se, kid_bootstrap_se

    rng = np.random.default_rng(3)
    o = MetricOptions(bootstrap=60, bootstrap_seed=1)
    small = [rng.standard_normal((40, 16)) for _ in range(2)]
    big = [rng.standard_normal((320, 16)) for _ in range(2)]
    assert kid_bootstrap_se(*small, o) == kid_bootstrap_se(*small, o)  # deterministic
    assert bootstrap_se(*small, frechet_distance, o) == bootstrap_se(*small, frechet_distance, o)
    assert kid_bootstrap_se(*big, o) < kid_bootstrap_se(*small, o)
    assert bootstrap_se(*big, frechet_distance, o) < bootstrap_se(*small, frechet_distance, o)
    assert np.isnan(kid_bootstrap_se(*small, MetricOptions()))  # no resamples asked for
    huge = rng.standard_normal((BOOTSTRAP_MAX_N + 1, 4))
    assert np.isnan(bootstrap_se(huge, huge, frechet_distance, o))  # too large to be cheap: no number


def test_kid_bootstrap_se_of_three_real_images_is_a_number():
    """A resample of three images is one image three times in 1 of 9 draws: no within-set pair, no
    KID. Such draws are left out instead of turning the standard error into NaN."""
    import warnings

    from bench.metrics import MetricOptions, kid_bootstrap_se

    rng = np.random.default_rng(0)
    fake, real = rng.normal(size=(8, 2048)), rng.normal(size=(3, 2048))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        se = kid_bootstrap_se(fake, real, MetricOptions(bootstrap=200))
    assert np.isfinite(se) and se > 0
