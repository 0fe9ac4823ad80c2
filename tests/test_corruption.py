"""A finished run with one damaged file (issue #13, item 4).

For each kind of file a run holds (and a cached feature file), three things must hold:

* resuming (`bench run SUITE --run-id same`) detects it: exit 2, one `error:` line naming
  the file and the fix (delete it, then resume), no traceback, and nothing written -- the
  run directory, the reports and the cache are byte for byte as they were;
* `bench report RUN_DIR` detects it the same way (a cached feature file is not part of the
  run, and `bench report` never reads the cache: no report case for it);
* after deleting the file, resuming redoes only that piece and metrics.csv has exactly the
  original values (timing columns aside).

metrics.csv and environment.json are rewritten by every resume (they are the run's
outputs), so a resume repairs them instead of refusing: for those kinds the resume case
asserts exit 0 and the original values.

The damaged copies are made from one finished run of tests/_hostile.py's TINY suite (a
cpu-tiny DFU with a train_state, a bilinear baseline, 8 samples at 16 px).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import pytest

from _hostile import (Workspace, assert_refused, assert_unchanged, guarded,
                      metrics_values, npz_bytes, tree)

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def ws(tmp_path, monkeypatch, finished, one_thread):
    w = Workspace(tmp_path / "ws", finished).env(monkeypatch)
    w.run_dir = w.copy_finished()
    return w


# ------------------------------------------------------------------------------ damage


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage_json(path: Path) -> None:
    path.write_text('{"step": 4, "losses": [0.1, ')


def binary(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 4)


def zero_tensor_bytes(path: Path) -> None:
    """4 KB of tensor data zeroed, the safetensors header intact: the file still loads."""
    data = bytearray(path.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    start = 8 + header + (len(data) - 8 - header) // 2
    data[start:start + 4096] = bytes(4096)
    path.write_bytes(bytes(data))


def wrong_keys(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    tensors["renamed." + first] = tensors.pop(first)
    save_file(tensors, str(path))


def other_images(path: Path) -> None:
    """A valid sample file whose images are not the ones sampled (all zero): only a checksum tells."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"] = np.zeros_like(arrays["images"])
    path.write_bytes(npz_bytes(**arrays))


def zero_npy_data(path: Path) -> None:
    """The array data of a cached feature file zeroed, its .npy header intact: it still loads."""
    data = bytearray(path.read_bytes())
    header = len(data) - 8 * 8 * 2048  # float64 (8, 2048)
    assert header > 0
    data[header:] = bytes(len(data) - header)
    path.write_bytes(bytes(data))


def write(text: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(text)


def cut_mid_row(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: text.rindex(",", 0, len(text) - 2) - 3])


def replace_values(path: Path) -> None:
    df = pd.read_csv(path)
    df["fid"] = 1.0
    df.to_csv(path, index=False)


# ------------------------------------------------------------------------------ kinds


@dataclass
class Kind:
    """One damaged file. `path`: relative to the run directory, or 'cache:first' for the first cached
    feature file. `prepare`: deletions that make a resume read the file (a run killed mid-training)."""

    id: str
    path: str
    damage: Callable[[Path], None]
    resume: Optional[str] = None  # xfail reason on resume (None: passes today)
    report: Optional[str] = None  # xfail reason on report; "n/a": no report case
    recover: Optional[str] = None  # xfail reason for delete + resume
    repaired_by_resume: bool = False  # an output every resume rewrites
    prepare: tuple[str, ...] = ()


KILLED = ("checkpoints/dfu/model.safetensors", "checkpoints/dfu/model.json")  # killed mid-training

KINDS = [
    Kind("model-zeroed-4kb", "checkpoints/dfu/model.safetensors", zero_tensor_bytes),
    Kind("model-wrong-keys", "checkpoints/dfu/model.safetensors", wrong_keys),
    Kind("model-truncated", "checkpoints/dfu/model.safetensors", truncate),
    Kind("model-json-garbage", "checkpoints/dfu/model.json", garbage_json),
    Kind("train-state-truncated", "checkpoints/dfu/train_state.safetensors", truncate, prepare=KILLED),
    Kind("train-state-zeroed-4kb", "checkpoints/dfu/train_state.safetensors", zero_tensor_bytes, prepare=KILLED),
    Kind("train-state-json-garbage", "checkpoints/dfu/train_state.json", garbage_json, prepare=KILLED),
    Kind("sample-truncated", "samples/dfu/r016_s0.npz", truncate),
    Kind("sample-other-images", "samples/dfu/r016_s0.npz", other_images),
    Kind("reference-truncated", "references/r016.npz", truncate),
    Kind("model-card-garbage", "checkpoints/dfu/model_card.json", garbage_json),
    Kind("suite-yaml-binary", "suite.yaml", binary),
    Kind("environment-json-garbage", "environment.json", garbage_json, repaired_by_resume=True),
    Kind("metrics-empty", "metrics.csv", write(""), repaired_by_resume=True),
    Kind("metrics-binary", "metrics.csv", binary, repaired_by_resume=True),
    Kind("metrics-header-only", "metrics.csv", lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"),
         repaired_by_resume=True),
    Kind("metrics-wrong-columns", "metrics.csv", write("a,b,c\n1,2,3\n"), repaired_by_resume=True),
    Kind("metrics-cut-mid-row", "metrics.csv", cut_mid_row, repaired_by_resume=True),
    Kind("metrics-other-values", "metrics.csv", replace_values, repaired_by_resume=True),
    Kind("cache-features-zeroed", "cache:first", zero_npy_data, report="n/a"),
    Kind("cache-features-truncated", "cache:first", truncate, report="n/a"),
]


def target(w: Workspace, kind: Kind) -> Path:
    if kind.path == "cache:first":
        return sorted((w.cache / "features").rglob("*.npy"))[0]
    return w.run_dir / kind.path


def damaged(w: Workspace, kind: Kind) -> tuple[Path, str]:
    """Damage the kind's file in the workspace copy; returns it and the fragment naming it."""
    for rel in kind.prepare:
        (w.run_dir / rel).unlink()
    path = target(w, kind)
    kind.damage(path)
    return path, path.name if kind.path == "cache:first" else kind.path


def param(kind: Kind, reason: Optional[str]):
    marks = [pytest.mark.xfail(strict=True, reason=f"#13 phase 2: {reason}")] if reason else []
    return pytest.param(kind, id=kind.id, marks=marks)


@pytest.mark.parametrize("kind", [param(k, k.resume) for k in KINDS])
def test_resume_detects_the_damaged_file(ws, run_cli, finished, kind):
    path, name = damaged(ws, kind)
    before = tree(ws.root)
    with guarded(60):
        result = run_cli(*ws.resume())
    if kind.repaired_by_resume:  # an output of every resume: rewritten, with the original values
        assert result[0] == 0, result[2][-2000:]
        pd.testing.assert_frame_equal(metrics_values(ws.run_dir / "metrics.csv"),
                                      metrics_values(finished.run_dir / "metrics.csv"))
        if path.name == "environment.json":
            json.loads(path.read_text())
        return
    assert_refused(result, (name, "delete"))
    assert_unchanged(before, tree(ws.root))


@pytest.mark.parametrize("kind", [param(k, k.report) for k in KINDS if k.report != "n/a"])
def test_report_detects_the_damaged_file(ws, run_cli, kind):
    _, name = damaged(ws, kind)
    before = tree(ws.root)
    with guarded(60):
        result = run_cli("report", str(ws.run_dir), "--report-dir", str(ws.reports))
    assert_refused(result, (name, "delete"))
    assert_unchanged(before, tree(ws.root))


@pytest.mark.parametrize("kind", [param(k, k.recover) for k in KINDS])
def test_deleting_the_damaged_file_and_resuming_reproduces_the_metrics(ws, run_cli, finished, kind):
    path, _ = damaged(ws, kind)
    path.unlink()
    with guarded(60):
        code, _, err = run_cli(*ws.resume())
    assert code == 0, err[-2000:]
    pd.testing.assert_frame_equal(metrics_values(ws.run_dir / "metrics.csv"),
                                  metrics_values(finished.run_dir / "metrics.csv"))
    if kind.path.startswith("checkpoints/dfu/model"):  # the model was retrained: same weights
        from safetensors.torch import load_file

        a = load_file(str(finished.run_dir / "checkpoints/dfu/model.safetensors"))
        b = load_file(str(ws.run_dir / "checkpoints/dfu/model.safetensors"))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
