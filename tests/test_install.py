"""Reproducible installs: the environment holds exactly the versions constraints.txt pins,
and every package the code imports is a declared dependency."""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

from bench.io import PROJECT_ROOT

LOCK = PROJECT_ROOT / "constraints.txt"


def pins() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            out[name] = version
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_installed_versions_are_the_locked_ones():
    locked = {canonical(k): v for k, v in pins().items()}
    installed = {canonical(d.metadata["Name"]): d.version for d in md.distributions()}
    wrong = {n: (v, installed.get(n)) for n, v in locked.items() if installed.get(n) != v}
    assert not wrong, f"installed versions differ from constraints.txt (locked, installed): {wrong}"
    # every runtime dependency of the project is pinned
    requires = md.requires("dfu-bench") or []
    names = {canonical(re.split(r"[ ;<>=!~\\[]", r, maxsplit=1)[0]) for r in requires}
    assert names <= set(locked), sorted(names - set(locked))


def declared_imports() -> set[str]:
    """Top-level modules imported anywhere in bench/ and models/."""
    found = set()
    for folder in ("bench", "models"):
        for path in (PROJECT_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found


# import name -> distribution name, where they differ
DISTRIBUTION = {"cleanfid": "clean-fid", "PIL": "pillow", "yaml": "pyyaml", "torch_fidelity": "torch-fidelity"}


def test_code_imports_only_declared_dependencies():
    requires = {canonical(re.split(r"[ ;<>=!~\\[]", r, maxsplit=1)[0]) for r in md.requires("dfu-bench") or []
                if "extra ==" not in r}
    own = {"bench", "models"}
    third_party = {m for m in declared_imports() if m not in own and m not in sys.stdlib_module_names}
    undeclared = {m for m in third_party if canonical(DISTRIBUTION.get(m, m)) not in requires}
    assert not undeclared, f"imported but not declared in pyproject.toml: {sorted(undeclared)}"
