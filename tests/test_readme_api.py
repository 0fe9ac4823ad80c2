"""README.md's Python API example runs as written (in a scratch folder, with the project's suites)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- api example: tests/test_readme_api.py runs this block -->"


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "the README lost its API example marker"
    m = re.match(r"\s*```python\n(.*?)```", text.split(MARKER, 1)[1], re.S)
    assert m, "the marker must be followed by a ```python block"
    return m.group(1)


def test_readme_api_example_runs(tmp_path):
    code = readme_example()
    assert "from bench import api" in code
    shutil.copytree(ROOT / "suites", tmp_path / "suites")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # what the example prints: the KID grid, then the metrics of the 40 px samples
    assert "unet-multires" in done.stdout and "sample_resolution" in done.stdout
    assert "'fid':" in done.stdout and "'n_a': 8" in done.stdout
    assert (tmp_path / "dfu_40px.npz").is_file()
    assert list((tmp_path / "results" / "smoke-tiny").glob("*/metrics.csv"))
