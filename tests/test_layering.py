"""The import structure of bench/: the layers bench/__init__.py writes down are the ones the code has."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

import bench
from bench.io import PROJECT_ROOT

BENCH = PROJECT_ROOT / "bench"
MODELS = PROJECT_ROOT / "models"
# cli.py imports each command's modules inside that command (see its docstring)
LAZY_OK = {"cli"}


def declared_layers() -> dict[str, int]:
    """module -> layer, parsed from bench/__init__.py's docstring ('L3  a, b, c  -- what')."""
    layers = {}
    for line in bench.__doc__.splitlines():
        m = re.match(r"^L(\d+)\s+(.+?)\s+--", line)
        if m:
            for name in m.group(2).split(","):
                assert name.strip() not in layers, f"{name.strip()} is listed twice"
                layers[name.strip()] = int(m.group(1))
    return layers


def imported_modules(path) -> dict[str, list[tuple[str, bool]]]:
    """bench modules imported by a file: name -> [(how, inside a function?)], top level and in functions."""
    tree = ast.parse(path.read_text())
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    out: dict[str, list] = {}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[1] if a.name.startswith("bench.") else "__init__"
                     for a in node.names if a.name.split(".")[0] == "bench"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "bench":  # `from bench import dist` names a module, `__version__` the package
                names = [a.name if (BENCH / f"{a.name}.py").is_file() else "__init__" for a in node.names]
            elif node.module.startswith("bench."):
                names = [node.module.split(".")[1]]
        for name in names:
            out.setdefault(name, []).append((ast.unparse(node), id(node) in inside))
    return out


def graph() -> dict[str, dict[str, list]]:
    return {p.stem: imported_modules(p) for p in sorted(BENCH.glob("*.py"))}


def test_every_module_has_a_layer():
    modules = {p.stem for p in BENCH.glob("*.py")}
    layers = declared_layers()
    assert modules - set(layers) == set(), "modules missing from bench/__init__.py's layers"
    assert set(layers) - modules == set(), "layers name modules that do not exist"


def test_readme_shows_the_same_layers():
    """README.md's architecture table repeats the layers for readers; it must not drift from the docstring."""
    readme = {}
    for line in (PROJECT_ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\| L(\d+) \| (.+?) \|", line)
        if m:
            readme.update({name: int(m.group(1)) for name in re.findall(r"`(\w+)`", m.group(2))})
    declared = {m: layer for m, layer in declared_layers().items() if m not in ("__init__", "__main__")}
    assert readme == declared


def test_no_module_imports_a_higher_layer():
    layers = declared_layers()
    upward = [f"{m} (L{layers[m]}) imports {d} (L{layers[d]}): {how[0][0]}"
              for m, deps in graph().items() for d, how in deps.items() if d != m and layers[d] > layers[m]]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    deps = {m: set(d) - {m} for m, d in graph().items()}
    done: set[str] = set()

    def visit(m, path):
        if m in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        for d in sorted(deps.get(m, ())):
            visit(d, path + [m])
        done.add(m)

    for m in sorted(deps):
        visit(m, [])


def test_bench_modules_are_imported_at_the_top():
    """A bench module imported inside a function hides a dependency (cli.py excepted, see its docstring)."""
    hidden = [f"{m}: {how}" for m, deps in graph().items() if m not in LAZY_OK
              for d, hows in deps.items() for how, inside in hows if inside]
    assert not hidden, "\n".join(hidden)


def test_imports_inside_functions_say_why():
    """Third-party imports inside functions are there for start-up time; a comment shows the measurement."""
    unexplained = []
    for path in sorted(BENCH.glob("*.py")):
        if path.stem in LAZY_OK:
            continue
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    window = "\n".join(lines[max(0, node.lineno - 6):node.lineno])
                    if "importtime" not in window and "# inside" not in window:
                        unexplained.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not unexplained, "\n".join(unexplained)


def test_models_never_import_bench():
    offenders = [f"{p.name}: {how}" for p in sorted(MODELS.glob("*.py"))
                 for d, hows in imported_modules(p).items() for how, _ in hows]
    assert not offenders, "\n".join(offenders)


def test_data_prepare_does_not_load_the_networks():
    """`bench data prepare` reads and resizes images; the networks (models.networks, torch modules
    and all) have nothing to do with it, and once took seconds to import for nothing."""
    code = "import bench.prepare, sys; assert 'models.networks' not in sys.modules, sorted(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_module_opens_with_its_contract():
    missing = [p.relative_to(PROJECT_ROOT).as_posix() for folder in (BENCH, MODELS) for p in sorted(folder.glob("*.py"))
               if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"
