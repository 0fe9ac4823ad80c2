"""torchrun with 2 gloo processes on the CPU, on the smoke suite: same samples and metrics as one process,
DDP training equal up to float round-off, and a killed rank fails the run cleanly and
resumes. Processes are real (subprocess + torchrun), as a user would start them."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

SMOKE = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())
# The smoke suite, with what makes sharding visible: sample batches of 8 (n = 24: rank 1
# gets batch 1 of 3), Inception batches of 7 (uneven: 7, 7, 7, 3), gradient accumulation
# on dfu at 24 px, and a bilinear model fed by dfu's samples (a collective fetch).
SUITE = {
    **SMOKE, "name": "ddp", "device": "cpu",
    "models": [{**m, "train": {**m["train"], "micro_batch": {24: 4}}} if m["name"] == "dfu" else m
               for m in SMOKE["models"]]
              + [{"name": "bilinear-dfu", "adapter": "bilinear", "source": "dfu", "base_resolution": 24}],
    "sample": {**SMOKE["sample"], "batch_size": 8},
    "metrics": {**SMOKE["metrics"], "batch_size": 7},
}
TRAINED = [m["name"] for m in SUITE["models"] if "train" in m]
STEPS = SUITE["models"][0]["train"]["steps"]


def bench(tmp_path: Path, *args: str, cache: str, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DFU_BENCH_CACHE": str(tmp_path / cache),
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bench", "run", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One single-process run, the same suite with 2 processes, and 2 processes sampling
    from the single run's checkpoints (fresh feature caches for each)."""
    tmp = tmp_path_factory.mktemp("ddp")
    suite = tmp / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    results = tmp / "results"
    one = bench(tmp, str(suite), "--results", str(results), "--run-id", "one", cache="cache1")
    assert one.returncode == 0, one.stderr[-3000:]
    two = bench(tmp, str(suite), "--results", str(results), "--run-id", "two", "--nproc", "2", cache="cache2")
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    run = results / "ddp"
    shutil.copytree(run / "one" / "checkpoints", run / "same-ckpt" / "checkpoints")
    same = bench(tmp, str(suite), "--results", str(results), "--run-id", "same-ckpt", "--nproc", "2",
                 cache="cache3")
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    return run, same.stdout + same.stderr


def metrics(run_dir: Path):
    import pandas as pd

    cols = ["fid", "kid", "spectral_lsd"]
    return pd.read_csv(run_dir / "metrics.csv").set_index(["model", "sample_resolution"])[cols]


def test_sharded_sampling_and_features_equal_one_process(runs):
    run, log = runs
    for rank in (0, 1):  # each rank logged its shard of samples and of features
        assert f"(rank {rank}/2) sample dfu@32: batches" in log
        assert f"(rank {rank}/2) features dfu@32 s0 (clean): batches" in log  # the FID mode of the features
    assert "(rank 1/2) sample dfu@32: batches 1 of 3" in log
    for f in sorted((run / "one" / "samples").glob("*/*.npz")):
        a = np.load(f)["images"]
        b = np.load(run / "same-ckpt" / "samples" / f.parent.name / f.name)["images"]
        assert np.array_equal(a, b), f
    assert not list((run / "same-ckpt" / "samples").glob("*/*.parts")), "part files were not merged"
    assert metrics(run / "one").equals(metrics(run / "same-ckpt"))


def test_ddp_training_equals_one_process_up_to_round_off(runs):
    run, _ = runs
    for m in TRAINED:
        a = json.loads((run / "one" / "checkpoints" / m / "model.json").read_text())["losses"]
        b = json.loads((run / "two" / "checkpoints" / m / "model.json").read_text())["losses"]
        assert len(a) == len(b) == STEPS
        # round-off (DDP's gradient all-reduce sums in another order) grows through Adam:
        # 1e-5 over the first 10 steps, 1e-4 over the smoke suite's 40
        np.testing.assert_allclose(a[:10], b[:10], rtol=1e-5)
        np.testing.assert_allclose(a, b, rtol=1e-4)
    assert (run / "two" / "metrics.csv").is_file() and (run / "two" / "table.md").is_file()


def _rank_pid(run_id: str, rank: int) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and run_id.encode() in cmd and b"torch.distributed.run" not in cmd:
            return int(proc.name)
    return None


def test_killed_rank_fails_the_run_and_rerun_resumes(tmp_path):
    spec = {**SUITE, "models": [{**SUITE["models"][1], "train": {**SUITE["models"][1]["train"], "steps": 400,
                                                                 "checkpoint_every": 5}}],
            "sample": {**SUITE["sample"], "resolutions": [16]}}
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(spec))
    args = (str(suite), "--results", str(tmp_path / "results"), "--run-id", "killed", "--nproc", "2")
    state = tmp_path / "results" / "ddp" / "killed" / "checkpoints" / "dfu" / "train_state.json"
    proc = bench(tmp_path, *args, cache="cache", wait=False)
    deadline = time.time() + 300
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    pid = _rank_pid("killed", 1)
    assert pid is not None and proc.poll() is None, "rank 1 not found running"
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    last = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert last and "failed" in last[-1] and "resume with: bench run" in last[-1] and "--run-id killed" in last[-1]
    step = json.loads(state.read_text())["step"]
    assert 0 < step < 400
    again = bench(tmp_path, *args, cache="cache")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming training from step" in again.stdout + again.stderr
    assert (tmp_path / "results" / "ddp" / "killed" / "metrics.csv").is_file()
