"""Python source that makes some packages unimportable, as on a machine without them: put it at the top of
the code a test runs with `python -c` (a test helper module, imported only by the tests that use it)."""
from __future__ import annotations


def without(*packages: str) -> str:
    """Source that installs an import hook raising ModuleNotFoundError for each of `packages` (top-level
    names) and their submodules, as if they were not installed."""
    return f"""
import importlib.abc, sys
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(packages)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Missing())
"""
