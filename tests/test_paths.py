"""Path escapes (issue #13, item 2): run ids, suite names and model names become path
components, so each must be a single component of a safe character set (letters, digits,
'_', '.', '-', not starting with '.', at most 128 characters); anything else gets exit 2
and one `error:` line naming the option or key, before anything is written.

The workspace sits three folders deep in the test's tmp dir, so a run that escapes
results/ by up to four levels still lands inside it, and the whole tmp tree -- the
parents of results/ included -- is snapshotted before and after.
"""
from __future__ import annotations

import pytest
import yaml

from _hostile import (DATA_ONLY, Workspace, assert_refused, assert_unchanged, edited, faces,
                      guarded, tree)

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def ws(tmp_path, monkeypatch, finished, one_thread):
    return Workspace(tmp_path / "outer" / "mid" / "ws", finished).env(monkeypatch)


RUN_IDS = [
    pytest.param("../x", id="parent"),
    pytest.param("../../x", id="grandparent"),
    pytest.param("../../../../x", id="far-up"),
    pytest.param("ABSOLUTE", id="absolute"),
    pytest.param("a/b", id="two-components"),
    pytest.param(".", id="dot"),
    pytest.param("..", id="dotdot"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("", id="empty"),
    pytest.param("x" * 300, id="too-long"),
    pytest.param("a\nb", id="newline"),
    pytest.param("run\u202eexe.sh", id="rtl-override"),
    pytest.param("run\u200b", id="zero-width-space"),
    pytest.param("a\uff0fb", id="fullwidth-slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("-rf", id="leading-dash"),
]


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_run_id_is_one_safe_path_component(ws, run_cli, tmp_path, run_id):
    if run_id == "ABSOLUTE":
        run_id = str(tmp_path / "outer" / "elsewhere")
    args = ["run", ws.suite(base=DATA_ONLY), "--results", str(ws.results), f"--run-id={run_id}"]
    before = tree(tmp_path)
    with guarded(60):
        result = run_cli(*args)
    assert_refused(result, "--run-id")
    assert_unchanged(before, tree(tmp_path), "the test's tmp tree (results/ and its parents)")


@pytest.mark.parametrize("run_id", ["ok-run_1.2", "20261127-142725", "A" * 128],
                         ids=["mixed", "timestamp", "128-chars"])
def test_safe_run_ids_still_run(ws, run_cli, run_id):
    code, _, err = run_cli("run", ws.suite(base=DATA_ONLY), "--results", str(ws.results), "--run-id", run_id)
    assert code == 0, err[-2000:]
    assert (ws.results / DATA_ONLY["name"] / run_id / "metrics.csv").is_file()


@pytest.mark.parametrize("name, says", [
    pytest.param("..", "name:", id="dotdot"),
    pytest.param(".", "name:", id="dot"),
    pytest.param(".hidden", "name:", id="leading-dot"),
    pytest.param("a/b", "name:", id="slash"),
    pytest.param("../x", "name:", id="parent"),
    pytest.param("x" * 300, "name:", id="too-long"),
])
def test_suite_name_is_one_safe_path_component(ws, run_cli, tmp_path, name, says):
    args = ["run", ws.suite(lambda d: d.update(name=name), base=DATA_ONLY), "--results", str(ws.results)]
    before = tree(tmp_path)
    with guarded(60):
        result = run_cli(*args)
    assert_refused(result, f"suite.yaml: {says}")
    assert_unchanged(before, tree(tmp_path), "the test's tmp tree (results/ and its parents)")


@pytest.mark.parametrize("name", [
    pytest.param("..", id="dotdot"),
    pytest.param(".", id="dot"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("a/b", id="slash"),
    pytest.param("../x", id="parent"),
])
def test_model_name_is_one_safe_path_component(ws, run_cli, tmp_path, name):
    """A bilinear model: the name check is the suite's, whatever the adapter, and a trained model
    would cost a model-card subprocess per case today (checked by hand: a trained '..' puts
    model.safetensors, train_state.* and model_card.json into the run directory's root)."""
    args = ["run", ws.suite(lambda d: d["models"][0].update(name=name), base=DATA_ONLY), "--results",
            str(ws.results)]
    before = tree(tmp_path)
    with guarded(60):
        result = run_cli(*args)
    assert_refused(result, "models.0.name:")
    assert_unchanged(before, tree(tmp_path), "the test's tmp tree (results/ and its parents)")


def test_report_of_a_run_whose_suite_is_named_dotdot(ws, run_cli, tmp_path):
    run = ws.copy_finished()
    data = yaml.safe_load((run / "suite.yaml").read_text())
    (run / "suite.yaml").write_text(yaml.safe_dump(edited(data, lambda d: d.update(name="..")), sort_keys=False))
    (ws.root / "fig5.png").write_bytes(b"a file of the user's, beside reports/")
    before = tree(tmp_path)
    result = run_cli("report", str(run), "--report-dir", str(ws.reports))
    assert_refused(result, "name:")
    assert_unchanged(before, tree(tmp_path), "the test's tmp tree (reports/ and its parents)")


def test_prepared_dataset_name_cannot_escape(ws, run_cli, tmp_path):
    """`bench data prepare ../x`: refused by its name check (passes today)."""
    src = ws.pngs("src", faces(2, 16))
    before = tree(tmp_path)
    result = run_cli("data", "prepare", "../x", "--source", src, "--resolutions", "16", "--out", str(ws.data))
    assert_refused(result, "'../x' is not a plain folder name")
    assert_unchanged(before, tree(tmp_path))
