"""`bench sample CKPT`: EDM generate.py's conventions, resumable, the same bytes from 1 or 2 processes,
and every bad input refused with one line before anything is written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import api, checkpoint
from bench.sample import parse_seeds
from models.adapters import ADAPTERS

ROOT = Path(__file__).resolve().parent.parent
STEPS = "2"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny untrained DFU saved as a run saves its models (random weights: the output is noise-like,
    which is all these tests need)."""
    torch.manual_seed(0)
    adapter = ADAPTERS["dfu"]("cpu-tiny")
    tensors, meta = adapter.state()
    path = tmp_path_factory.mktemp("ckpt") / "dfu.safetensors"
    checkpoint.save(path, tensors, {**meta, "train_resolutions": [16, 24]})
    return path


def env(tmp_path: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "DFU_BENCH_CACHE": str(tmp_path / "cache")}


def bench(tmp_path: Path, *args: str, nproc: int = 0, wait: bool = True):
    """`bench sample ...` as a user starts it: alone, or under torchrun with nproc gloo processes."""
    cmd = [sys.executable, "-m", "bench", "sample", *args, "--device", "cpu", "--steps", STEPS]
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "bench", "sample", *args, "--device", "cpu", "--steps", STEPS]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=ROOT, env=env(tmp_path), capture_output=True, text=True, timeout=600)


def files(outdir: Path) -> dict[str, bytes]:
    return {p.relative_to(outdir).as_posix(): p.read_bytes() for p in sorted(outdir.rglob("*")) if p.is_file()}


def test_parse_seeds_takes_edms_syntax():
    assert parse_seeds("0-3,100") == [0, 1, 2, 3, 100]
    assert parse_seeds("7") == [7]
    assert parse_seeds(" 2-4 , 9 ") == [2, 3, 4, 9]


def test_writes_one_png_per_seed_and_resolution_equal_to_the_api(run_cli, ckpt, tmp_path, one_thread):
    out = tmp_path / "out"
    code, _, err = run_cli("sample", str(ckpt), "--resolutions", "16,24", "--seeds", "0-2,10", "--outdir", str(out),
                           "--batch", "3", "--steps", STEPS, "--device", "cpu")
    assert code == 0, err
    assert sorted(files(out)) == [f"{r}/{s:06d}.png" for r in (16, 24) for s in (0, 1, 2, 10)]
    assert "8 images written" in " ".join(err.split())
    model = api.load_model(ckpt, device="cpu", steps=int(STEPS))
    for r in (16, 24):
        want = model.sample([0, 1, 2, 10], resolution=r, batch=3)
        got = np.stack([np.asarray(Image.open(out / str(r) / f"{s:06d}.png")) for s in (0, 1, 2, 10)])
        assert got.shape == (4, r, r, 3) and np.array_equal(got, want)
    # image s depends on its seed only: seed 10 alone is the same image
    assert np.array_equal(model.sample([10], resolution=16)[0], np.asarray(Image.open(out / "16" / "000010.png")))


def test_rerun_writes_only_the_missing_seeds(run_cli, ckpt, tmp_path, one_thread):
    out = tmp_path / "out"
    args = ("sample", str(ckpt), "--resolutions", "16", "--seeds", "0-5", "--outdir", str(out), "--batch", "4",
            "--steps", STEPS, "--device", "cpu")
    assert run_cli(*args)[0] == 0
    before = files(out)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "16").iterdir()}
    for s in (1, 5):
        (out / "16" / f"{s:06d}.png").unlink()
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert "16 px: 2 written, 4 already there" in " ".join(err.split())
    assert files(out) == before
    for p in (out / "16").iterdir():
        if p.name not in ("000001.png", "000005.png"):
            assert p.stat().st_mtime_ns == stamps[p.name], f"{p.name} was rewritten"
    code, _, err = run_cli(*args)  # nothing left to do
    assert code == 0 and "0 images written" in " ".join(err.split())


def test_npz_format_holds_the_same_images_and_resumes(run_cli, ckpt, tmp_path, one_thread):
    png, npz = tmp_path / "png", tmp_path / "npz"
    base = ("--resolutions", "16", "--batch", "2", "--steps", STEPS, "--device", "cpu")
    assert run_cli("sample", str(ckpt), "--seeds", "0-4", "--outdir", str(png), *base)[0] == 0
    assert run_cli("sample", str(ckpt), "--seeds", "0-2", "--outdir", str(npz), "--format", "npz", *base)[0] == 0
    code, _, err = run_cli("sample", str(ckpt), "--seeds", "0-4", "--outdir", str(npz), "--format", "npz", *base)
    assert code == 0, err
    assert "16 px: 2 written, 3 already there" in " ".join(err.split())
    assert sorted(files(npz)) == ["16.npz"]  # the parts are merged and gone
    with np.load(npz / "16.npz") as z:
        assert z["seeds"].tolist() == [0, 1, 2, 3, 4]
        want = np.stack([np.asarray(Image.open(png / "16" / f"{s:06d}.png")) for s in range(5)])
        assert np.array_equal(z["images"], want)
    # what bench metrics reads: the .npz against the png folder of the same images
    result = api.compute_metrics(npz / "16.npz", png / "16", ["spectral"], device="cpu")
    assert result["n_a"] == 5 and result["spectral_lsd"] == 0.0


@pytest.mark.parametrize("channels", [1, 4])
def test_resumes_its_own_output_for_any_channel_count(run_cli, tmp_path, channels, one_thread):
    """A network of 1 or 4 image channels: the checks of what a resume keeps expect its channels, not 3
    (npz, and PNG where a PNG mode holds them); a PNG cannot hold 1 channel, refused before sampling."""
    torch.manual_seed(0)
    tensors, meta = ADAPTERS["dfu"]("cpu-tiny", arch_overrides={"img_channels": channels}).state()
    ckpt = tmp_path / "dfu.safetensors"
    checkpoint.save(ckpt, tensors, {**meta, "train_resolutions": [16]})
    base = ("--resolutions", "16", "--steps", STEPS, "--device", "cpu")
    formats = ["npz", "png"] if channels == 4 else ["npz"]
    for format in formats:
        out = tmp_path / format
        for seeds in ("0-1", "0-2"):
            code, _, err = run_cli("sample", str(ckpt), "--seeds", seeds, "--outdir", str(out), "--format", format,
                                   *base)
            assert code == 0, err
        assert "1 written, 2 already there" in " ".join(err.split())
    if channels == 1:
        code, _, err = run_cli("sample", str(ckpt), "--seeds", "0", "--outdir", str(tmp_path / "png"), *base)
        assert code == 2 and "1-channel images" in err and "--format npz" in err
        assert not (tmp_path / "png").exists()


def test_two_processes_under_torchrun_write_the_same_bytes_as_one(ckpt, tmp_path):
    args = ("--resolutions", "16,24", "--seeds", "0-6,20", "--batch", "2")
    one = bench(tmp_path, str(ckpt), *args, "--outdir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = bench(tmp_path, str(ckpt), *args, "--outdir", str(tmp_path / "two"), nproc=2)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    log = " ".join((two.stdout + two.stderr).split())
    assert "(rank 0/2) sample 16 px: batches 0,2 of 4" in log and "(rank 1/2) sample 16 px: batches 1,3 of 4" in log
    assert "16 images written" in log  # the summary counts both ranks' images
    a, b = files(tmp_path / "one"), files(tmp_path / "two")
    assert len(a) == 16 and a == b
    npz = bench(tmp_path, str(ckpt), *args, "--outdir", str(tmp_path / "npz2"), "--format", "npz", nproc=2)
    assert npz.returncode == 0, npz.stdout[-3000:] + npz.stderr[-3000:]
    with np.load(tmp_path / "npz2" / "24.npz") as z:
        assert z["seeds"].tolist() == [0, 1, 2, 3, 4, 5, 6, 20]
        assert np.array_equal(z["images"], np.stack([np.asarray(Image.open(tmp_path / "one" / "24" / f"{s:06d}.png"))
                                                     for s in z["seeds"]]))


def test_rerun_after_a_kill_writes_only_the_missing_seeds(ckpt, tmp_path):
    out, seeds = tmp_path / "out", "0-39"
    args = (str(ckpt), "--resolutions", "32", "--seeds", seeds, "--batch", "1", "--outdir", str(out))
    proc = bench(tmp_path, *args, wait=False)
    deadline = time.time() + 300

    def made() -> int:
        return len(list((out / "32").glob("*.png"))) if (out / "32").is_dir() else 0

    while made() < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in (out / "32").glob("*.png")}
    assert 3 <= len(done) < 40, f"the kill came too late or too early: {len(done)} images"
    again = bench(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    log = " ".join(again.stderr.split())
    assert f"32 px: {40 - len(done)} written, {len(done)} already there" in log
    for p in (out / "32").glob("*.png"):
        if p.name in done:
            assert p.stat().st_mtime_ns == done[p.name], f"{p.name} was rewritten"
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix != ".png" and not p.name.startswith(".")]
    fresh = bench(tmp_path, *args[:-1], str(tmp_path / "fresh"))
    assert fresh.returncode == 0
    assert {k: v for k, v in files(out).items() if not Path(k).name.startswith(".")} == files(tmp_path / "fresh")


# ---------------------------------------------------------------------- bad input


def _corrupt(ckpt: Path, tmp: Path) -> Path:
    bad = tmp / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16 + b"not a safetensors file")
    (tmp / "bad.json").write_bytes(checkpoint.meta_path(ckpt).read_bytes())
    return bad


def _no_json(ckpt: Path, tmp: Path) -> Path:
    lone = tmp / "lone.safetensors"
    lone.write_bytes(ckpt.read_bytes())
    return lone


def _mismatched(ckpt: Path, tmp: Path) -> Path:
    """Tensors of one network, metadata of another (more channels)."""
    import json

    meta = json.loads(checkpoint.meta_path(ckpt).read_text())
    meta["arch_config"]["model_channels"] = 32
    other = tmp / "other.safetensors"
    other.write_bytes(ckpt.read_bytes())
    (tmp / "other.json").write_text(json.dumps(meta))
    return other


def _bad_json(ckpt: Path, tmp: Path) -> Path:
    p = tmp / "garbled.safetensors"
    p.write_bytes(ckpt.read_bytes())
    (tmp / "garbled.json").write_text("{not json")
    return p


CASES = [
    ("seeds-backwards", lambda c, t: [str(c), "--seeds", "5-3"], ("5-3", "backwards")),
    ("seeds-word", lambda c, t: [str(c), "--seeds", "a-b"], ("'a-b'", "0-63,100")),
    ("seeds-negative", lambda c, t: [str(c), "--seeds", "-1"], ("'-1'",)),
    ("seeds-empty", lambda c, t: [str(c), "--seeds", ","], ("no seeds",)),
    ("seeds-repeated", lambda c, t: [str(c), "--seeds", "0-3,2"], ("seed 2 more than once",)),
    ("seeds-too-many", lambda c, t: [str(c), "--seeds", "0-99999999999"], ("more than",)),
    ("resolution-word", lambda c, t: [str(c), "--resolutions", "16,big"], ("'big'",)),
    ("resolution-small", lambda c, t: [str(c), "--resolutions", "4"], ("4", "between 8 and 512")),
    ("resolution-unrunnable", lambda c, t: [str(c), "--resolutions", "16,12"], ("12 px", "use at least 16")),
    ("resolution-twice", lambda c, t: [str(c), "--resolutions", "16,16"], ("16 twice",)),
    ("format", lambda c, t: [str(c), "--format", "jpeg"], ("'jpeg'", "png, npz")),
    ("ckpt-missing", lambda c, t: [str(t / "nope.safetensors")], ("nope.safetensors", "does not exist")),
    ("ckpt-corrupt", lambda c, t: [str(_corrupt(c, t))], ("bad.safetensors", "not a readable safetensors")),
    ("ckpt-no-json", lambda c, t: [str(_no_json(c, t))], ("lone.json", "architecture")),
    ("ckpt-bad-json", lambda c, t: [str(_bad_json(c, t))], ("garbled.json", "is not JSON (JSONDecodeError)")),
    ("ckpt-mismatched", lambda c, t: [str(_mismatched(c, t))], ("other.safetensors", "do not fit")),
    ("ckpt-folder", lambda c, t: [str(t)], ("is a folder",)),
    ("outdir-is-a-file", lambda c, t: [str(c), "--outdir", str(c)], ("is a file",)),
]


@pytest.mark.parametrize("make,expect", [pytest.param(m, e, id=i) for i, m, e in CASES])
def test_bad_input_is_one_line_and_writes_nothing(run_cli, ckpt, tmp_path, make, expect, one_thread):
    args = make(ckpt, tmp_path)
    defaults = {"--resolutions": "16", "--seeds": "0-1", "--outdir": str(tmp_path / "out")}
    for k, v in defaults.items():
        if k not in args:
            args += [k, v]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli("sample", *args, "--device", "cpu", "--steps", STEPS)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for part in expect:
        assert part in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output folder, nothing else
