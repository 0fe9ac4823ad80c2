"""Reference statistics at one resolution: what FID, KID, patch and spectral metrics compare against.

A `ReferenceSet` holds the real images' Inception features in every FID mode
(and their patch crops' features), what the spectral metric needs, and the first
few images for the report's Fig. 5. It is made one of two ways, chosen by the
suite's `metrics.reference_n`:

* `held` (reference_n unset): the first min(sample.n, dataset size) images, read
  into memory at once -- what every run did before reference_n existed, with the
  same features, cache keys and numbers.
* `streamed` (reference_n a number or `all`, the paper's protocol of every real
  image at that resolution, 70,000 for FFHQ): the images are read in batches and
  never held together. The feature cache needs a key before it can answer, and a
  key that truly identifies the pixels is a hash of all of them, so the set is
  read twice: pass 1 hashes every batch (and sums the power spectrum), pass 2 --
  only for the modes the cache does not have -- computes features, batch k on
  rank k % world. Reading a batch (PNG decode) costs far less than its Inception
  pass, so a cache hit costs one read and a miss one extra. The hash is fed the
  same bytes in the same order as `content_key` of the whole array, and the
  batches are the extractor's own, so a streamed set has the same key and the
  same features as the same images held in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

import numpy as np

from bench import dist
from bench.features import FeatureCache, patch_salt
from bench.io import rank_info
from bench.metrics import (MetricOptions, Pixels, SetStats, Spectrum, patch_crops, power_sum, radial_average,
                           spectral_lsd)
from bench.progress import progress

KEPT_IMAGES = 8  # references/rNNN.npz: real images for the report's Fig. 5


@dataclass
class ReferenceSet:
    resolution: int
    n: int
    first: np.ndarray  # the first KEPT_IMAGES images
    features: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (mode, "images" | "patches")
    images: Optional[np.ndarray] = None  # held sets only
    power: Optional[np.ndarray] = None  # streamed sets: radially averaged power spectrum

    @cached_property
    def pixels(self) -> Pixels:
        """What the pixel metrics compare against: the images (held) or their spectrum (streamed)."""
        if self.images is not None:
            return Pixels(self.images)
        return Pixels(spectrum=Spectrum(tuple(self.first.shape[1:]), self.power))

    def stats(self, mode: str) -> SetStats:
        """The set as the metrics see it in FID mode `mode` (bench.scoring.score's `real`)."""
        return SetStats(features=self.features.get((mode, "images")), patches=self.features.get((mode, "patches")),
                        pixels=self.pixels)

    def spectral_distance(self, fake: np.ndarray) -> float:
        """The spectral metric of a generated set against this one, also for a streamed set."""
        return spectral_lsd(self.pixels.spectrum, Spectrum.of(fake))


def _options(patches: tuple[int, int]) -> MetricOptions:
    return MetricOptions(patch_size=patches[0], patches_per_image=patches[1])


def held(dataset, res: int, n: int, caches: dict[str, FeatureCache],
         patches: Optional[tuple[int, int]] = None) -> ReferenceSet:
    """The first n images in memory, features through each mode's cache (patches: (size, per image))."""
    images = dataset.images(list(range(n)), res)
    ref = ReferenceSet(res, n, images[:KEPT_IMAGES], images=images)
    for mode, cache in caches.items():
        ref.features[mode, "images"] = cache.features(images, "reference", f"features reference@{res}")
        if patches:
            crops = patch_crops(images, _options(patches))
            ref.features[mode, "patches"] = cache.features(crops, "reference", f"patches reference@{res}",
                                                           patch_salt(_options(patches)))
    return ref


def streamed(dataset, res: int, n: int, caches: dict[str, FeatureCache], batch_size: int,
             patches: Optional[tuple[int, int]] = None) -> ReferenceSet:
    """Images 0..n-1 read `batch_size` at a time, twice at most (see the module docstring)."""
    starts = list(range(0, n, batch_size))
    per = {"images": 1, "patches": patches[1] if patches else 0}  # feature rows per image

    def read(lo: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        batch = dataset.images(list(range(lo, min(n, lo + batch_size))), res)
        crops = patch_crops(batch, _options(patches), first=lo) if patches else None
        return batch, crops

    jobs = {(mode, "images"): cache.hasher((n, res, res, 3)) for mode, cache in caches.items()}
    if patches:
        for mode, cache in caches.items():
            jobs[mode, "patches"] = cache.hasher((n * patches[1], patches[0], patches[0], 3),
                                                 patch_salt(_options(patches)))
    total, kept = np.zeros((res, res)), []
    with progress() as p:  # pass 1: content hash, spectrum, the kept images
        task = p.add_task(f"hash reference@{res} ({n} images)", total=n, unit="img")
        for lo in starts:
            batch, crops = read(lo)
            if lo < KEPT_IMAGES:
                kept.append(batch[:KEPT_IMAGES - lo].copy())
            for (_, what), h in jobs.items():
                h.update(np.ascontiguousarray(batch if what == "images" else crops).tobytes())
            total += power_sum(batch)
            p.advance(task, len(batch))
    keys = {job: h.hexdigest() for job, h in jobs.items()}
    ref = ReferenceSet(res, n, np.concatenate(kept), power=radial_average(total / (n * res * res))[1])
    for (mode, what), key in keys.items():
        feats = caches[mode].load(key, n * per[what], "reference")
        if feats is not None:
            ref.features[mode, what] = feats
    missing = [job for job in keys if job not in ref.features]
    if not missing:
        return ref

    rank, world = rank_info()
    mine = dist.my_batches(len(starts), rank, world)
    local: dict[tuple[str, str], list[np.ndarray]] = {job: [] for job in missing}
    with progress() as p:  # pass 2: features of the modes the cache lacks, all from one read
        task = p.add_task(f"features reference@{res} ({', '.join(f'{m} {w}' for m, w in missing)})",
                          total=sum(min(batch_size, n - starts[k]) for k in mine), unit="img")
        for k in mine:
            batch, crops = read(starts[k])
            for mode, what in missing:
                local[mode, what].append(caches[mode].extractor.batch_features(batch if what == "images" else crops))
            p.advance(task, len(batch))
    for mode, what in missing:
        rows_k = [min(batch_size, n - lo) * per[what] for lo in starts]
        feats = dist.gather_batches(local[mode, what], len(starts), rows_k)
        caches[mode].store(keys[mode, what], feats, "reference")
        ref.features[mode, what] = feats
    return ref
