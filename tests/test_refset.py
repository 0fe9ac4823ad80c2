"""Reference sets: streamed (metrics.reference_n) vs held, and a run's rows per FID mode and cache reuse."""
from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench import refset
from bench.datasets import ToyFaces
from bench.features import FeatureCache
from bench.metrics import radial_power_spectrum, random_crops


class FakeExtractor:
    """Features as a pure function of each image's pixels; records the batches it is given."""

    def __init__(self, mode: str, batch_size: int):
        self.identity, self.mode, self.batch_size = f"fake:{mode}", mode, batch_size
        self.batches: list[int] = []

    def batch_features(self, arr: np.ndarray) -> np.ndarray:
        out = []
        for k in range(0, len(arr), self.batch_size):
            chunk = arr[k:k + self.batch_size]
            self.batches.append(len(chunk))
            mean = chunk.reshape(len(chunk), -1).mean(axis=1, dtype=np.float64)
            out.append(np.outer(mean, np.arange(1, 2049)) / 2048 + (self.mode == "legacy"))
        return np.concatenate(out)

    def array_features(self, arr: np.ndarray, desc: str = "") -> np.ndarray:
        return self.batch_features(arr)


class CountingFaces(ToyFaces):
    """toyfaces that remembers the largest number of images it was asked for at once."""

    largest = 0

    def images(self, indices, resolution):
        self.largest = max(self.largest, len(indices))
        return super().images(indices, resolution)


def caches(root: Path, batch_size: int) -> dict[str, FeatureCache]:
    return {m: FeatureCache(root, FakeExtractor(m, batch_size)) for m in ("clean", "legacy")}


def test_streamed_reference_reads_in_batches_and_equals_held(tmp_path):
    data = CountingFaces(size=21, seed=3)
    streamed = refset.streamed(data, 16, 21, caches(tmp_path, 4), batch_size=4, patches=(8, 2))
    assert data.largest == 4  # never more than one batch in memory
    assert streamed.n == 21 and streamed.images is None
    np.testing.assert_array_equal(streamed.first, data.images(range(8), 16))
    everything = data.images(range(21), 16)
    np.testing.assert_allclose(streamed.power, radial_power_spectrum(everything)[1], rtol=1e-12)
    fake = ToyFaces(size=5, seed=9).images(range(5), 16)
    assert streamed.spectral_distance(fake) == pytest.approx(
        refset.held(data, 16, 21, {}).spectral_distance(fake), abs=1e-9)
    # the same images held in memory: the same cache keys, so nothing is computed again
    fresh = caches(tmp_path, 4)
    held = refset.held(data, 16, 21, fresh, patches=(8, 2))
    assert all(c.computed == {} and c.reused == {"reference": 2} for c in fresh.values())
    for key, feats in held.features.items():
        np.testing.assert_array_equal(streamed.features[key], feats)
    assert set(held.features) == {(m, w) for m in ("clean", "legacy") for w in ("images", "patches")}
    assert held.features["clean", "patches"].shape == (42, 2048)
    # and they are the features of the whole array, crops included
    ex = FakeExtractor("clean", 4)
    np.testing.assert_array_equal(streamed.features["clean", "images"], ex.batch_features(everything))
    np.testing.assert_array_equal(streamed.features["clean", "patches"],
                                  ex.batch_features(random_crops(everything, 8, 2)))


def test_streamed_reference_computes_only_what_the_cache_lacks(tmp_path):
    data = ToyFaces(size=10, seed=1)
    first = caches(tmp_path, 4)
    del first["legacy"]
    refset.streamed(data, 16, 10, first, batch_size=4)
    assert first["clean"].computed == {"reference": 1} and first["clean"].extractor.batches == [4, 4, 2]
    both = caches(tmp_path, 4)
    ref = refset.streamed(data, 16, 10, both, batch_size=4)
    assert both["clean"].reused == {"reference": 1} and both["clean"].extractor.batches == []
    assert both["legacy"].computed == {"reference": 1} and both["legacy"].extractor.batches == [4, 4, 2]
    assert not np.array_equal(ref.features["clean", "images"], ref.features["legacy", "images"])
    # another count is another set: a new key
    other = caches(tmp_path, 4)
    refset.streamed(data, 16, 9, other, batch_size=4)
    assert other["clean"].computed == {"reference": 1}


SUITE = {
    "name": "modes", "seed": 0, "device": "cpu",
    "dataset": {"kind": "toyfaces", "size": 20},
    "models": [{"name": "unet", "adapter": "unet", "arch": "cpu-tiny",
                "train": {"resolutions": [16], "steps": 2, "batch_size": 4}}],
    "sample": {"resolutions": [16, 24], "n": 8, "steps": 2, "batch_size": 8},
    "metrics": {"batch_size": 8, "metrics": ["fid", "kid", "spectral"], "reference_n": "all"},
}


def _run(tmp_path: Path, run_id: str, modes: list[str]) -> tuple[list[dict], str]:
    from bench.cli import main

    suite = tmp_path / f"{run_id}.yaml"
    suite.write_text(yaml.safe_dump({**SUITE, "metrics": {**SUITE["metrics"], "fid_mode": modes}}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--run-id", run_id,
                     "--report-dir", str(tmp_path / "reports")]) == 0, err.getvalue()
    with open(tmp_path / "results" / "modes" / run_id / "metrics.csv") as f:
        return list(csv.DictReader(f)), " ".join(err.getvalue().split())


def test_run_writes_a_row_per_mode_and_reuses_each_modes_features(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("DFU_BENCH_CACHE", str(tmp_path / "cache"))
    rows, log = _run(tmp_path, "clean", ["clean"])
    assert [r["fid_mode"] for r in rows] == ["clean", "clean"]
    assert "reference feature sets: 2 computed, 0 reused from cache; generated: 2 computed, 0 reused (clean mode)" in log
    assert "hash reference@16 (20 images)" in log  # reference_n: all is streamed

    rows, log = _run(tmp_path, "both", ["clean", "legacy"])
    # clean: every set found in the cache; legacy: another key, so computed
    assert "reference feature sets: 0 computed, 2 reused from cache; generated: 0 computed, 2 reused (clean mode)" in log
    assert "reference feature sets: 2 computed, 0 reused from cache; generated: 2 computed, 0 reused (legacy mode)" in log
    assert [(r["sample_resolution"], r["fid_mode"]) for r in rows] == [
        ("16", "clean"), ("16", "legacy"), ("24", "clean"), ("24", "legacy")]
    assert all(r["n_ref"] == "20" and r["n"] == "8" for r in rows)  # all = the 20 images of the dataset
    for clean, legacy in (rows[0:2], rows[2:4]):
        assert clean["spectral_lsd"] == legacy["spectral_lsd"]  # pixels only: the same in both modes
        assert abs(float(clean["fid"]) - float(legacy["fid"])) > 1.0
    run = tmp_path / "results" / "modes" / "both"
    with np.load(run / "references" / "r024.npz") as z:
        np.testing.assert_array_equal(z["images"], ToyFaces(size=20).images(range(8), 24))
    md = (run / "table.md").read_text()
    assert "## FID, clean mode" in md and "## FID, legacy mode" in md
    assert md.count("## log-spectral distance") == 1


@pytest.mark.parametrize("metrics, needle", [
    ({"fid_mode": []}, "fid_mode is an empty list"),
    ({"fid_mode": ["clean", "clean"]}, "fid_mode repeats a mode"),
    ({"fid_mode": "dirty"}, "metrics.fid_mode"),
    ({"reference_n": 1}, "metrics.reference_n"),
    ({"reference_n": "most"}, "metrics.reference_n"),
])
def test_metrics_config_errors_are_one_line(metrics, needle):
    from bench.config import parse_suite
    from bench.errors import BenchError

    with pytest.raises(BenchError, match=needle) as exc:
        parse_suite({**SUITE, "metrics": metrics})
    assert "\n" not in str(exc.value)


def test_reference_n_above_the_dataset_stops_planning(tmp_path):
    from bench.config import parse_suite
    from bench.errors import BenchError
    from bench.plan import plan_suite

    cfg = parse_suite({**SUITE, "metrics": {"reference_n": 21}})
    assert cfg.metrics.fid_modes == ["clean"]  # the default: one mode, as before
    with pytest.raises(BenchError) as exc:
        plan_suite(cfg)
    assert str(exc.value) == ("metrics.reference_n: 21 is more than the 20 images of the dataset; "
                              "lower it or use all")
