"""Bad input: one clear line per problem, exit 2, and no run directory left behind."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

SMOKE = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"


def suite_with(tmp_path, edit) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    edit(data)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_bad(run_cli, tmp_path, suite: Path):
    results = tmp_path / "results"
    code, out, err = run_cli("run", str(suite), "--results", str(results))
    assert code == 2
    assert not results.exists() or not any(results.rglob("*")), "a bad suite left files behind"
    lines = [l for l in err.strip().splitlines() if l]
    assert lines and all(l.startswith("error: ") for l in lines)
    return lines


def test_help_lists_commands(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for cmd in ("run", "fid", "report", "list"):
        assert cmd in out


def test_unknown_key(run_cli, tmp_path):
    lines = run_bad(run_cli, tmp_path, suite_with(tmp_path, lambda d: d["sample"].update(nn=3)))
    assert len(lines) == 1 and "sample.nn" in lines[0] and "unknown key" in lines[0]


def test_wrong_type_names_key_path(run_cli, tmp_path):
    def edit(d):
        d["models"][1]["train"]["steps"] = "many"
    lines = run_bad(run_cli, tmp_path, suite_with(tmp_path, edit))
    assert len(lines) == 1 and "models.1.train.steps" in lines[0]


def test_missing_dataset_path(run_cli, tmp_path):
    def edit(d):
        d["dataset"] = {"kind": "imagefolder", "path": str(tmp_path / "no-such-folder")}
    lines = run_bad(run_cli, tmp_path, suite_with(tmp_path, edit))
    assert len(lines) == 1 and "no-such-folder" in lines[0]


def test_unknown_model_name(run_cli, tmp_path):
    lines = run_bad(run_cli, tmp_path, suite_with(tmp_path, lambda d: d["models"][0].update(adapter="gan")))
    assert len(lines) == 1 and "'gan'" in lines[0] and "unet" in lines[0]


def test_untrained_adapter_with_a_train_section(run_cli, tmp_path):
    # it used to pass planning and crash in the training stage (KeyError, exit 1)
    def edit(d):
        d["models"][2]["train"] = dict(d["models"][0]["train"])
    lines = run_bad(run_cli, tmp_path, suite_with(tmp_path, edit))
    assert len(lines) == 1 and "models.2 (bilinear-data-24).train" in lines[0] and "not trained" in lines[0]


def test_impossible_resolution(run_cli, tmp_path):
    # cpu-tiny's DFU keeps 8 Fourier rows each side at level 0: 10 px is too coarse
    lines = run_bad(run_cli, tmp_path, suite_with(tmp_path, lambda d: d["sample"].update(resolutions=[16, 10])))
    assert len(lines) == 1 and "models.1 (dfu).sample.resolutions" in lines[0] and "10" in lines[0]


def test_resolution_out_of_range(run_cli, tmp_path):
    lines = run_bad(run_cli, tmp_path, suite_with(tmp_path, lambda d: d["sample"].update(resolutions=[16, 1024])))
    assert len(lines) == 1 and "sample.resolutions.1" in lines[0]


def test_malformed_yaml(run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: [\n  - name: a\n")
    lines = run_bad(run_cli, tmp_path, bad)
    assert len(lines) == 1 and "malformed YAML" in lines[0]


def test_missing_suite_file(run_cli, tmp_path):
    lines = run_bad(run_cli, tmp_path, tmp_path / "nope.yaml")
    assert len(lines) == 1 and "does not exist" in lines[0]


def test_report_of_unfinished_run(run_cli, tmp_path):
    code, _, err = run_cli("report", str(tmp_path))
    assert code == 2 and "metrics.csv" in err


def test_ctrl_c_says_how_to_resume(monkeypatch, run_cli, tmp_path):
    import bench.run

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.run, "run_suite", interrupted)
    smoke = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"
    code, _, err = run_cli("run", str(smoke), "--results", str(tmp_path))
    assert code == 130 and "run the same command again to resume" in err and "--run-id" in err


@pytest.mark.parametrize("args, says", [
    ((), "needs a command"),
    (("frobnicate",), "No such command 'frobnicate'"),
    (("run",), "Missing argument 'suite'"),
    (("run", "x.yaml", "--bogus"), "No such option: --bogus"),
    (("run", "suites/smoke.yaml", "--nproc", "0"), "--nproc"),
    (("fid",), "Missing argument"),
    (("data",), "needs a command"),
    (("data", "prepare", "x", "--resolutions", "32"), "Missing option '--source'"),
    (("model-card", "cpu-tiny", "--memory-batch", "zero"), "--memory-batch"),
])
def test_usage_errors_are_one_line_and_exit_2(run_cli, args, says):
    """typer (0.29 vendors click as a private module) usage errors: no traceback, one line."""
    code, out, err = run_cli(*args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and says in lines[-1] and lines[-1].startswith("error: ")
    assert sum(ln.startswith("error:") for ln in lines) == 1 and "Traceback" not in err + out


def test_version(run_cli):
    from bench import __version__

    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"dfu-bench {__version__}"


def test_unexpected_exception_is_one_line_with_the_saved_traceback(run_cli, monkeypatch, tmp_path):
    import bench.cli

    monkeypatch.setenv("DFU_BENCH_CACHE", str(tmp_path))

    def boom(*a, **k):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(bench.cli, "_arch_from_arg", boom)
    code, out, err = run_cli("model-card", "cpu-tiny")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: unexpected RuntimeError: something broke (full traceback in ")
    saved = next((tmp_path / "logs").glob("crash-*.txt")).read_text()
    assert "Traceback" in saved and "boom" in saved


@pytest.mark.parametrize("cache", ["a-file", "/sys/dfu-bench-cache"])
def test_unexpected_exception_with_an_unusable_cache_is_still_one_line(run_cli, monkeypatch, tmp_path, cache):
    """The crash file goes to the cache: when that cannot be written, the one line says where it
    tried, why it failed and what to set."""
    import bench.cli

    if cache == "a-file":
        cache = tmp_path / "a-file"
        cache.write_text("not a folder\n")
    monkeypatch.setenv("DFU_BENCH_CACHE", str(cache))

    def boom(*a, **k):
        raise RuntimeError("something broke")

    monkeypatch.setattr(bench.cli, "_arch_from_arg", boom)
    code, out, err = run_cli("model-card", "cpu-tiny")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in out + err, err
    assert err.startswith("error: unexpected RuntimeError: something broke (the traceback could not be saved in "
                          f"{cache}/logs: ")
    assert "set $DFU_BENCH_CACHE to a folder you can write to" in err


def test_every_resolutions_option_is_read_by_one_parser(run_cli):
    """bench.images.parse_resolutions reads --resolutions for data prepare (sorted, repeats merged),
    sample and model-card (order kept, a repeat refused)."""
    from bench.errors import BenchError
    from bench.images import parse_resolutions

    assert parse_resolutions("64, 32,,64") == [32, 64]
    assert parse_resolutions("64,32", keep_order=True) == [64, 32]
    for text, kwargs, says in [("64,64", dict(keep_order=True), "names 64 twice"),
                               ("32,x", {}, "'x' is not an integer"),
                               (" , ", {}, "is empty"),
                               ("4", {}, "resolution 4 is out of range")]:
        with pytest.raises(BenchError, match=says):
            parse_resolutions(text, **kwargs)
    code, _, err = run_cli("model-card", "cpu-tiny", "--resolutions", "32,32")
    assert code == 2 and err.startswith("error: --resolutions '32,32' names 32 twice")
    code, _, err = run_cli("model-card", "cpu-tiny", "--resolutions", "32,4096")
    assert code == 2 and "4096 is not a resolution; give pixels from 8 to 2048" in err


def _all_commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _all_commands(sub, path + (name,))


def test_help_texts_survive_rich_markup(run_cli):
    """typer renders help with rich markup, which drops any ``[...]`` it takes for a style tag (a
    "[default: 4096]" vanished from `bench data prepare --help`): no help text may contain one, and
    the defaults stated in words are printed."""
    import re

    import typer.main

    from bench.cli import app

    texts = []
    for path, command in _all_commands(typer.main.get_command(app)):
        texts += [(path, command.help or "")] + [(path + (p.name,), getattr(p, "help", None) or "")
                                                 for p in command.params]
    assert len(texts) > 40
    bracketed = [(path, text) for path, text in texts if re.search(r"\[[^\]]*\]", text)]
    assert not bracketed

    def rendered(*args: str) -> str:  # the help as one line of words, without rich's box drawing
        code, out, _ = run_cli(*args, "--help")
        assert code == 0
        return " ".join(re.sub("[\u2500-\u257f]", " ", out).split())

    out = rendered("data", "prepare")
    assert "(default: 4096)" in out and "(default: $DFU_BENCH_DATA or data/)" in out
    out = rendered("run")
    assert "(default: reports/ beside the results folder)" in out and "--inception " not in out


def test_merge_key_chains_are_not_duplicate_keys():
    """The duplicate-key check sees each mapping as written: an anchored mapping that merges another and
    overrides one of its keys, used through an alias at a shallower depth (so PyYAML flattens it first),
    loads as yaml.safe_load loads it; a key written twice is still refused."""
    from bench.config import DuplicateKey, _SuiteLoader

    def load(text):
        loader = _SuiteLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()

    chain = "base: &base {lr: 1, bs: 2}\nmodels:\n  - train: &mid {<<: *base, lr: 3}\ntop: {<<: *mid, ema: 4}\n"
    assert load(chain) == yaml.safe_load(chain)
    assert load(chain)["top"] == {"lr": 3, "bs": 2, "ema": 4}
    with pytest.raises(DuplicateKey):
        load("base: &b {lr: 1}\ny: {<<: *b, k: 1, k: 2}\n")
