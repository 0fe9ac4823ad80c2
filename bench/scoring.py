"""From image sets to numbers: the one dispatch over the metric table.

`score(names, real, fake, options)` computes every named metric of
bench.metrics.METRICS from what two sets offer (`SetStats`: features in one FID
mode, patch features, pixels) and returns {column: value}. `bench run` (per
resolution, model, seed set and FID mode), `bench metrics` and `bench fid` all
end here, so the same inputs give the same numbers whichever command asks.

`set_stats` makes a set's SetStats in one mode, computing through the feature
cache only what the named metrics need. `compare_sets` scores two sets given on
the command line or to the Python API: `bench metrics`, and `bench fid`, which is
`bench metrics --metrics fid` (the same inputs, the same feature cache).
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from bench.errors import BenchError
from bench.features import (FeatureCache, build_feature_extractor, check_mode, feature_cache, load_set,
                            patch_salt)
from bench.dist import pick_device
from bench.io import check_cache
from bench.metrics import MetricOptions, Pixels, SetStats, needs, patch_crops, select
from bench.progress import console


def score(names: Iterable[str], real: SetStats, fake: SetStats, options: MetricOptions = MetricOptions()) -> dict:
    """{column: value} of every named metric whose inputs both sets have, in table order.

    A metric whose inputs are missing is left out: a run's reference set has no
    patch features at resolutions below the patch size, so there are no patch
    metrics there. With options.bootstrap, metrics that have one add their bootstrap
    standard error over samples. Unknown names are a BenchError.
    """
    out: dict[str, float] = {}
    for metric in select(names):
        if real.has(metric.needs) and fake.has(metric.needs):
            out.update(metric.compute(real, fake, options))
            if options.bootstrap and metric.bootstrap is not None:
                out.update(metric.bootstrap(real, fake, options))
    return out


def set_stats(images: np.ndarray, cache: FeatureCache, names: Iterable[str], options: MetricOptions, kind: str,
              label: str, patches: bool = True, pixels: Optional[Pixels] = None,
              features: Optional[np.ndarray] = None) -> SetStats:
    """What the named metrics need of an NHWC uint8 set, in the cache's FID mode.

    kind and label name the set in the cache's counts and the progress display;
    patches=False skips patch features (the reference has none to compare with);
    pixels and features, when given, are used instead of being made here.
    """
    need = needs(names)
    stats = SetStats(pixels=(pixels or Pixels(images)) if "pixels" in need else None)
    if "features" in need:
        stats.features = features if features is not None else cache.features(images, kind, f"features {label}")
    if "patches" in need and patches:
        stats.patches = cache.features(patch_crops(images, options), kind, f"patches {label}", patch_salt(options))
    return stats


def log_cache_use(cache: FeatureCache, mode: str, uncached: Iterable[str] = ()) -> None:
    """One log line: which sets' features were computed and which were read from the cache."""
    def sets(counts: dict) -> str:
        return ", ".join(f"{k} ({v})" if v > 1 else k for k, v in sorted(counts.items())) or "none"
    also = f"; not cached (mixed image sizes): {', '.join(uncached)}" if uncached else ""
    console.log(f"Inception features ({mode}): reused from cache: {sets(cache.reused)}; "
                f"computed: {sets(cache.computed)}{also} (cache {cache.root})")


def compare_sets(a, b, names: list[str], device: str = "auto", batch_size: int = 32,
                 inception_path: str | None = None, options: MetricOptions = MetricOptions(),
                 mode: str = "clean") -> dict:
    """The `bench metrics` computation: A is the generated set, B the reference.

    Folders, zips or .npz files (images and/or features). Inception metrics are in
    FID mode `mode`; features given in an .npz are taken as made in that mode
    (they carry no mode of their own)."""
    check_mode(mode)
    need = needs(names)
    (ia, fa), (ib, fb) = load_set(a), load_set(b)
    image_needs = need - {"features"}
    for label, imgs in (("A", ia), ("B", ib)):
        if imgs is None and image_needs:
            needing = sorted(m.name for m in select(names) if m.needs in image_needs)
            raise BenchError(f"set {label} has features only; {', '.join(needing)} "
                             "need images (give a folder, zip or .npz with 'images')")
        if imgs is not None and imgs.dtype == object and image_needs:
            raise BenchError(f"set {label} mixes image sizes; patch and spectral metrics need one size")
    for label, imgs, feats in (("A", ia, fa), ("B", ib, fb)):
        n = len(feats) if feats is not None else len(imgs)
        if n < 2:  # before any feature is computed or cached
            raise BenchError(f"set {label} holds {n} image{'s' * (n != 1)}; the metrics need at least 2 images "
                             "in each set")
    # checks that need only the pixels' sizes, before Inception is loaded (its first load converts
    # and caches weights: a refused command must write nothing)
    sizes = {label: imgs.shape[1:3] for label, imgs in (("A", ia), ("B", ib))
             if imgs is not None and imgs.dtype != object}
    if "pixels" in need and len(set(sizes.values())) > 1:
        raise BenchError(f"spectral distance needs equal image sizes, got {sizes['A']} and {sizes['B']}; "
                         "compare sets at the same resolution")
    if "patches" in need:
        for label, (h, w) in sizes.items():
            if options.patch_size > min(h, w):
                raise BenchError(f"patch size {options.patch_size} is larger than the {h}x{w} images of set "
                                 f"{label}; lower --patch-size or drop patch metrics")
    cache = None
    if fa is None or fb is None or "patches" in need:
        check_cache()  # only here: two sets of features need no cache, so a read-only one serves them
        cache = feature_cache(build_feature_extractor(mode, pick_device(device), batch_size, inception_path))

    uncached = []

    def stats(imgs, feats, label) -> SetStats:
        if "features" in need and feats is None and imgs.dtype == object:
            # mixed sizes: no content key over one array, so computed directly, not cached
            feats = cache.extractor.features(iter(imgs), total=len(imgs), desc=f"features {label}")
            uncached.append(label)
        if imgs is None:
            return SetStats(features=feats)
        return set_stats(imgs, cache, names, options, label, label, features=feats)

    fake = stats(ia, fa, "A")
    scores = score(names, stats(ib, fb, "B"), fake, options)
    if cache is not None:
        log_cache_use(cache, mode, uncached)
    out: dict = {"n_a": int(len(fa) if fa is not None else len(ia)),
                 "n_b": int(len(fb) if fb is not None else len(ib)), "mode": mode}
    for column, value in scores.items():
        out[column] = value
        if column == "kid":
            out["kid_subset_seed"] = options.kid_subset_seed
    return out
