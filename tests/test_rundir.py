"""The run directory has one owner: RunDir builds every path, LAYOUT lists them, the README agrees."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bench import rundir
from bench.io import PROJECT_ROOT, read_json_object, read_sidecar, write_with_sidecar
from bench.rundir import LAYOUT, TRANSIENT, RunDir

README = PROJECT_ROOT / "README.md"
MARKER = "<!-- run-directory listing"


def pattern_regex(pattern: str) -> re.Pattern:
    """'samples/<model>/rNNN_sS.npz' -> a regex for the relative paths it stands for."""
    rx = re.escape(pattern)
    for token, part in (("<model>", r"[^/]+"), ("KKKKK", r"\d{5}"), ("NNN", r"\d{3}"), ("_sS", r"_s\d+")):
        rx = rx.replace(re.escape(token), part)
    return re.compile(rx + "$")


def matching(relative: str) -> list[str]:
    return [p for p, _ in LAYOUT if pattern_regex(p).match(relative)]


def readme_listing() -> list[str]:
    """The backticked first column of the README's run-directory table."""
    text = README.read_text()
    assert MARKER in text, "the README's run-directory listing lost its marker comment"
    rows = []
    for line in text.split(MARKER, 1)[1].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        m = re.match(r"^\| `([^`]+)` \|", line)
        if m:
            rows.append(m.group(1))
    return rows


def test_every_path_matches_its_layout_entry(tmp_path):
    run = RunDir.of(tmp_path / "results", "smoke", "r1")
    assert run.root == tmp_path / "results" / "smoke" / "r1" and run.name == "r1"
    paths = [run.suite_yaml, run.environment_json, run.checkpoint("dfu+ft"), run.train_state("dfu+ft"),
             run.model_card("dfu+ft"), run.samples("dfu+ft", 16, 2), run.sample_part("dfu+ft", 160, 0, 7),
             run.reference(48), run.preview("dfu+ft", 24), run.metrics_csv, *run.report_files()]
    for path in paths:
        relative = run.relative(path)
        assert len(matching(relative)) == 1, relative
    assert run.relative(run.samples("m", 16, 2)) == "samples/m/r016_s2.npz"
    assert run.sample_part("m", 16, 2, 7).parent == run.sample_parts("m", 16, 2)
    assert [p.name for p in run.report_files()] == list(rundir.REPORT_FILES)
    assert {p.name for p in run.copied_files()} == {run.metrics_csv.name, run.suite_yaml.name,
                                                    run.environment_json.name}


def test_samples_of_runs_before_seed_sets_are_read(tmp_path):
    run = RunDir(tmp_path)
    old = run.samples("dfu", 32, 0).with_name("r032.npz")
    assert run.samples_to_read("dfu", 32, 0) == run.samples("dfu", 32, 0)  # nothing there: the current name
    old.parent.mkdir(parents=True)
    old.write_bytes(b"")
    assert run.samples_to_read("dfu", 32, 0) == old
    run.samples("dfu", 32, 0).write_bytes(b"")
    assert run.samples_to_read("dfu", 32, 0) == run.samples("dfu", 32, 0)


def test_readme_lists_the_layout():
    assert readme_listing() == [p for p, _ in LAYOUT]
    assert set(TRANSIENT) <= {p for p, _ in LAYOUT}


# names and pieces of run-directory paths: only bench/rundir.py may spell them
RUN_DIR_NAMES = ("suite.yaml", "environment.json", "metrics.csv", "model.safetensors", "model.json",
                 "train_state", "model_card.json", ".parts", "index.md", "fig2.png", "samples.png", "fig5.png",
                 "table.md", "table.csv", "table.tex", "samples/", "references/", "previews/", "checkpoints/")
RUN_DIR_FOLDERS = ("samples", "references", "previews", "checkpoints")


def string_constants(path: Path):
    """(line, text, joined by '/'?) of every string constant in a module, f-string pieces included,
    docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings, joined = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            joined.update({id(node.left), id(node.right)})
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value, id(node) in joined


@pytest.mark.parametrize("path", sorted(p for p in (PROJECT_ROOT / "bench").glob("*.py") if p.name != "rundir.py"),
                         ids=lambda p: p.name)
def test_no_module_but_rundir_spells_run_directory_paths(path):
    spelled = [f"{path.name}:{line}: {text!r}" for line, text, joined in string_constants(path)
               if any(name in text for name in RUN_DIR_NAMES) or (joined and text in RUN_DIR_FOLDERS)]
    assert not spelled, "build these paths with bench.rundir.RunDir:\n" + "\n".join(spelled)


def test_a_model_per_training_seed_has_its_own_paths_in_the_same_layout(tmp_path):
    from bench.rundir import model_key, model_of_key

    run = RunDir(tmp_path)
    assert model_key("dfu+ft") == "dfu+ft" and model_key("dfu+ft", 2) == "dfu+ft@t2"
    assert model_of_key("dfu+ft@t2") == ("dfu+ft", 2) and model_of_key("dfu+ft") == ("dfu+ft", None)
    key = model_key("dfu", 1)
    for path in (run.checkpoint(key), run.train_state(key), run.model_card(key), run.samples(key, 16, 0),
                 run.sample_part(key, 16, 0, 3), run.preview(key, 16)):
        assert len(matching(run.relative(path))) == 1, path
    assert run.checkpoint(key) != run.checkpoint(model_key("dfu", 2))
    run.model_card(key).parent.mkdir(parents=True)
    run.model_card(key).write_text("{}")
    assert list(run.model_cards()) == ["dfu"]  # one card per model, named as the suite names it


def test_a_sidecar_is_believed_only_for_the_file_it_describes(tmp_path):
    """Converted weights (Inception for clean-fid and for torch-fidelity) keep their metadata in
    <name>.json with the file's sha256; a sidecar that does not describe the file is ignored."""
    target = tmp_path / "cache" / "w.bin"
    meta = write_with_sidecar(target, lambda tmp: tmp.write_bytes(b"weights"), {"source": "test"})
    assert meta["source"] == "test" and len(meta["sha256"]) == 64
    assert read_sidecar(target) == meta
    sidecar = target.with_suffix(".json")
    target.write_bytes(b"other weights")  # the file replaced, its sidecar left
    assert read_sidecar(target) is None
    for text in ("{not json", "[1, 2]", ""):
        sidecar.write_text(text)
        assert read_sidecar(target) is None
    sidecar.unlink()
    assert read_sidecar(target) is None

    def interrupted(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    other = tmp_path / "cache" / "x.bin"
    with pytest.raises(KeyboardInterrupt):
        write_with_sidecar(other, interrupted, {})
    assert sorted(p.name for p in other.parent.iterdir()) == ["w.bin"]  # nothing half-written


def test_read_json_object_says_what_is_wrong_in_words_that_follow_the_file_name(tmp_path):
    """The one JSON reader behind manifests, checkpoint metadata, sidecars and `bench data prepare`'s
    progress: its ValueError reads on after the file's name in each caller's one-line error."""
    path = tmp_path / "x.json"
    path.write_text('{"a": 1}')
    assert read_json_object(path) == {"a": 1}
    cases = {"{not json": "is not JSON (JSONDecodeError)", "[1, 2]": "is not a JSON object (it holds a list)",
             "null": "is not a JSON object (it holds a NoneType)"}
    for text, why in cases.items():
        path.write_text(text)
        with pytest.raises(ValueError) as exc:
            read_json_object(path)
        assert str(exc.value) == why
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match=r"^is not JSON \(UnicodeDecodeError\)$"):
        read_json_object(path)
    with pytest.raises(ValueError, match=r"^is unreadable \(No such file or directory\)$"):
        read_json_object(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"^is unreadable \(Is a directory\)$"):
        read_json_object(tmp_path)
