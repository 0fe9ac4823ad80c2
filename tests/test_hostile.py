"""Hostile input over every subcommand (issue #13): each case gets exit 2, one `error:` line
that names the problem (the fragments in its row), no traceback, and leaves its whole
workspace (results/, reports/, the cache, the inputs, the working directory) byte for byte
as it was.

A row is (id, args built in a fresh workspace, fragments of the error line). Rows the code
does not satisfy yet are strict xfails whose reason says what is missing (#13 phase 2);
tests/HOSTILE.md lists every row with what happens today.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from _hostile import (BUILD_UMASK, DATA_ONLY, FINISHED_ID, TINY, Workspace, assert_refused, assert_unchanged,
                      dfu_checkpoint, faces, guarded, nonfinite_state_dict_file, npz_bytes, tree, with_cache)

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def ws(tmp_path, monkeypatch, finished, one_thread):
    return Workspace(tmp_path / "ws", finished).env(monkeypatch)


def xf(reason: str):
    return pytest.mark.xfail(strict=True, reason=f"#13 phase 2: {reason}")


def case(id, build, says, reason=None, limit=60, skip=None):
    marks = [xf(reason)] if reason else []
    if skip:
        marks.append(pytest.mark.skipif(skip[0], reason=skip[1]))
    return pytest.param(build, says, limit, id=id, marks=marks)


def set_(path: str, value):
    """An edit that sets a dotted key of the suite (models.0.train.lr)."""
    def edit(d):
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = value
    return edit


def models0(**kv):
    return lambda d: d["models"][0].update(kv)


def file_(w: Workspace, name="afile") -> str:
    return w.text(name, "not a folder\n")


ROOT_IS_ROOT = os.geteuid() == 0
NO_CUDA7 = torch.cuda.device_count() <= 7
BIG = 10**30  # YAML reads this literal as a Python int: no float rounding, no overflow at parse time


def alias_bomb(levels: int = 6) -> str:
    """A YAML list whose last element expands to 9**levels strings through aliases."""
    items = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


def bomb_in_overrides(w: Workspace) -> list[str]:
    text = yaml.safe_dump(TINY, sort_keys=False).replace(
        "arch: cpu-tiny\n", f"arch: cpu-tiny\n  arch_overrides: {{dropout: {alias_bomb()}}}\n", 1)
    return ["run", w.text("bomb.yaml", text), "--results", str(w.results)]


def state_dict_file(w: Workspace) -> str:
    """A valid state dict of the authors' EDMPrecond for cpu-tiny (our layout is theirs)."""
    from models.edm import EDMPrecond
    from models.networks import DualUNet, get_arch

    path = w.root / "state.pt"
    torch.save(EDMPrecond(DualUNet(get_arch("cpu-tiny"))).state_dict(), path)
    return str(path)


def images_dir(w: Workspace, name="imgs", n=4, res=16) -> str:
    return w.pngs(name, faces(n, res))


def baseline(w: Workspace, data, name="baseline.json") -> str:
    import json

    return w.text(name, data if isinstance(data, str) else json.dumps(data))


GOOD_BASELINE = {"quality": {"dfu@16": {"fid": 1000.0, "kid": 1.0}}, "throughput": {"kernels": {}}}


def corrupt_metrics(text_or_bytes):
    def build(w: Workspace):
        run = w.copy_finished()
        data = text_or_bytes.encode() if isinstance(text_or_bytes, str) else text_or_bytes
        (run / "metrics.csv").write_bytes(data)
        return ["report", str(run), "--report-dir", str(w.reports)]
    return build


def prepare(w: Workspace, *extra: str, name="faces", source=None) -> list[str]:
    return ["data", "prepare", name, "--source", source or images_dir(w), "--resolutions", "16", *extra]


def folder(w: Workspace, name: str, *files: tuple[str, bytes]) -> str:
    """A folder of the workspace holding `files` (name, bytes); empty when none are given."""
    (w.root / name).mkdir(parents=True, exist_ok=True)
    for fname, data in files:
        w.blob(f"{name}/{fname}", data)
    return str(w.root / name)


BAD_PNG = ("0000.png", b"\x89PNG\r\n\x1a\ngarbage")


def resume_with_other_suite(w: Workspace) -> list[str]:
    w.copy_finished()
    return w.run("--run-id", FINISHED_ID, edit=set_("sample.n", 6))


def unwritable_cache(w: Workspace) -> list[str]:
    os.environ["DFU_BENCH_CACHE"] = "/sys/dfu-bench-cache"  # restored by the fixture's monkeypatch
    return w.run(base=DATA_ONLY)


def read_only_run(w: Workspace) -> list[str]:
    w.copy_finished()
    for p in [w.results, *w.results.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    return w.resume()


def report_of_finished(edit=None):
    """`bench report` of a copy of the finished run, after `edit(run_dir)`."""
    def build(w: Workspace) -> list[str]:
        run = w.copy_finished()
        if edit is not None:
            edit(run)
        return ["report", str(run), "--report-dir", str(w.reports)]
    return build


def binary_suite(run: Path) -> None:
    (run / "suite.yaml").write_bytes(bytes(range(128, 256)))  # not UTF-8


def non_numeric_fid(run: Path) -> None:
    text = (run / "metrics.csv").read_text()
    assert "\ndfu,dfu,16,16,0,8,8," in text
    (run / "metrics.csv").write_text(text.replace("\ndfu,dfu,16,16,0,8,8,", "\ndfu,dfu,16,16,0,8,8,abc", 1))


DATA_BASELINE = {"quality": {"bilinear-data@16": {"fid": 1000.0, "kid": 1.0}}, "throughput": {"kernels": {}}}


def prepared_with(w: Workspace, **manifest) -> dict:
    """A dataset prepared from four faces in w.root/pdata whose manifest.json has `manifest` written over
    it; returns the suite's `dataset:` section that reads it."""
    import json

    from bench.prepare import prepare as prepare_data

    prepare_data("f", Path(images_dir(w, "psrc")), [16], w.root / "pdata", False, 4096, "lanczos")
    path = w.root / "pdata" / "f" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **manifest}))
    return {"kind": "prepared", "name": "f", "root": str(w.root / "pdata")}


RUN = [
    # ---- the house rule holds today (controls) -------------------------------------------
    case("run-malformed-yaml", lambda w: ["run", w.text("bad.yaml", "name: x\nmodels: [\n  - a\n"),
                                          "--results", str(w.results)], "malformed YAML"),
    case("run-unknown-key", lambda w: w.run(edit=set_("sample.nn", 3)), ("sample.nn", "unknown key")),
    case("run-wrong-type", lambda w: w.run(edit=set_("models.0.train.steps", "many")), "models.0.train.steps"),
    case("run-missing-suite", lambda w: ["run", str(w.root / "nope.yaml"), "--results", str(w.results)],
         ("nope.yaml", "does not exist")),
    case("run-empty-suite", lambda w: ["run", w.text("empty.yaml", ""), "--results", str(w.results)],
         "expected a mapping"),
    case("run-top-level-list", lambda w: ["run", w.text("list.yaml", "- a\n- b\n"), "--results", str(w.results)],
         "expected a mapping"),
    case("run-missing-dataset", lambda w: w.run(edit=set_("dataset", {"kind": "imagefolder",
                                                                      "path": str(w.root / "no-such-folder")})),
         "no-such-folder"),
    case("run-unknown-adapter", lambda w: w.run(edit=models0(adapter="gan")), ("'gan'", "unet")),
    case("run-impossible-resolution", lambda w: w.run(edit=set_("sample.resolutions", [16, 10])),
         ("models.0 (dfu).sample.resolutions", "10")),
    case("run-resolution-out-of-range", lambda w: w.run(edit=set_("sample.resolutions", [1024])),
         "sample.resolutions.0"),
    case("run-duplicate-model-names", lambda w: w.run(edit=lambda d: d["models"][1].update(name="dfu")),
         "unique"),
    case("run-scale-typo", lambda w: w.run("--scale", "tinny"), "--scale 'tinny'"),
    # YAML 1.1 reads an unquoted 1e20 as the string '1e20'
    case("run-seeds-1e20-string", lambda w: w.run(edit=set_("sample.seeds", ["1e20"])), "sample.seeds.0"),
    case("run-n-1e30-float", lambda w: w.run(edit=set_("sample.n", 1e30)), "sample.n"),
    case("run-reference-n-above-dataset", lambda w: w.run(edit=set_("metrics.reference_n", 10**6)),
         "metrics.reference_n"),
    case("run-fid-mode-typo", lambda w: w.run(edit=set_("metrics.fid_mode", "cleen")), "metrics.fid_mode"),
    case("run-metrics-without-fid", lambda w: w.run(edit=set_("metrics.metrics", ["kid"])), "include fid"),
    case("run-bilinear-unknown-source", lambda w: w.run(edit=lambda d: d["models"][1].update(source="gan")),
         ("models.1 (bilinear-data).source", "'gan'")),
    case("run-finetune-unknown-base", lambda w: w.run(edit=lambda d: d["models"].append(
        {"name": "ft", "adapter": "dfu", "arch": "cpu-tiny", "train": {"steps": 2, "batch_size": 4},
         "finetune": {"base": "nobody", "target_resolution": 24}})), ("finetune.base", "'nobody'")),
    case("run-unknown-arch-override", lambda w: w.run(edit=models0(arch_overrides={"chanels": 8})),
         ("models.0 (dfu).arch", "chanels")),
    case("run-prepared-not-prepared", lambda w: w.run(edit=set_("dataset", {"kind": "prepared", "name": "ffhq"})),
         "bench data prepare"),
    case("run-corrupt-dataset-image", lambda w: w.run(edit=set_("dataset", {
        "kind": "imagefolder", "path": folder(w, "faces", BAD_PNG)})), ("0000.png", "remove or replace")),
    case("run-alias-bomb-unknown-key", lambda w: ["run", w.text("bomb0.yaml", f"bomb: {alias_bomb()}\n"
                                                                + yaml.safe_dump(TINY)), "--results", str(w.results)],
         ("bomb", "unknown key")),
    case("run-changed-suite-same-id", resume_with_other_suite, "different suite"),

    # ---- crashes, or refused only after the run directory exists --------------------------
    case("run-seed-negative", lambda w: w.run(edit=set_("seed", -1)),
         "seed: Input should be greater than or equal to 0"),
    case("run-dataset-seed-negative", lambda w: w.run(edit=set_("dataset.seed", -1)), ("toyfaces seed", "-1")),
    case("run-kid-subset-seed-negative", lambda w: w.run(edit=set_("metrics.kid_subset_seed", -1), base=DATA_ONLY),
         "metrics.kid_subset_seed: Input should be greater than or equal to 0"),
    case("run-seeds-1e20-int", lambda w: w.run(edit=set_("sample.seeds", [10**20]), base=DATA_ONLY),
         "sample.seeds.0: Input should be less than or equal to"),
    case("run-n-1e30-int", lambda w: w.run(edit=set_("sample.n", BIG), base=DATA_ONLY),
         "sample.n: Input should be less than or equal to",
         limit=3),
    case("run-dataset-size-1e12", lambda w: w.run(edit=set_("dataset.size", 10**12), base=DATA_ONLY),
         "dataset.size: Input should be less than or equal to"),
    case("run-train-batch-1e9", lambda w: w.run(edit=set_("models.0.train.batch_size", 10**9)),
         "models.0.train.batch_size: Input should be less than or equal to"),
    case("run-train-steps-1e12", lambda w: w.run(edit=set_("models.0.train.steps", 10**12)),
         "models.0.train.steps: Input should be less than or equal to", limit=3),
    case("run-sample-steps-1e12", lambda w: w.run(edit=set_("sample.steps", 10**12), base=DATA_ONLY),
         "sample.steps: Input should be less than or equal to"),
    case("run-lr-inf", lambda w: w.run(edit=set_("models.0.train.lr", float("inf"))),
         "models.0.train.lr: Input should be a finite number"),
    case("run-lr-nan", lambda w: w.run(edit=set_("models.0.train.lr", float("nan"))), "models.0.train.lr"),
    case("run-weights-inf", lambda w: w.run(edit=lambda d: d["models"][0]["train"].update(
        resolutions=[16, 24], weights=[float("inf"), 1.0])),
         "models.0.train.weights.0: Input should be a finite number"),
    case("run-arch-overrides-absurd", lambda w: w.run(edit=models0(arch_overrides={"model_channels": 10**8})),
         ("models.0 (dfu).arch", "model_channels")),
    case("run-alias-bomb-in-overrides", bomb_in_overrides, "alias", limit=3),
    case("run-binary-suite", lambda w: ["run", w.blob("bin.yaml", bytes(range(256)) * 4),
                                        "--results", str(w.results)], ("bin.yaml", "UTF-8")),
    case("run-device-cuda7", lambda w: w.run(edit=set_("device", "cuda:7")), ("device", "cuda:7"), skip=(not NO_CUDA7, "8+ GPUs here")),
    case("run-device-quantum", lambda w: w.run(edit=set_("device", "quantum")), ("device", "quantum")),
    case("run-inception-not-a-network", lambda w: w.run(base=DATA_ONLY, edit=set_("metrics.inception_path", w.text(
        "notnet.pt", "not a network\n"))), ("metrics.inception_path", "notnet.pt")),
    case("run-results-is-a-file", lambda w: w.run("--results", file_(w), base=DATA_ONLY),
         ("--results", "afile")),
    case("run-results-unwritable", lambda w: w.run("--results", "/sys/dfu-bench-results", base=DATA_ONLY),
         ("--results", "/sys/dfu-bench-results", "writable")),
    case("run-report-dir-is-a-file", lambda w: w.run("--report-dir", file_(w), base=DATA_ONLY),
         ("--report-dir", "afile")),
    case("run-cache-unwritable", unwritable_cache, ("DFU_BENCH_CACHE", "writable")),
    case("run-run-dir-read-only", read_only_run, ("hostile/base", "writable"),
         "a read-only run directory gives PermissionError", skip=(ROOT_IS_ROOT, "root ignores file modes")),
    case("run-id-parent-escape", lambda w: w.run("--run-id", "../../x", base=DATA_ONLY), "--run-id"),
    case("run-id-absolute", lambda w: w.run("--run-id", str(w.root / "elsewhere"), base=DATA_ONLY), "--run-id"),
    case("run-suite-named-dotdot", lambda w: w.run(edit=set_("name", ".."), base=DATA_ONLY),
         "suite.yaml: name:"),
    case("run-model-named-dotdot", lambda w: w.run(edit=lambda d: d["models"][0].update(name=".."), base=DATA_ONLY),
         "models.0.name:"),
    case("run-deeply-nested-yaml", lambda w: ["run", w.text("deep.yaml", "name: d\nfoo: " + "[" * 100_000
                                                           + "]" * 100_000 + "\n"), "--results", str(w.results)],
         ("deep.yaml", "nested")),
    case("run-deeply-nested-known-key", lambda w: ["run", w.text("deep.yaml", yaml.safe_dump(DATA_ONLY).replace(
        "description: ", "description: " + "[" * 100_000 + "]" * 100_000 + " #", 1)), "--results", str(w.results)],
         ("deep.yaml", "nested")),
    case("run-grf-kappa-1e300", lambda w: w.run(edit=set_("dataset", {"kind": "grf", "size": 64, "kappa": 1e300}),
                                                base=DATA_ONLY), "dataset.kappa: Input should be less than or equal to"),
    case("run-grf-kappa-1e20", lambda w: w.run(edit=set_("dataset", {"kind": "grf", "size": 64, "kappa": 1e20}),
                                               base=DATA_ONLY), "dataset.kappa: Input should be less than or equal to"),
    case("run-grf-std-1e-300", lambda w: w.run(edit=set_("dataset", {"kind": "grf", "size": 64, "std": 1e-300}),
                                               base=DATA_ONLY), "dataset.std: Input should be greater than or equal to"),
    case("run-grf-invisible-at-resolution", lambda w: w.run(edit=set_("dataset", {
        "kind": "grf", "size": 64, "kappa": 256.0, "alpha": 10.0, "std": 0.1}), base=DATA_ONLY),
         ("grf", "16 px", "kappa")),
    case("run-prepared-shard-size-zero", lambda w: w.run(edit=set_("dataset", prepared_with(
        w, shard_size=0)), base=DATA_ONLY), ("manifest.json", "shard_size", "prepare it again")),
    case("run-prepared-kept-count-text", lambda w: w.run(edit=set_("dataset", prepared_with(
        w, kept_count="many")), base=DATA_ONLY), ("manifest.json", "kept_count", "prepare it again")),
    case("run-prepared-resolution-key-superscript", lambda w: w.run(edit=set_("dataset", prepared_with(
        w, resolutions={"\u00b2": {"shards": []}})), base=DATA_ONLY),
         ("manifest.json", "resolutions", "prepare it again")),
    case("run-prepared-filter-a-list", lambda w: w.run(edit=set_("dataset", prepared_with(
        w, filter=["lanczos"])), base=DATA_ONLY), ("manifest.json", "filter", "prepare it again")),
    case("run-duplicate-top-level-key", lambda w: ["run", w.text("dup.yaml", yaml.safe_dump(DATA_ONLY, sort_keys=False)
                                                                 + "seed: 5\n"), "--results", str(w.results)],
         ("dup.yaml", "line", "'seed'", "twice")),
    case("run-duplicate-nested-key", lambda w: ["run", w.text("dup.yaml", yaml.safe_dump(DATA_ONLY, sort_keys=False)
                                                              .replace("  n: 8\n", "  n: 8\n  n: 6\n", 1)),
                                                "--results", str(w.results)], ("dup.yaml", "line", "'n'", "twice")),
    case("run-suite-is-a-directory", lambda w: ["run", folder(w, "adir"), "--results", str(w.results)],
         ("adir", "is a directory")),
    case("run-suite-dev-null", lambda w: ["run", "/dev/null", "--results", str(w.results)],
         ("/dev/null", "not a regular file")),
    case("run-nproc-100000", lambda w: w.run("--nproc", "100000", base=DATA_ONLY), ("--nproc", "1024")),
]

FID = [
    case("fid-missing-folder", lambda w: ["fid", str(w.root / "nope"), images_dir(w)], ("nope", "does not exist")),
    case("fid-empty-folder", lambda w: ["fid", folder(w, "empty"), images_dir(w)], "no images"),
    case("fid-not-a-zip", lambda w: ["fid", w.text("a.zip", "not a zip"), images_dir(w)], "not a readable zip"),
    case("fid-plain-file", lambda w: ["fid", w.text("a.txt", "x"), images_dir(w)], "neither a folder nor a .zip"),
    case("fid-corrupt-png", lambda w: ["fid", folder(w, "bad", BAD_PNG), images_dir(w)],
         ("0000.png", "remove or replace")),
    case("fid-one-image", lambda w: ["fid", images_dir(w, "one", n=1), images_dir(w)], "at least 2 images"),
    case("fid-mode-typo", lambda w: ["fid", images_dir(w), images_dir(w, "b"), "--mode", "cleen"], "'cleen'"),
    case("fid-device-quantum", lambda w: ["fid", images_dir(w), images_dir(w, "b"), "--device", "quantum"],
         ("--device", "quantum")),
    case("fid-device-cuda7", lambda w: ["fid", images_dir(w), images_dir(w, "b"), "--device", "cuda:7"],
         ("--device", "cuda:7"),
         skip=(not NO_CUDA7, "8+ GPUs here")),
    case("fid-inception-not-a-network", lambda w: ["fid", images_dir(w), images_dir(w, "b"), "--inception",
                                                   w.text("notnet.pt", "x")], ("--inception", "notnet.pt")),
    case("fid-inception-missing", lambda w: ["fid", images_dir(w), images_dir(w, "b"), "--inception",
                                             str(w.root / "missing.pt")], ("--inception", "missing.pt")),
    case("fid-batch-size-past-int64", lambda w: ["fid", images_dir(w), images_dir(w, "b"), "--batch-size",
                                                 "99999999999999999999999"], ("--batch-size", "less than or equal to")),
    case("fid-cache-unwritable", lambda w: with_cache("/sys/dfu-bench-cache", ["fid", images_dir(w), images_dir(w, "b"),
                                                                              "--device", "cpu"]),
         ("$DFU_BENCH_CACHE", "/sys/dfu-bench-cache", "not writable")),
    case("fid-cache-is-a-file", lambda w: with_cache(file_(w), ["fid", images_dir(w), images_dir(w, "b"),
                                                               "--device", "cpu"]),
         ("$DFU_BENCH_CACHE", "afile", "is a file")),
    case("fid-empty-folder-named-npz", lambda w: ["fid", folder(w, "dir.npz"), images_dir(w)],
         ("dir.npz", "no images")),
]


def npz_case(id, says, reason=None, b=None, **arrays):
    def build(w: Workspace):
        a = w.npz("a.npz", **arrays)
        return ["metrics", a, b(w) if b else w.npz("b.npz", images=faces(4, 16)), "--metrics", "fid,kid"]
    return case(id, build, says, reason)


METRICS = [
    case("metrics-unknown-metric", lambda w: ["metrics", images_dir(w), images_dir(w, "b"), "--metrics", "fid,is"],
         ("unknown metric", "is")),
    case("metrics-no-metric", lambda w: ["metrics", images_dir(w), images_dir(w, "b"), "--metrics", ","],
         "(none given)"),
    case("metrics-missing-npz", lambda w: ["metrics", str(w.root / "a.npz"), images_dir(w)], ("a.npz", "not exist")),
    npz_case("metrics-npz-without-keys", ("a.npz", "neither 'images'"), x=np.zeros(3)),
    npz_case("metrics-features-wrong-shape", ("a.npz", "'features' has shape"), features=np.zeros((4, 7))),
    case("metrics-features-only-for-spectral", lambda w: ["metrics", w.npz("a.npz", features=np.zeros((4, 2048))),
                                                         images_dir(w), "--metrics", "spectral"],
         ("set A has features only", "spectral")),
    case("metrics-spectral-unequal-sizes", lambda w: ["metrics", images_dir(w), images_dir(w, "b", res=24),
                                                     "--metrics", "spectral"], "equal image sizes"),
    case("metrics-patch-larger-than-images", lambda w: ["metrics", images_dir(w), images_dir(w, "b"),
                                                       "--metrics", "patch-fid", "--patch-size", "32"],
         "patch size 32"),
    case("metrics-mode-typo", lambda w: ["metrics", images_dir(w), images_dir(w, "b"), "--mode", "legasy"],
         "'legasy'"),
    case("metrics-truncated-npz", lambda w: ["metrics", w.blob("a.npz", npz_bytes(images=faces(4, 16))[:200]),
                                             images_dir(w)], ("a.npz", "re-create")),
    npz_case("metrics-float-images", ("a.npz", "uint8"),
             images=faces(4, 16).astype(np.float32) / 255),
    npz_case("metrics-grayscale-images", ("a.npz", "NHWC"),
             images=faces(4, 16)[..., 0]),
    npz_case("metrics-rgba-images", ("a.npz", "NHWC"),
             images=np.concatenate([faces(4, 16), np.full((4, 16, 16, 1), 255, np.uint8)], axis=3)),
    npz_case("metrics-nan-features", ("a.npz", "NaN"),
             b=lambda w: w.npz("b.npz", features=np.random.default_rng(1).random((4, 2048))),
             features=np.full((4, 2048), np.nan)),
    npz_case("metrics-inf-features", ("a.npz", "finite"),
             b=lambda w: w.npz("b.npz", features=np.random.default_rng(1).random((4, 2048))),
             features=np.full((4, 2048), np.inf)),
    case("metrics-device-quantum", lambda w: ["metrics", images_dir(w), images_dir(w, "b"), "--device", "quantum"],
         ("--device", "quantum")),
    case("metrics-kid-seed-negative", lambda w: ["metrics", images_dir(w), images_dir(w, "b"), "--metrics", "kid",
                                                 "--kid-subset-seed", "-1"],
         ("--kid-subset-seed", "greater than or equal to 0")),
    case("metrics-kid-seed-too-large", lambda w: ["metrics", images_dir(w), images_dir(w, "b"), "--metrics", "kid",
                                                  "--kid-subset-seed", "99999999999"],
         ("--kid-subset-seed", "less than or equal to 4294967295")),
    case("metrics-absurd-patches-per-image", lambda w: ["metrics", images_dir(w), images_dir(w, "b"), "--metrics",
                                                        "patch-fid", "--patch-size", "8", "--patches-per-image",
                                                        "999999999999"],
         ("--patches-per-image", "less than or equal to 10000")),
    case("metrics-patches-per-image-past-int64", lambda w: ["metrics", images_dir(w), images_dir(w, "b"), "--metrics",
                                                            "patch-kid", "--patch-size", "8", "--patches-per-image",
                                                            "99999999999999999999999"],
         ("--patches-per-image", "less than or equal to 10000")),
    case("metrics-absurd-pr-k", lambda w: ["metrics", images_dir(w), images_dir(w, "b"), "--metrics", "fid,pr",
                                           "--pr-k", "99999999999999999999999"], ("--pr-k", "less than or equal to")),
    case("metrics-cache-unwritable", lambda w: with_cache("/sys/dfu-bench-cache", ["metrics", images_dir(w),
                                                                                  images_dir(w, "b"), "--device", "cpu"]),
         ("$DFU_BENCH_CACHE", "/sys/dfu-bench-cache", "not writable")),
    case("metrics-cache-is-a-file", lambda w: with_cache(file_(w), ["metrics", images_dir(w), images_dir(w, "b"),
                                                                   "--device", "cpu"]),
         ("$DFU_BENCH_CACHE", "afile", "is a file")),
]

REPORT = [
    case("report-no-metrics", lambda w: ["report", str(w.root)], ("metrics.csv", "not found")),
    case("report-missing-suite-yaml", report_of_finished(lambda run: (run / "suite.yaml").unlink()), "suite.yaml"),
    case("report-empty-metrics", corrupt_metrics(""), ("metrics.csv", "bench run")),
    case("report-binary-metrics", corrupt_metrics(bytes(range(256)) * 8), ("metrics.csv", "bench run")),
    case("report-header-only-metrics", corrupt_metrics(
        "model,adapter,train_resolutions,sample_resolution,seed_set,n,n_ref,fid,kid,spectral_lsd,fid_mode,seconds\n"),
         ("metrics.csv", "bench run")),
    case("report-wrong-columns", corrupt_metrics("a,b,c\n1,2,3\n"), ("metrics.csv", "bench run")),
    case("report-non-numeric-fid", report_of_finished(non_numeric_fid), ("metrics.csv", "fid")),
    case("report-dir-is-a-file", lambda w: ["report", str(w.copy_finished()), "--report-dir", file_(w)],
         ("--report-dir", "afile")),
    case("report-binary-suite-yaml", report_of_finished(binary_suite),
         ("suite.yaml", "UTF-8")),
    case("report-samples-deleted", report_of_finished(lambda run: shutil.rmtree(run / "samples")),
         ("samples/", "missing", "--run-id base")),
]

REGRESS = [
    case("regress-missing-baseline", lambda w: ["regress", "--baseline", str(w.root / "none.json"),
                                                "--skip-throughput"], ("none.json", "--update")),
    case("regress-empty-baseline-file", lambda w: ["regress", "--baseline", baseline(w, ""), "--skip-throughput"],
         ("baseline.json", "not a dfu-bench baseline")),
    case("regress-binary-baseline", lambda w: ["regress", "--baseline", w.blob("baseline.json", bytes(range(256))),
                                               "--skip-throughput"], ("baseline.json", "not a dfu-bench baseline")),
    case("regress-missing-suite", lambda w: ["regress", "--baseline", baseline(w, GOOD_BASELINE), "--suite",
                                             str(w.root / "nope.yaml"), "--skip-throughput"], "nope.yaml"),
    case("regress-baseline-compares-nothing", lambda w: [
        "regress", "--baseline", baseline(w, {"quality": {}, "throughput": {"kernels": {}}}),
        "--suite", w.suite(base=DATA_ONLY), "--results", str(w.results), "--skip-throughput"],
         ("baseline.json", "nothing")),
    case("regress-skips-everything", lambda w: ["regress", "--baseline", baseline(w, GOOD_BASELINE), "--suite",
                                                w.suite(base=DATA_ONLY), "--skip-quality", "--skip-throughput"],
         "nothing"),
    case("regress-update-compares-nothing", lambda w: ["regress", "--baseline", str(w.root / "new.json"), "--suite",
                                                       w.suite(base=DATA_ONLY), "--update", "--skip-quality",
                                                       "--skip-throughput"],
         ("new.json", "nothing")),
    case("regress-baseline-is-a-directory", lambda w: ["regress", "--baseline", str(w.root), "--skip-throughput"],
         "is a directory"),
    case("regress-baseline-non-numeric", lambda w: [
        "regress", "--baseline", baseline(w, {"quality": {"dfu@16": {"fid": "abc", "kid": None}},
                                              "throughput": {"kernels": {}}}),
        "--suite", w.suite(base=DATA_ONLY), "--results", str(w.results), "--skip-throughput"], ("baseline.json", "fid")),
    case("regress-baseline-machine-twice", lambda w: [
        "regress", "--baseline", baseline(w, {**DATA_BASELINE, "throughput": [
            {"machine": "cpu X", "kernels": {"k": {"ratio": 1.0}}}, {"machine": "cpu X", "kernels": {}}]}),
        "--suite", w.suite(base=DATA_ONLY), "--results", str(w.results), "--skip-throughput"],
         ("baseline.json", "2 entries for machine 'cpu X'", "keep one")),
    case("regress-baseline-machine-not-text", lambda w: [
        "regress", "--baseline", baseline(w, {**DATA_BASELINE, "throughput": [{"machine": 5, "kernels": {}}]}),
        "--suite", w.suite(base=DATA_ONLY), "--results", str(w.results), "--skip-throughput"],
         ("baseline.json", "throughput.0.machine", "valid string")),
    case("regress-results-is-a-file", lambda w: ["regress", "--baseline", baseline(w, GOOD_BASELINE), "--suite",
                                                 w.suite(base=DATA_ONLY), "--results", file_(w), "--skip-throughput"],
         ("--results", "afile")),
    case("regress-tolerance-not-a-number", lambda w: [
        "regress", "--baseline", baseline(w, {**DATA_BASELINE, "tolerances": {"fid_rel": "x"}}),
        "--suite", w.suite(base=DATA_ONLY), "--results", str(w.results), "--skip-throughput"],
         ("baseline.json", "tolerances.fid_rel")),
    case("regress-tolerances-a-list", lambda w: [
        "regress", "--baseline", baseline(w, {**DATA_BASELINE, "tolerances": [1, 2]}),
        "--suite", w.suite(base=DATA_ONLY), "--results", str(w.results), "--skip-throughput"],
         ("baseline.json", "tolerances")),
    case("regress-tolerance-negative", lambda w: [
        "regress", "--baseline", baseline(w, {**DATA_BASELINE, "tolerances": {"kid_abs": -0.1}}),
        "--suite", w.suite(base=DATA_ONLY), "--results", str(w.results), "--skip-throughput"],
         ("baseline.json", "tolerances.kid_abs", "greater than or equal to 0")),
    case("regress-update-baseline-unwritable", lambda w: [
        "regress", "--baseline", "/sys/dfu-bench-baseline.json", "--suite", w.suite(base=DATA_ONLY), "--results",
        str(w.results), "--update", "--skip-throughput"], ("--baseline", "/sys/dfu-bench-baseline.json", "writable")),
    case("regress-update-baseline-is-a-directory", lambda w: [
        "regress", "--baseline", folder(w, "bdir"), "--suite", w.suite(base=DATA_ONLY), "--results",
        str(w.results), "--update", "--skip-throughput"], ("--baseline", "bdir", "is a folder")),
    case("regress-update-baseline-under-a-file", lambda w: [
        "regress", "--baseline", os.path.join(file_(w), "b.json"), "--suite", w.suite(base=DATA_ONLY), "--results",
        str(w.results), "--update", "--skip-throughput"], ("--baseline", "afile")),
]

MODEL_CARD = [
    case("model-card-unknown-arch", lambda w: ["model-card", "paper-smal"], "unknown architecture 'paper-smal'"),
    case("model-card-bad-resolutions", lambda w: ["model-card", "cpu-tiny", "--resolutions", "32,abc"],
         "--resolutions"),
    case("model-card-arch-file-bad-yaml", lambda w: ["model-card", w.text("arch.yaml", "model_channels: [\n")],
         ("arch.yaml", "not a valid architecture file")),
    case("model-card-arch-file-unknown-field", lambda w: ["model-card", w.text("arch.yaml", "chanels: 8\n")],
         ("arch.yaml", "not a valid architecture file")),
    case("model-card-arch-file-binary", lambda w: ["model-card", w.blob("arch.yaml", bytes(range(256)))],
         ("arch.yaml", "not a valid architecture file")),
    case("model-card-mode-bogus", lambda w: ["model-card", "cpu-tiny", "--mode", "bogus"], ("--mode", "bogus")),
    case("model-card-negative-resolution", lambda w: ["model-card", "cpu-tiny", "--resolutions", "-32"],
         ("--resolutions", "-32")),
    case("model-card-absurd-memory-resolution", lambda w: ["model-card", "cpu-tiny", "--memory-resolution",
                                                           "1000000", "--device", "cpu"],
         ("--memory-resolution", "1000000")),
    case("model-card-device-quantum", lambda w: ["model-card", "cpu-tiny", "--memory-resolution", "16",
                                                 "--device", "quantum"], ("--device", "quantum")),
    case("model-card-mode-empty", lambda w: ["model-card", "cpu-tiny", "--mode", ""],
         ("--mode ''", "spatial", "spectral", "dual")),
]

IMPORT = [
    case("import-missing-state", lambda w: ["import-checkpoint", str(w.root / "nope.pt"), "--arch", "cpu-tiny",
                                            "--out", str(w.root / "o.safetensors")], ("nope.pt", "does not exist")),
    case("import-garbage-state", lambda w: ["import-checkpoint", w.text("s.pt", "garbage"), "--arch", "cpu-tiny",
                                            "--out", str(w.root / "o.safetensors")], ("s.pt", "not a readable")),
    case("import-state-without-arch", lambda w: ["import-checkpoint", state_dict_file(w), "--out",
                                                 str(w.root / "o.safetensors")], "pass --arch"),
    case("import-wrong-arch", lambda w: ["import-checkpoint", state_dict_file(w), "--arch", "cpu-small",
                                         "--out", str(w.root / "o.safetensors")], ("state.pt", "check --arch")),
    case("import-unknown-arch", lambda w: ["import-checkpoint", state_dict_file(w), "--arch", "cpu-tinny",
                                           "--out", str(w.root / "o.safetensors")], "'cpu-tinny'"),
    case("import-garbage-pkl", lambda w: ["import-checkpoint", w.text("snap.pkl", "garbage"),
                                          "--out", str(w.root / "o.safetensors")], "snap.pkl"),
    case("import-out-is-a-directory", lambda w: ["import-checkpoint", state_dict_file(w), "--arch", "cpu-tiny",
                                                 "--out", folder(w, "outdir")],
         ("--out", "outdir")),
    case("import-out-unwritable", lambda w: ["import-checkpoint", state_dict_file(w), "--arch", "cpu-tiny",
                                             "--out", "/sys/dfu.safetensors"], ("--out", "writable")),
    case("import-out-is-its-own-metadata", lambda w: ["import-checkpoint", state_dict_file(w), "--arch", "cpu-tiny",
                                                      "--out", str(w.root / "meta.json")],
         ("--out", "meta.json", ".safetensors")),
    case("import-state-is-a-directory", lambda w: ["import-checkpoint", folder(w, "statedir"), "--arch", "cpu-tiny",
                                                   "--out", str(w.root / "o.safetensors")], ("statedir", "is a folder")),
    case("import-nan-weights", lambda w: ["import-checkpoint", nonfinite_state_dict_file(w), "--arch", "cpu-tiny",
                                          "--out", str(w.root / "o.safetensors")],
         ("nonfinite.pt", "NaN or infinite")),
    case("import-one-inf-weight", lambda w: ["import-checkpoint", nonfinite_state_dict_file(
        w, float("inf"), only="model.map_layer0.weight"), "--arch", "cpu-tiny", "--out", str(w.root / "o.safetensors")],
         ("nonfinite.pt", "model.map_layer0.weight", "NaN or infinite")),
]


def sample_(w: Workspace, *extra: str, outdir: Optional[str] = None, **files: Callable[[Path], object]) -> list[str]:
    """`bench sample` of a tiny checkpoint at 16 px, seeds 0-1, 2 steps, into OUTDIR (the workspace's out/ unless
    given), after `files` (a path under out/, "/" as "__" -> a function that makes it) are put there."""
    out = w.root / "out"
    for rel, make in files.items():
        path = out / rel.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
    return ["sample", str(dfu_checkpoint(w.root)), "--resolutions", "16", "--seeds", "0-1", "--steps", "2",
            "--device", "cpu", "--outdir", outdir or str(out), *extra]


def existing_npz(images: np.ndarray, seeds) -> Callable[[Workspace], list[str]]:
    """`bench sample --format npz` where out/16.npz already holds `images` and `seeds`."""
    return lambda w: sample_(w, "--format", "npz",
                             **{"16.npz": lambda p: p.write_bytes(npz_bytes(images=images, seeds=seeds))})


def png_of(res: int) -> Callable[[Path], None]:
    return lambda p: Image.fromarray(faces(1, res)[0]).save(p)


REMOVE = "remove it or choose another --outdir"

SAMPLE = [
    case("sample-outdir-unwritable", lambda w: sample_(w, outdir="/sys/dfu-out"), ("--outdir", "writable")),
    case("sample-outdir-in-proc", lambda w: sample_(w, outdir="/proc/x"), ("--outdir", "writable")),
    case("sample-outdir-under-a-file", lambda w: sample_(w, outdir=file_(w) + "/sub"),
         ("--outdir", "afile is a file")),
    case("sample-steps-1e12", lambda w: sample_(w, "--steps", "1000000000000"),
         ("--steps", "less than or equal to 10000")),
    case("sample-steps-1e23", lambda w: sample_(w, "--steps", "99999999999999999999999"),
         ("--steps", "less than or equal to 10000")),
    case("sample-batch-1e12", lambda w: sample_(w, "--batch", "1000000000000"),
         ("--batch", "less than or equal to 65536")),
    case("sample-resolution-folder-is-a-file", lambda w: sample_(w, **{"16": lambda p: p.write_text("x")}),
         ("16 is a file", REMOVE)),
    case("sample-png-is-a-folder", lambda w: sample_(w, **{"16__000000.png": Path.mkdir}), ("000000.png", REMOVE)),
    case("sample-png-other-resolution", lambda w: sample_(w, **{"16__000000.png": png_of(32)}),
         ("000000.png", "16 x 16", REMOVE)),
    case("sample-npz-other-resolution", existing_npz(np.zeros((2, 32, 32, 3), np.uint8), np.array([5, 6])),
         ("16.npz", "(2, 32, 32, 3)", REMOVE)),
    case("sample-npz-2d-seeds", existing_npz(np.zeros((1, 16, 16, 3), np.uint8), np.array([[0]])),
         ("16.npz", "seeds", REMOVE)),
    case("sample-npz-float-images", existing_npz(np.zeros((1, 16, 16, 3), np.float32), [9]),
         ("16.npz", "uint8", REMOVE)),
    case("sample-npz-more-images-than-seeds", existing_npz(np.zeros((2, 16, 16, 3), np.uint8), [9]),
         ("16.npz", "one integer seed per image", REMOVE)),
    case("sample-npz-is-a-folder", lambda w: sample_(w, "--format", "npz", **{"16.npz": Path.mkdir}),
         ("16.npz", REMOVE)),
    case("sample-garbage-part", lambda w: sample_(
        w, "--format", "npz", **{".in-progress__16__000000.npy": lambda p: p.write_bytes(b"garbage")}),
         ("000000.npy", "delete it")),
]

PREPARE = [
    case("prepare-missing-source", lambda w: prepare(w, source=str(w.root / "nope")), ("nope", "does not exist")),
    case("prepare-empty-source", lambda w: prepare(w, source=folder(w, "empty")), "no images"),
    case("prepare-bad-resolutions", lambda w: ["data", "prepare", "x", "--source", images_dir(w),
                                               "--resolutions", "16,abc"], "'abc' is not an integer"),
    case("prepare-resolution-out-of-range", lambda w: ["data", "prepare", "x", "--source", images_dir(w),
                                                       "--resolutions", "4"], "resolution 4 is out of range"),
    case("prepare-filter-typo", lambda w: prepare(w, "--filter", "lanczoz"), "'lanczoz'"),
    case("prepare-name-dotdot", lambda w: prepare(w, name=".."), "'..' is not a plain folder name"),
    case("prepare-name-with-slash", lambda w: prepare(w, name="a/b"), "'a/b' is not a plain folder name"),
    case("prepare-corrupt-image", lambda w: prepare(w, source=folder(w, "src", BAD_PNG)), ("0000.png", "--skip-bad")),
    case("prepare-out-is-a-file", lambda w: prepare(w, "--out", file_(w)), ("--out", "afile")),
    case("prepare-out-unwritable", lambda w: prepare(w, "--out", "/sys/dfu-data"), ("--out", "writable")),
]

LIST_AND_USAGE = [
    case("list-extra-argument", lambda w: ["list", "extra"], "unexpected extra argument"),
    case("list-unknown-option", lambda w: ["list", "--json"], "No such option: --json"),
    case("usage-command-typo", lambda w: ["rnu", "suite.yaml"], "No such command 'rnu'"),
    case("usage-option-without-value", lambda w: ["run", "suite.yaml", "--run-id"], "--run-id"),
    case("usage-fid-missing-b", lambda w: ["fid", "a"], "Missing argument 'b'"),
    case("usage-metrics-batch-not-a-number", lambda w: ["metrics", "a", "b", "--batch-size", "x"], "--batch-size"),
    case("usage-report-no-run-dir", lambda w: ["report"], "Missing argument"),
    case("usage-data-subcommand-typo", lambda w: ["data", "prepair"], "No such command 'prepair'"),
    case("usage-regress-repeats-zero", lambda w: ["regress", "--repeats", "0"], "--repeats"),
    case("usage-version-typo", lambda w: ["--versio"], "No such option: --versio"),
    case("usage-model-card-no-arch", lambda w: ["model-card"], "Missing argument 'arch'"),
    case("usage-import-no-out", lambda w: ["import-checkpoint", "x.pt"], "Missing option '--out'"),
]

ALL = RUN + FID + METRICS + REPORT + REGRESS + MODEL_CARD + IMPORT + PREPARE + LIST_AND_USAGE + SAMPLE


@pytest.mark.parametrize("build, says, limit", ALL)
def test_hostile_input_is_one_line_exit_2_and_writes_nothing(ws, run_cli, build, says, limit):
    args = build(ws)
    before = tree(ws.root)
    with guarded(seconds=limit):
        result = run_cli(*args)
    assert_refused(result, says)
    assert_unchanged(before, tree(ws.root))


@pytest.mark.parametrize("name, value", [("RANK", "abc"), ("WORLD_SIZE", "0")])
def test_stray_torchrun_variable_is_one_line(ws, run_cli, monkeypatch, name, value):
    """A RANK or WORLD_SIZE that torchrun did not set is refused before any command runs. (Not a
    row of ALL: the case sets the environment, which monkeypatch must restore.)"""
    monkeypatch.setenv(name, value)
    before = tree(ws.root)
    assert_refused(run_cli("list"), (f"${name}", repr(value), "unset it"))
    assert_unchanged(before, tree(ws.root))


# ---------------------------------------------------------------------------------- not errors


def test_suite_description_is_escaped_in_the_report(ws, run_cli):
    """A description that is Markdown/HTML must read as text in index.md: no heading, image or
    script of its own."""
    run = ws.copy_finished()
    text = (run / "suite.yaml").read_text()
    evil = "<script>alert(1)</script>\n# injected heading\n![x](http://example.invalid/x.png)"
    data = yaml.safe_load(text)
    data["description"] = evil
    (run / "suite.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, err = run_cli("report", str(run), "--report-dir", str(ws.reports))
    assert code == 0, err
    index = (run / "index.md").read_text()
    assert "<script>" not in index
    assert "\n# injected heading" not in index
    assert "](http://example.invalid" not in index


def test_run_files_follow_the_umask(finished):
    """Every file of a run is created with the mode the user's umask gives (0644 under 022), as
    `open()` would: mkstemp's 0600 hides results from the group the user shares them with."""
    want = 0o666 & ~BUILD_UMASK  # finished_run builds under this umask
    wrong = sorted(str(p.relative_to(finished.run_dir)) for p in finished.run_dir.rglob("*")
                   if p.is_file() and p.stat().st_mode & 0o777 != want)
    assert not wrong, f"{len(wrong)} files not {oct(want)}: {wrong[:5]}"


def test_report_needs_only_the_files_it_shows(ws, run_cli):
    """Files a report does not show may be deleted to save space (checkpoints, model cards, references,
    all recorded): `bench report` still writes; Fig. 5 notes the missing real row. A samples file the
    panel shows is refused (the row report-samples-deleted)."""
    run = ws.copy_finished()
    shutil.rmtree(run / "checkpoints")
    shutil.rmtree(run / "references")
    code, _, err = run_cli("report", str(run), "--report-dir", str(ws.reports))
    assert code == 0, err
    assert "no real images" in (run / "index.md").read_text()


def test_a_run_without_checksums_whose_samples_are_gone_still_reports(ws, run_cli):
    """A run made before the checksum record (nothing says its samples existed), samples deleted:
    `bench report` draws the samples panel with a blank cell per missing file (it divided by zero)."""
    run = ws.copy_finished()
    shutil.rmtree(run / "samples")
    (run / "checksums.json").unlink()
    code, _, err = run_cli("report", str(run), "--report-dir", str(ws.reports))
    assert code == 0, err
    assert (run / "samples.png").is_file()
    # the page says which cells are blank and why (it used to draw them without a word)
    assert "Blank cells: no samples file for " in (run / "index.md").read_text()
