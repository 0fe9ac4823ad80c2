"""benchmarks/authors_compare.py refuses bad input with one line and exit 2 (it never runs the authors'
code here: tests never import it; the comparison itself is a benchmark, benchmarks/README.md)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "authors_compare.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def fake_checkout(tmp_path: Path, body: str) -> Path:
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "__init__.py").write_text("")
    (tmp_path / "training" / "networks.py").write_text(body)
    return tmp_path


@pytest.mark.parametrize("case", ["no-argument", "two-arguments", "not-a-checkout", "missing-dependency",
                                  "another-projects-networks"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    body = {"missing-dependency": "import a_module_nobody_installed\n",
            "another-projects-networks": "class UNet:\n    pass\n"}.get(case)
    args = ([str(fake_checkout(tmp_path, body))] if body else
            {"no-argument": [], "two-arguments": ["a", "b"], "not-a-checkout": [str(tmp_path / "nowhere")]}[case])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = run(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    expect = {"no-argument": "usage", "two-arguments": "usage", "not-a-checkout": "not a checkout of Dahoas/edm",
              "missing-dependency": "a_module_nobody_installed",
              "another-projects-networks": "has no EDMPrecond"}[case]
    assert expect in lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
