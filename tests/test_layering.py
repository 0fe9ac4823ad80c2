"""The import structure of bench/: what loads what."""
from __future__ import annotations

import subprocess
import sys

from bench.io import PROJECT_ROOT


def test_data_prepare_does_not_load_the_networks():
    """`bench data prepare` reads and resizes images; the networks (models.networks, torch modules
    and all) have nothing to do with it, and once took seconds to import for nothing."""
    code = "import bench.prepare, sys; assert 'models.networks' not in sys.modules, sorted(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
