"""A training process killed after a checkpoint, then resumed, ends bit-identical to an uninterrupted one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent

SUITE = {
    "name": "killresume", "seed": 7, "device": "cpu",
    "dataset": {"kind": "toyfaces", "size": 64},
    "models": [{"name": "dfu", "adapter": "dfu", "arch": "cpu-tiny",
                "train": {"resolutions": [16, 24], "steps": 60, "batch_size": 4, "lr": 0.002,
                          "checkpoint_every": 10, "ema_halflife_kimg": 0.05}}],
    "sample": {"resolutions": [16], "n": 4, "steps": 2, "batch_size": 4},
    "metrics": {"metrics": ["fid"]},
}


def test_kill_and_resume_is_bit_identical(tmp_path, run_cli):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    results = tmp_path / "results"
    code, _, err = run_cli("run", str(suite), "--results", str(results), "--run-id", "straight")
    assert code == 0, err

    run = results / "killresume" / "killed"
    state_meta = run / "checkpoints" / "dfu" / "train_state.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(suite), "--results", str(results),
                             "--run-id", "killed"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not state_meta.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = json.loads(state_meta.read_text())["step"]
    assert not (run / "checkpoints" / "dfu" / "model.safetensors").exists(), "killed too late"
    assert 0 < step < 60

    code, _, err = run_cli("run", str(suite), "--results", str(results), "--run-id", "killed")
    assert code == 0, err
    assert f"resuming training from step {step}" in err
    a = load_file(str(results / "killresume" / "straight" / "checkpoints" / "dfu" / "model.safetensors"))
    b = load_file(str(run / "checkpoints" / "dfu" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)
