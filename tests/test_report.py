"""Reports from a hand-made run directory: every file, tables, paper rows, and the generated findings.

The run directory is built in tmp_path with known numbers (2 seed sets, N = 50,
so KID leads): above the largest training resolution (64 px) DFU is better at
96 px and worse at 128 px, where its KID is 4x its value at 64 px (a collapse).
Runs in two FID modes carry legacy numbers of LEGACY_SCALE x the clean ones.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from bench.config import parse_suite
from bench.errors import BenchError
from bench.report import write_report
from bench.results import aggregate
from bench.rundir import COPIED_FILES, REPORT_FILES, RunDir
from bench.summary import summarize

GRID = [32, 64, 96, 128]
KID = {"unet-multires": [0.010, 0.012, 0.030, 0.020], "dfu": [0.008, 0.010, 0.020, 0.040],
       "bilinear-up": [0.050, 0.050, 0.050, 0.050]}
FID = {"unet-multires": [22.0, 26.0, 35.0, 40.0], "dfu": [20.0, 25.0, 30.0, 60.0],
       "bilinear-up": [80.0, 80.0, 80.0, 80.0]}
ADAPTER = {"unet-multires": "unet", "dfu": "dfu", "bilinear-up": "bilinear"}
TRAIN = {"unet-multires": "32/64", "dfu": "32/64", "bilinear-up": "64"}
MAPPING = {"dfu": "dfu", "unet-multires": "unet-multires"}
LEGACY_SCALE = {"clean": 1.0, "legacy": 0.8}  # legacy FID/KID = 0.8 x clean: same orderings, other values


def suite(report: dict | None = None, models=("unet-multires", "dfu", "bilinear-up"), modes=("clean",)) -> dict:
    train = {"resolutions": [32, 64], "steps": 10}
    specs = {"unet-multires": {"adapter": "unet", "train": train}, "dfu": {"adapter": "dfu", "train": train},
             "bilinear-up": {"adapter": "bilinear", "source": "dfu", "base_resolution": 64}}
    data = {"name": "fake", "description": "hand-made numbers for report tests", "dataset": {"kind": "toyfaces"},
            "models": [{"name": m, **specs[m]} for m in models],
            "sample": {"resolutions": GRID, "n": 50, "seeds": [0, 1]}, "metrics": {"fid_mode": list(modes)}}
    if report is not None:
        data["report"] = report
    return data


def make_run(run_dir: Path, data: dict) -> Path:
    """A finished run's files: metrics.csv, suite.yaml, environment.json, samples/, references/, model cards."""
    cfg = parse_suite(data)
    rng = np.random.default_rng(0)
    rows = []
    for j, r in enumerate(GRID):
        ref = rng.integers(0, 256, (8, r, r, 3), dtype=np.uint8)
        (run_dir / "references").mkdir(parents=True, exist_ok=True)
        np.savez(run_dir / "references" / f"r{r:03d}.npz", images=ref, indices=np.arange(8))
        for m in (m.name for m in cfg.models):
            for s, k in ((0, 0.9), (1, 1.1)):  # seed sets at -10% and +10%: mean is the value
                rows += [{"model": m, "adapter": ADAPTER[m], "train_resolutions": TRAIN[m],
                          "sample_resolution": r, "seed_set": s, "n": 50, "n_ref": 50,
                          "fid": FID[m][j] * k * LEGACY_SCALE[mode], "kid": KID[m][j] * k * LEGACY_SCALE[mode],
                          "fid_se": 0.3, "kid_se": 0.0005,  # bootstrap SEs small enough to separate every pair
                          "fid_mode": mode, "seconds": 1.0} for mode in cfg.metrics.fid_modes]
                folder = run_dir / "samples" / m
                folder.mkdir(parents=True, exist_ok=True)
                np.savez(folder / f"r{r:03d}_s{s}.npz", images=rng.integers(0, 256, (4, r, r, 3), dtype=np.uint8),
                         seeds=np.arange(s * 50, s * 50 + 4), seconds=1.0)
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    (run_dir / "suite.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (run_dir / "environment.json").write_text(json.dumps({
        "time": "2026-01-01T00:00:00+00:00", "git_commit": "0123456789abcdef0123", "git_dirty": False,
        "python": "3.11.7", "device": "cuda:0", "device_name": "Fake GPU 80GB",
        "versions": {"torch": "9.9.9", "clean-fid": "0.1.35"}}))
    card = {"arch": "cpu-tiny", "mode": "dual", "params_total": 1000, "params_spectral": 600, "params_spatial": 400,
            "flops_per_forward": {str(r): 1e9 * r for r in GRID}, "train_step_memory": None}
    (run_dir / "checkpoints" / "dfu").mkdir(parents=True)
    (run_dir / "checkpoints" / "dfu" / "model_card.json").write_text(json.dumps(card))
    return run_dir


@pytest.fixture(scope="module")
def lsun_report(tmp_path_factory):
    """`bench report RUN --report-dir OUT` on a run whose suite names the LSUN-Church numbers,
    in clean (primary) and legacy mode, as the paper suites are."""
    from bench.cli import main

    root = tmp_path_factory.mktemp("lsun")
    run = make_run(root / "results" / "fake" / "run1", suite({"reference": "lsun_church",
                                                              "reference_models": MAPPING},
                                                             modes=("clean", "legacy")))
    assert main(["report", str(run), "--report-dir", str(root / "reports")]) == 0
    return run, root / "reports" / "fake"


@pytest.fixture(scope="module")
def plain_report(tmp_path_factory):
    """The same numbers from a suite that names no published dataset (toyfaces)."""
    root = tmp_path_factory.mktemp("plain")
    run = make_run(root / "run1", suite())
    cfg = parse_suite(yaml.safe_load((run / "suite.yaml").read_text()))
    dest = write_report(run, cfg, pd.read_csv(run / "metrics.csv").to_dict("records"), root / "reports")
    return run, dest


def section(md: str, title: str) -> str:
    """The text of a Markdown section, up to the next heading of any level."""
    start = md.index(title)
    nxt = re.search(r"\n#+ ", md[start + len(title):])
    return md[start: start + len(title) + (nxt.start() if nxt else len(md))]


# ------------------------------------------------------------------- files


def test_every_file_in_run_dir_and_report_dir(lsun_report):
    run, dest = lsun_report
    for folder in (run, dest):
        for name in REPORT_FILES + COPIED_FILES:
            assert (folder / name).is_file(), f"{folder}/{name}"
        assert not list(folder.rglob("*.tmp")) and not list(folder.rglob(".*.tmp")), "temporary files left"
    for name in ("fig2.png", "samples.png", "fig5.png"):
        assert (run / name).read_bytes() == (dest / name).read_bytes()
        with Image.open(dest / name) as im:
            assert im.width >= 600 and im.height >= 300, (name, im.size)


def test_report_dir_defaults_to_reports_in_cwd(tmp_path, run_cli, monkeypatch):
    run = make_run(tmp_path / "results" / "fake" / "r", suite())
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("report", str(run))
    assert code == 0, err
    assert (tmp_path / "reports" / "fake" / "index.md").is_file()
    assert out.strip() == str(Path("reports") / "fake")


def test_samples_panel_keeps_native_relative_size(lsun_report):
    """Columns hold k = largest // r images (at most 4) at native size: 4x32, 2x64, 1x96, 1x128."""
    _, dest = lsun_report
    idx = (dest / "index.md").read_text()
    assert "native relative size" in idx
    from bench.figures import _compose

    cells = [[[np.zeros((r, r, 3), np.uint8)] * k for r, k in zip(GRID, (4, 2, 1, 1))]]
    canvas, xs, ys = _compose(cells, gap=8)
    # widths 4*32+3*4, 2*64+4, 96, 128 and 3 gaps of 8
    assert canvas.shape == (128, 140 + 132 + 96 + 128 + 3 * 8, 3)


# ------------------------------------------------------------------ tables


def _tex_rows(table: str) -> dict[str, list[str]]:
    """Row label -> cells of one LaTeX table."""
    body = [l for l in table.splitlines() if l.endswith(r"\\") and not l.startswith(("model", " &"))]
    return {l.split(" & ")[0]: l.removesuffix(r" \\").split(" & ")[2:] for l in body}


def test_latex_tables(lsun_report):
    _, dest = lsun_report
    tex = (dest / "table.tex").read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 4  # KID and FID, per mode
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 4
    tables = {t.split(r"\label{", 1)[1].split("}", 1)[0]: t for t in tex.split(r"\begin{table}")[1:]}
    assert list(tables) == ["tab:fake-kid-clean", "tab:fake-fid-clean", "tab:fake-kid-legacy", "tab:fake-fid-legacy"]
    clean, legacy = _tex_rows(tables["tab:fake-fid-clean"]), _tex_rows(tables["tab:fake-fid-legacy"])
    # the paper's numbers (EDM fid.py) stand beside the legacy table only
    assert list(clean) == ["unet-multires", "dfu", "bilinear-up"]
    assert list(legacy) == ["unet-multires", "dfu", "bilinear-up", "paper: dfu", "paper: unet-multires"]
    # lowest FID of a trained model in each column (32, 64, 96: dfu; 128: unet-multires) is bold
    assert [c.startswith(r"\textbf{") for c in clean["dfu"]] == [True, True, True, False]
    assert [c.startswith(r"\textbf{") for c in clean["unet-multires"]] == [False, False, False, True]
    # mean of 18 and 22, sample std, and the interval 20 +- 1.96 * sqrt(2 * 0.3^2) / 2
    assert clean["dfu"][0] == r"\textbf{20.00 $\pm$ 2.83 [19.58, 20.42]}"
    assert legacy["dfu"][0] == r"\textbf{16.00 $\pm$ 2.26 [15.58, 16.42]}"  # 0.8 x
    assert not any(r"\textbf" in c for c in legacy["bilinear-up"] + legacy["paper: dfu"])
    assert legacy["paper: dfu"] == ["1.31", "2.40", "3.43", "4.86"]
    assert legacy["paper: unet-multires"][1] == ""  # the authors logged no 64 px value
    assert "edm-fid" in tables["tab:fake-fid-legacy"] and "32--96" in tables["tab:fake-fid-legacy"]
    assert "legacy mode (EDM fid.py protocol)" in tables["tab:fake-fid-legacy"]
    assert "clean-fid clean mode" in tables["tab:fake-fid-clean"] and "edm-fid" not in tables["tab:fake-fid-clean"]


def test_reference_rows_only_beside_their_protocol(lsun_report, plain_report):
    md = (lsun_report[1] / "table.md").read_text()
    clean, legacy = section(md, "## FID, clean mode"), section(md, "## FID, legacy mode")
    assert md.index("## FID, clean mode") < md.index("## FID, legacy mode")  # the primary mode first
    assert "| paper: dfu | 32-96 | 1.31 | 2.40 | 3.43 | 4.86 | edm-fid | 50k |" in legacy
    assert "fid_results_dual.txt" in legacy and "| dfu | 32/64 |" in legacy and "| this run |" in legacy
    assert "the `legacy` mode, EDM fid.py's protocol" in legacy and "their protocol is this table's" in legacy
    assert "paper:" not in clean and "| this run |" not in clean
    assert "clean-fid's `clean` mode" in clean
    assert ("The published numbers for lsun_church (edm-fid) are comparable only with numbers of EDM fid.py's "
            "protocol (bench/paper.py), not with clean-fid clean mode, so this table leaves them out") in clean
    assert "they stand beside this run's legacy mode (EDM fid.py protocol) table" in clean
    for kid in (section(md, "## KID, clean mode"), section(md, "## KID, legacy mode")):
        assert "paper:" not in kid
    plain = (plain_report[1] / "table.md").read_text()
    assert "paper:" not in plain and "paper" not in (plain_report[1] / "table.tex").read_text()
    assert "no published numbers exist" in section(plain, "## FID")
    assert "no published numbers exist" in (plain_report[1] / "index.md").read_text()


def test_clean_only_run_shows_no_paper_numbers_and_says_why(tmp_path):
    run = make_run(tmp_path / "run", suite({"reference": "lsun_church", "reference_models": MAPPING}))
    cfg = parse_suite(yaml.safe_load((run / "suite.yaml").read_text()))
    write_report(run, cfg, pd.read_csv(run / "metrics.csv").to_dict("records"))
    md, tex, idx = (run / "table.md").read_text(), (run / "table.tex").read_text(), (run / "index.md").read_text()
    assert "paper:" not in md and "paper:" not in tex and "edm-fid" not in tex
    assert "so this table leaves them out" in md and "add legacy to metrics.fid_mode" in md
    assert "the published FID values are not drawn: their protocol is not clean-fid clean mode" in idx
    assert "add legacy to metrics.fid_mode" in section(idx, "## Findings")
    assert "Published numbers for lsun_church" not in idx  # no comparison sentences across protocols


def test_legacy_primary_draws_the_paper_points(tmp_path):
    run = make_run(tmp_path / "run", suite({"reference": "lsun_church", "reference_models": MAPPING},
                                           modes=("legacy", "clean")))
    cfg = parse_suite(yaml.safe_load((run / "suite.yaml").read_text()))
    write_report(run, cfg, pd.read_csv(run / "metrics.csv").to_dict("records"))
    idx = (run / "index.md").read_text()
    assert "hollow squares: 7 published FID values" in idx
    assert "FID mode: legacy mode (EDM fid.py protocol), the suite's primary" in idx
    md = (run / "table.md").read_text()
    assert md.index("## FID, legacy mode") < md.index("## FID, clean mode")


def test_reference_outside_the_grid_is_named_not_drawn(tmp_path):
    run = make_run(tmp_path / "run", suite({"reference": "ffhq"}, modes=("legacy",)))  # FFHQ: one number, at 160 px
    cfg = parse_suite(yaml.safe_load((run / "suite.yaml").read_text()))
    write_report(run, cfg, pd.read_csv(run / "metrics.csv").to_dict("records"))
    md, idx = (run / "table.md").read_text(), (run / "index.md").read_text()
    assert "paper:" not in md
    assert "lie at 160-160 px, outside this run's 32-128 px" in md
    assert "no published value lies inside this run's resolution range" in idx
    assert "Published numbers for ffhq" not in idx  # nothing to compare, so no comparison sentences


def test_csv_round_trips(lsun_report):
    run, dest = lsun_report
    t = pd.read_csv(dest / "table.csv")
    assert list(t.columns) == ["model", "train_resolutions", "sample_resolution", "metric", "mean", "std",
                               "ci_low", "ci_high", "interval", "train_seeds", "seed_sets", "n", "fid_impl"]
    assert (t["interval"] == "bootstrap over samples").all() and (t["train_seeds"] == 1).all()
    assert len(t) == 3 * len(GRID) * 2 * 2 and set(t["metric"]) == {"kid", "fid"}  # x 2 FID modes
    assert (t["seed_sets"] == 2).all() and (t["n"] == 50).all()
    impl = {"clean": "clean-fid clean mode", "legacy": "legacy mode (EDM fid.py protocol)"}
    assert set(t["fid_impl"]) == set(impl.values())
    agg = aggregate(pd.read_csv(run / "metrics.csv"))
    assert len(agg) == 3 * len(GRID) * 2  # one row per mode: modes are never averaged together
    for metric in ("kid", "fid"):
        mine = t[t["metric"] == metric].set_index(["model", "sample_resolution", "fid_impl"])
        for _, row in agg.iterrows():
            got = mine.loc[(row["model"], row["sample_resolution"], impl[row["fid_mode"]])]
            assert got["mean"] == pytest.approx(row[metric]) and got["std"] == pytest.approx(row[f"{metric}_std"])
    by = t.set_index(["model", "sample_resolution", "metric", "fid_impl"])
    assert by.loc[("dfu", 128, "kid", impl["clean"]), "mean"] == pytest.approx(0.04)
    assert by.loc[("dfu", 128, "kid", impl["legacy"]), "mean"] == pytest.approx(0.032)


# ------------------------------------------------------------------- index


def test_index_puts_it_together(lsun_report):
    _, dest = lsun_report
    idx = (dest / "index.md").read_text()
    for link in ("(fig2.png)", "(samples.png)", "(fig5.png)", "(table.md)", "(table.csv)", "(table.tex)",
                 "(suite.yaml)", "(environment.json)", "(metrics.csv)"):
        assert link in idx, link
    assert "Run `run1`" in idx and "cuda:0 (Fake GPU 80GB)" in idx and "torch 9.9.9" in idx
    assert "`0123456789ab`" in idx
    assert "### Model cards" in idx and "| dfu | cpu-tiny (dual) | 1,000 |" in idx
    findings = section(idx, "## Findings")
    assert ("above 64 px: dfu is better at 96 px (dfu 0.0200 [0.0193, 0.0207], unet-multires 0.0300 [0.0293, "
            "0.0307]); unet-multires is better at 128 px (dfu 0.0400 [0.0393, 0.0407], unet-multires 0.0200 "
            "[0.0193, 0.0207])") in findings
    assert "dfu collapses at 128 px (0.0400 = 4.0x its 0.0100 at 64 px)" in findings
    assert "more than 3x its KID" in findings  # the rule is stated
    assert "the orderings agree at 2 of the 3 resolved" in findings  # against the legacy numbers, the paper's protocol
    assert "ours from legacy mode (EDM fid.py protocol) (N = 50 per point): the same protocol" in findings
    assert "96 px 24.00 [23.58, 24.42] vs 3.43" in findings  # legacy FID of dfu at 96 px: 0.8 x 30
    assert ("Bilinear baseline bilinear-up is worse than the best trained model at 32, 64, 96 and 128 px."
            in findings)
    # Fig. 2 plots the primary mode, clean, so the paper's points are not on it
    assert "FID mode: clean-fid clean mode, the suite's primary" in idx
    assert "lead metric: KID, clean-fid clean mode" in idx
    assert "the published FID values are not drawn: their protocol is not clean-fid clean mode" in idx


def test_fig5_skipped_without_bilinear(tmp_path):
    run = make_run(tmp_path / "run", suite(models=("unet-multires", "dfu")))
    (run / "fig5.png").write_bytes(b"stale")
    cfg = parse_suite(yaml.safe_load((run / "suite.yaml").read_text()))
    write_report(run, cfg, pd.read_csv(run / "metrics.csv").to_dict("records"))
    assert not (run / "fig5.png").exists()
    idx = (run / "index.md").read_text()
    assert "Not drawn: the suite has no baseline model (role baseline)." in idx
    assert "(fig5.png)" not in idx


def test_fig5_without_kept_references_says_so(tmp_path):
    run = make_run(tmp_path / "run", suite())
    (run / "references" / "r128.npz").unlink()
    cfg = parse_suite(yaml.safe_load((run / "suite.yaml").read_text()))
    write_report(run, cfg, pd.read_csv(run / "metrics.csv").to_dict("records"))
    assert (run / "fig5.png").is_file()
    assert "no real images (references/r128.npz)" in (run / "index.md").read_text()


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("report, message", [
    ({"reference": "imagenet"}, "reference 'imagenet' is not a dataset"),
    ({"reference": "lsun_church", "reference_models": {"dfu": "dfu-xl"}}, "'dfu-xl', not a model of lsun_church"),
    ({"reference": "lsun_church", "reference_models": {"nope": "dfu"}}, "names nope, not a model of this suite"),
    ({"reference_models": {"dfu": "dfu"}}, "reference_models needs reference"),
    ({"reference": "lsun_church", "colour": 1}, "report.colour: unknown key"),
])
def test_report_config_errors_are_one_line(report, message):
    with pytest.raises(BenchError) as exc:
        parse_suite(suite(report))
    assert message in str(exc.value) and len(str(exc.value).splitlines()) == 1


# --------------------------------------------------------------- summarize


def frame(values: dict[str, list], grid: list[int], adapters=None, train=None, half: float = 0.001) -> pd.DataFrame:
    """A hand-built aggregate frame: model -> KID per resolution (None = missing), each with the 95%
    interval value +- half (one training seed)."""
    adapters = adapters or {}
    train = train or {}
    return pd.DataFrame([{"model": m, "adapter": adapters.get(m, {"dfu": "dfu"}.get(m, "unet")),
                          "train_resolutions": train.get(m, "16/24/32"), "sample_resolution": r, "kid": v,
                          "kid_lo": None if v is None else v - half, "kid_hi": None if v is None else v + half,
                          "n": 80, "train_seeds": 1} for m, vs in values.items() for r, v in zip(grid, vs)])


def test_summarize_dfu_better_at_40_48_worse_at_64():
    agg = frame({"unet-multires": [0.30, 0.45, 0.44, 0.42], "dfu": [0.25, 0.40, 0.43, 0.61]}, [32, 40, 48, 64])
    s = summarize(agg, "kid")
    assert s[0] == ("Best trained model by KID (lower is better; N = 80 per point) at each sampled resolution, "
                    "where its 95% interval is apart from every other's: 32 px dfu (0.2500 [0.2490, 0.2510]); "
                    "40 px dfu (0.4000 [0.3990, 0.4010]); 48 px dfu (0.4300 [0.4290, 0.4310]); "
                    "64 px unet-multires (0.4200 [0.4190, 0.4210]).")
    assert s[1] == ("dfu vs unet-multires (both trained at 16/24/32 px) by KID, above 32 px: dfu is better at "
                    "40 px (dfu 0.4000 [0.3990, 0.4010], unet-multires 0.4500 [0.4490, 0.4510]) and 48 px "
                    "(dfu 0.4300 [0.4290, 0.4310], unet-multires 0.4400 [0.4390, 0.4410]); unet-multires is better "
                    "at 64 px (dfu 0.6100 [0.6090, 0.6110], unet-multires 0.4200 [0.4190, 0.4210]). "
                    "At or below 32 px dfu is better at 1 of 1 resolutions, unet-multires at 0.")
    assert s[2].endswith("No trained model collapses under this rule; the largest ratio is 2.44x (dfu at 64 px).")
    assert len(s) == 3


def test_summarize_overlapping_intervals_are_not_resolved():
    agg = frame({"unet-multires": [0.30, 0.43191], "dfu": [0.25, 0.43188]}, [32, 48])
    s = summarize(agg, "kid")
    assert ("48 px not resolved at N = 80 with 1 training seed (dfu 0.4319 [0.4309, 0.4329], "
            "unet-multires 0.4319 [0.4309, 0.4329] overlap)") in s[0]
    assert "above 32 px: not resolved at N = 80 with 1 training seed at 48 px" in s[1]
    # a frame without intervals (a metrics.csv without standard errors) resolves nothing
    bare = agg.drop(columns=["kid_lo", "kid_hi"])
    assert all(" is better at" not in x and "beats" not in x for x in summarize(bare, "kid"))
    assert "32 px not resolved" in summarize(bare, "kid")[0]


def test_summarize_names_missing_values():
    agg = frame({"unet-multires": [0.30, 0.40, 0.42], "dfu": [0.25, 0.38, None]}, [32, 48, 64])
    s = summarize(agg, "kid")
    assert "64 px unet-multires (0.4200 [0.4190, 0.4210])" in s[0]
    assert ("above 32 px: dfu is better at 48 px (dfu 0.3800 [0.3790, 0.3810], unet-multires 0.4000 [0.3990, "
            "0.4010]); not compared at 64 px (no value for dfu).") in s[1]
    # nothing at all at a resolution, and no value at the largest training resolution
    agg = frame({"unet-multires": [None, 0.40], "dfu": [None, 0.5]}, [32, 64])
    s = summarize(agg, "kid")
    assert "32 px no value" in s[0]
    assert "Not assessed: unet-multires (no KID at 32 px) and dfu (no KID at 32 px)." in s[-1]


def test_summarize_collapse_rule_is_strict_and_skips_bilinear():
    agg = frame({"dfu": [0.1, 0.3, 0.31], "up": [0.0001, 0.02, 0.03]}, [32, 48, 64], adapters={"up": "bilinear"},
                train={"up": "32"})
    s = summarize(agg, "kid")
    collapse = [x for x in s if x.startswith("Collapse rule")][0]
    assert "dfu collapses at 64 px (0.3100 = 3.1x its 0.1000 at 32 px)." in collapse
    assert "48 px" not in collapse  # exactly 3x is not more than 3x
    assert "up" not in collapse.split("resolution.", 1)[1]
    assert "Bilinear baseline up beats the best trained model at 32, 48 and 64 px." in s
    assert s[0].count("dfu") == 3  # a baseline is never the best trained model


def test_summarize_against_the_paper():
    from bench.paper import reference_frame

    agg = frame({"unet-multires": [0.30, 0.50, 0.40], "dfu": [0.25, 0.40, 0.45]}, [32, 96, 128],
                train={"unet-multires": "32/64/96", "dfu": "32/64/96"})
    agg["fid"] = agg["kid"] * 100
    agg["fid_mode"] = "clean"
    ref = reference_frame("lsun_church", MAPPING)
    s = summarize(agg, "kid", ref, MAPPING)
    assert ("Published numbers for lsun_church come from edm-fid (N=50k); ours from clean-fid clean mode "
            "(N = 80 per point)") in s[-3]
    assert s[-2] == ("The trained model best at the most sampled resolutions here, dfu, against paper: dfu "
                     "(FID, ours vs theirs): 32 px 25.00 vs 1.31; 96 px 40.00 vs 3.43; 128 px 45.00 vs 4.86.")
    assert s[-1] == ("dfu vs unet-multires by FID at the resolutions both sources have (32, 96 and 128 px): "
                     "in the paper dfu is better at 32, 96 and 128 px; here dfu is better at none of them "
                     "(not resolved at N = 80 with 1 training seed at 32, 96 and 128 px); the orderings agree at 0 "
                     "of the 0 resolved here.")
    agg["fid_lo"], agg["fid_hi"] = agg["fid"] - 1, agg["fid"] + 1
    s = summarize(agg, "kid", ref, MAPPING)
    assert s[-1].endswith("here dfu is better at 32 and 96 px; the orderings agree at 2 of the 3 resolved here.")
    unmapped = summarize(agg, "kid", ref, {})
    assert "has no counterpart among the published models" in unmapped[-1]


def test_fig5_not_drawn_without_generated_samples(tmp_path):
    run = make_run(tmp_path / "run", suite())
    for m in ("bilinear-up", "dfu"):
        (run / "samples" / m / "r128_s0.npz").unlink()
    cfg = parse_suite(yaml.safe_load((run / "suite.yaml").read_text()))
    write_report(run, cfg, pd.read_csv(run / "metrics.csv").to_dict("records"))
    assert not (run / "fig5.png").exists()
    assert "Not drawn: no samples of bilinear-up at 128 px in the run directory" in (run / "index.md").read_text()


def test_samples_of_runs_before_seed_sets_are_found(tmp_path):
    run = RunDir(make_run(tmp_path / "run", suite()))
    assert run.samples_to_read("dfu", 32, 0) == run.root / "samples" / "dfu" / "r032_s0.npz"
    (run.root / "samples" / "dfu" / "r032_s0.npz").rename(run.root / "samples" / "dfu" / "r032.npz")
    assert run.samples_to_read("dfu", 32, 0) == run.root / "samples" / "dfu" / "r032.npz"


def test_summary_compares_a_fine_tune_with_its_base():
    import pandas as pd

    from bench.summary import summarize

    rows = [(m, a, r, v) for m, a, vals in (("dfu", "dfu", (0.10, 0.30, 0.60)), ("dfu+ft", "dfu", (0.11, 0.25, 0.70)))
            for r, v in zip((32, 48, 64), vals)]
    agg = pd.DataFrame([{"model": m, "adapter": a, "train_resolutions": "16/32", "sample_resolution": r, "kid": v,
                         "kid_lo": v - 0.001, "kid_hi": v + 0.001, "n": 80} for m, a, r, v in rows])
    lines = summarize(agg, "kid", finetunes={"dfu+ft": "dfu"})
    ft = [ln for ln in lines if ln.startswith("dfu+ft (fine-tuned from dfu) vs dfu")]
    assert len(ft) == 1
    assert "dfu+ft is better at 48 px (dfu+ft 0.2500 [0.2490, 0.2510], dfu 0.3000 [0.2990, 0.3010])" in ft[0]
    assert "dfu is better at 64 px (dfu+ft 0.7000 [0.6990, 0.7010], dfu 0.6000 [0.5990, 0.6010])" in ft[0]


def test_overlapping_intervals_get_no_better_finding_and_no_bold(tmp_path):
    """#15: two models whose 95% intervals overlap get no "better" finding and no bold; separated ones do."""
    from bench.tables import latex_tables

    cfg = parse_suite(suite(models=("unet-multires", "dfu")))

    def rows(dfu_kid: float) -> pd.DataFrame:
        # one training seed, two seed sets, bootstrap SE 0.002 each: interval mean +- 1.96 * 0.002 / sqrt(2)
        return pd.DataFrame([{"model": m, "adapter": ADAPTER[m], "train_resolutions": "32/64", "sample_resolution": r,
                              "seed_set": s, "n": 50, "n_ref": 50, "fid": 10.0, "fid_se": 0.5,
                              "kid": (dfu_kid if m == "dfu" else 0.100) + d, "kid_se": 0.002, "fid_mode": "clean"}
                             for m in ("unet-multires", "dfu") for r in (32, 128) for s, d in ((0, -1e-4), (1, 1e-4))])

    for dfu_kid, resolved in ((0.101, False), (0.120, True)):
        df = rows(dfu_kid)
        agg = aggregate(df)
        assert (agg["interval"] == "bootstrap over samples").all()
        half = 1.959963984540054 * np.sqrt(2 * 0.002 ** 2) / 2
        assert agg["kid_hi"].iloc[0] - agg["kid"].iloc[0] == pytest.approx(half)
        findings = summarize(agg, "kid")
        pair = [x for x in findings if x.startswith("dfu vs unet-multires")][0]
        tex = latex_tables(cfg, df)
        kid_tex = tex[tex.index("KID"):]
        if resolved:
            assert "unet-multires is better at 128 px" in pair and "not resolved" not in pair
            assert "32 px unet-multires (0.1000" in findings[0]
            assert kid_tex.count("\\textbf{") == 2  # unet-multires at 32 and 128 px
        else:
            assert "better" not in pair and "not resolved at N = 50 with 1 training seed at 128 px" in pair
            assert "not resolved at N = 50 with 1 training seed" in findings[0] and "best" not in findings[0][40:]
            assert "\\textbf{" not in kid_tex
        # the FID intervals (10 +- 0.69 for both) overlap: never bold, never better
        fid_tex = tex[tex.index("FID"):tex.index("KID")] if tex.index("FID") < tex.index("KID") else tex[tex.index("FID"):]
        assert "\\textbf{" not in fid_tex


def test_training_seeds_give_a_t_interval():
    from scipy import stats

    rows = [{"model": "dfu", "adapter": "dfu", "train_resolutions": "16/24", "sample_resolution": 32, "seed_set": s,
             "train_seed": t, "n": 40, "n_ref": 40, "kid": k + 0.001 * s, "fid": 1.0, "fid_mode": "clean"}
            for t, k in ((0, 0.10), (1, 0.12), (2, 0.14)) for s in (0, 1)]
    agg = aggregate(pd.DataFrame(rows))
    assert agg.loc[0, "train_seeds"] == 3 and agg.loc[0, "seed_sets"] == 2
    assert agg.loc[0, "interval"] == "t over training seeds"
    half = stats.t.ppf(0.975, 2) * 0.02 / np.sqrt(3)  # per-seed means 0.1005, 0.1205, 0.1405: sd 0.02
    assert agg.loc[0, "kid"] == pytest.approx(0.1205)
    assert (agg.loc[0, "kid_lo"], agg.loc[0, "kid_hi"]) == pytest.approx((0.1205 - half, 0.1205 + half))


def test_correlation_length_verdicts():
    """The grf answer (bench.summary.correlation_length_sentences), every verdict from hand-built intervals:
    trained at 16/32 px, sampled at 64 px where the physical length is 0.12 image widths and the pixel
    length 0.12 * 32 / 64 = 0.06."""
    from bench.summary import correlation_length_sentences

    at64 = {"phys": (0.118, 0.110, 0.125), "pix": (0.061, 0.055, 0.065), "wide": (0.090, 0.050, 0.130),
            "between": (0.090, 0.080, 0.100), "low": (0.030, 0.020, 0.040), "high": (0.200, 0.180, 0.220),
            "no-ci": (0.100, None, None), "bilinear": (0.060, 0.059, 0.061)}
    rows = []
    for m, (v, lo, hi) in at64.items():
        role = "baseline" if m == "bilinear" else "spatial"
        for r, (vv, ll, hh) in ((32, (0.12, 0.11, 0.13)), (64, (v, lo, hi))):
            rows.append({"model": m, "role": role, "adapter": "unet", "train_resolutions": "16/32",
                         "sample_resolution": r, "grf_corr_length": vv, "grf_corr_length_lo": ll,
                         "grf_corr_length_hi": hh, "grf_corr_length_expected": 0.12, "n": 24, "train_seeds": 3})
    lines = correlation_length_sentences(pd.DataFrame(rows))
    verdicts = {"phys": "physical", "pix": "pixel", "wide": "not resolved", "between": "between the two",
                "low": "neither (outside both, nearer the pixel)",
                "high": "neither (outside both, nearer the physical)",
                "no-ci": "no interval"}
    assert lines[0].startswith("Correlation-length answer (does a model keep the physical correlation length above "
                               "its training resolutions, or the pixel one?), at N = 24 with 3 training seeds: ")
    for m, verdict in verdicts.items():
        assert f"{m}: {verdict} at 1 of 1" in lines[0], (m, lines[0])
    assert "bilinear" not in " ".join(lines)  # a baseline is not asked the question
    body = {line.split(" ")[0]: line for line in lines[1:]}
    assert set(body) == set(verdicts)
    assert body["phys"] == ("phys (trained at 16/32 px), correlation length in image widths above 32 px "
                            "(95% interval): 64 px 0.1180 [0.1100, 0.1250] vs physical 0.1200 and pixel 0.0600: physical.")
    # nothing to answer: no grf columns, or no rows above the largest training resolution
    assert correlation_length_sentences(pd.DataFrame(rows).drop(columns=["grf_corr_length"])) == []
    assert correlation_length_sentences(pd.DataFrame([r for r in rows if r["sample_resolution"] == 32])) == []
