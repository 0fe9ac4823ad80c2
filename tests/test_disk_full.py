"""A disk that fills up in the middle of `bench run`: one `error:` line that says so and how to go
on, exit 2 (not a "please report it" crash), no temporary file left behind, and the same
command finishes the run once there is space again, with the metrics of an undisturbed run
(tests/_hostile.py's finished TINY run).

The failures are the ones the writers raise on a full disk, read off a 2 MB tmpfs (see
bench/cli.py): safetensors' SafetensorError "Error while serializing: I/O error: No space
left on device (os error 28)" for a checkpoint, OSError(ENOSPC) from numpy's savez for a
sample file. Each is injected after the writer has put part of its bytes in the temporary
file, as a real full disk would leave it.
"""
from __future__ import annotations

import errno
import os

import numpy as np
import pandas as pd
import pytest
from safetensors import SafetensorError

import bench.checkpoint
from _hostile import TINY, Workspace, error_lines, metrics_values

pytestmark = pytest.mark.filterwarnings("ignore")


def _full_checkpoint(real, state):
    def save_file(tensors, path, *a, **k):
        if not state["space"]:
            with open(path, "wb") as f:
                f.write(b"\0" * 4096)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, path, *a, **k)
    return save_file


def _full_npz(real, state):
    def savez(file, *a, **k):
        if not state["space"]:
            file.write(b"PK\3\4" + b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(file, *a, **k)
    return savez


@pytest.mark.parametrize("where", ["checkpoint", "sample"])
def test_full_disk_is_one_line_exit_2_and_the_same_command_finishes(tmp_path, monkeypatch, run_cli, one_thread,
                                                                    finished, where):
    state = {"space": False}
    if where == "checkpoint":
        monkeypatch.setattr(bench.checkpoint, "save_file", _full_checkpoint(bench.checkpoint.save_file, state))
    else:
        monkeypatch.setattr(np, "savez", _full_npz(np.savez, state))
    ws = Workspace(tmp_path / "ws").env(monkeypatch)
    args = ws.run("--run-id", "full", "--report-dir", str(ws.reports))

    code, out, err = run_cli(*args)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: no space left on the device") and "run the same command again" in lines[0]
    assert "please report" not in err and "Traceback" not in err + out
    run = ws.results / TINY["name"] / "full"
    assert not (run / "metrics.csv").exists()
    left = list(tmp_path.rglob("*.tmp"))
    assert not left, f"temporary files left behind: {left}"

    state["space"] = True
    code, _, err = run_cli(*args)
    assert code == 0, err
    pd.testing.assert_frame_equal(metrics_values(run / "metrics.csv"), metrics_values(finished.run_dir / "metrics.csv"))
