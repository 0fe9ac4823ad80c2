"""Tests for `bench data prepare` (bench/prepare.py) and the `prepared` dataset that reads its output."""

import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import prepare as prep
from bench.config import parse_suite
from bench.datasets import DATASETS, ImageDataset, ImageFolder, PreparedDataset, ToyFaces, build_dataset
from bench.errors import BenchError
from bench.io import PROJECT_ROOT

RES = [16, 24]
SHARD = 8  # 30 kept images -> shards of 8, 8, 8, 6
BAD = "sub/zz_truncated.png"


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """30 decodable images of varied size, shape and mode, and one truncated PNG."""
    src = tmp_path_factory.mktemp("src")
    (src / "sub").mkdir()
    faces = ToyFaces(size=100, seed=0).images(range(30), 64)
    for i, a in enumerate(faces):
        if i % 5 == 1:
            a = a[:, 7:57]  # tall: crop keeps the middle rows
        elif i % 5 == 2:
            a = a[5:45, :]  # wide
        img = Image.fromarray(a)
        if i % 7 == 3:
            img = img.convert("L")  # grey: converted to RGB like imagefolder does
        elif i % 7 == 4:
            img = img.convert("RGBA")  # alpha: dropped
        if i % 6 == 5:
            img.convert("RGB").save(src / f"{i:02d}.jpg", quality=90)
        else:
            img.save(src / ("sub" if i % 2 else ".") / f"{i:02d}.png")
    good = _png_bytes(Image.fromarray(faces[0]))
    (src / BAD).write_bytes(good[: len(good) // 2])  # a real PNG header, then nothing: truncated
    (src / ".hidden.png").write_bytes(b"not an image")  # hidden files are not listed at all
    return src


def _prepare(run_cli, src, root, *extra, res=RES):
    return run_cli("data", "prepare", "toy", "--source", str(src), "--resolutions", ",".join(map(str, res)),
                   "--out", str(root), "--shard-size", str(SHARD), *extra)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(source, tmp_path_factory):
    """A finished --skip-bad prepare of `source` (read-only for the tests that use it)."""
    root = tmp_path_factory.mktemp("data")
    summary = prep.prepare("toy", source, RES, root, skip_bad=True, shard_size=SHARD)
    return root, summary


# --- bad files --------------------------------------------------------------


def test_bad_file_fails_before_anything_is_written(source, tmp_path, run_cli):
    code, _, err = _prepare(run_cli, source, tmp_path / "data")
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    assert BAD in lines[0] and "1 of 31 images" in lines[0] and "--skip-bad" in lines[0]
    assert not (tmp_path / "data").exists()  # no archive, no manifest, not even the folder


def test_many_bad_files_named_first_few_and_counted(tmp_path, run_cli):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(ToyFaces(size=2).image(0, 32)).save(src / "good.png")
    for k in range(5):
        (src / f"bad{k}.png").write_bytes(os.urandom(64))
    code, _, err = _prepare(run_cli, src, tmp_path / "data")
    assert code == 2
    assert "5 of 6 images" in err and "bad0.png" in err and "bad2.png" in err and "bad3.png" not in err
    assert "and 2 more" in err


def test_skip_bad_reports_and_lists_the_skipped_file(source, tmp_path, run_cli):
    code, _, err = _prepare(run_cli, source, tmp_path / "data", "--skip-bad")
    assert code == 0, err
    assert "30 of 31 images kept, 1 skipped" in err and BAD in err
    manifest = json.loads((tmp_path / "data" / "toy" / "manifest.json").read_text())
    assert [s["file"] for s in manifest["skipped"]] == [BAD]
    assert "truncated" in manifest["skipped"][0]["reason"].lower()


# --- what is written --------------------------------------------------------


def test_manifest_counts_and_checksums(prepared, source):
    root, summary = prepared
    dest = root / "toy"
    m = json.loads((dest / "manifest.json").read_text())
    assert (m["name"], m["source"], m["source_count"], m["kept_count"]) == ("toy", str(source.resolve()), 31, 30)
    assert m["shard_size"] == SHARD and m["skip_bad"] is True and m["filter"] == "lanczos"
    assert "centre square" in m["crop"] and "LANCZOS" in m["filter_description"]
    assert m["dfu_bench_version"] and m["created"] and m["pillow_version"]
    assert sorted(m["resolutions"]) == ["16", "24"]
    for r in RES:
        shards = m["resolutions"][str(r)]["shards"]
        assert [s["count"] for s in shards] == [8, 8, 8, 6]
        assert [s["first"] for s in shards] == [0, 8, 16, 24]
        for k, s in enumerate(shards):
            path = dest / s["file"]
            assert s["file"] == f"r{r:03d}/shard-{k:05d}.zip"
            assert s["sha256"] == _digest(path) and s["bytes"] == path.stat().st_size
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                assert names == [f"{i:08d}.png" for i in range(s["first"], s["first"] + s["count"])]
                assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
                # compress_level 0: a PNG at least as large as its raw pixels
                assert all(info.file_size > r * r * 3 for info in zf.infolist())
    assert not (dest / "prepare.json").exists()  # the in-progress state goes once the manifest is there
    assert summary["kept"] == 30 and summary["skipped"] == 1 and len(summary["written"]) == 8


def test_images_equal_imagefolder_crop_and_resize(prepared, source):
    root, _ = prepared
    folder = ImageFolder(source)
    kept = [i for i, f in enumerate(folder.files) if f != BAD]
    assert len(kept) == 30
    ds = PreparedDataset("toy", root)
    assert len(ds) == 30
    for r in RES:
        expected = folder.images(kept, r)
        got = ds.images(range(30), r)
        assert got.dtype == np.uint8 and got.shape == (30, r, r, 3)
        np.testing.assert_array_equal(got, expected)  # exact: one decode/crop/resize path
        # and read independently of PreparedDataset, straight from the archive
        with zipfile.ZipFile(root / "toy" / f"r{r:03d}" / "shard-00002.zip") as zf:
            direct = np.asarray(Image.open(io.BytesIO(zf.read("00000017.png"))))
        np.testing.assert_array_equal(direct, expected[17])


def test_zip_source_gives_identical_archives(prepared, source, tmp_path):
    root, _ = prepared
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(source.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(source).as_posix())
    prep.prepare("toy", archive, RES, tmp_path / "data", skip_bad=True, shard_size=SHARD)
    a = json.loads((root / "toy" / "manifest.json").read_text())["resolutions"]
    b = json.loads((tmp_path / "data" / "toy" / "manifest.json").read_text())["resolutions"]
    assert a == b  # same pixels, fixed zip timestamps: byte-identical archives


# --- resuming, re-running, extending ----------------------------------------


def test_interrupted_prepare_resumes_with_the_missing_shards_only(source, prepared, tmp_path, run_cli,
                                                                  monkeypatch):
    root = tmp_path / "data"
    dest = root / "toy"
    real_png, calls = prep._png, []

    def png_then_interrupt(arr):  # Ctrl-C in the middle of shard 1
        calls.append(1)
        if len(calls) == 2 * SHARD + 5:
            raise KeyboardInterrupt
        return real_png(arr)

    monkeypatch.setattr(prep, "_png", png_then_interrupt)
    code, _, err = _prepare(run_cli, source, root, "--skip-bad")
    monkeypatch.undo()
    assert code == 130 and "run the same command again" in err
    assert not (dest / "manifest.json").exists() and (dest / "prepare.json").is_file()
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("shard-*")) == [
        "r016/shard-00000.json", "r016/shard-00000.zip", "r024/shard-00000.json", "r024/shard-00000.zip"]
    assert not list(dest.rglob("*.tmp"))  # the half-written shard 1 was removed
    # what a SIGKILL leaves: a temp file, and an archive whose sidecar was never written
    (dest / "r016" / ".shard-00002.zip.x1y2.tmp").write_bytes(b"partial")
    (dest / "r024" / "shard-00003.zip").write_bytes(b"partial")
    before = _tree(dest)

    summary = prep.prepare("toy", source, RES, root, skip_bad=True, shard_size=SHARD)
    assert sorted(summary["written"]) == sorted(f"r{r:03d}/shard-{k:05d}.zip" for r in RES for k in (1, 2, 3))
    assert summary["reused"] == 2
    after = _tree(dest)
    for f in ("r016/shard-00000.zip", "r024/shard-00000.zip"):
        assert after[f] == before[f]  # not rewritten
    assert not list(dest.rglob("*.tmp"))
    fresh = json.loads((prepared[0] / "toy" / "manifest.json").read_text())["resolutions"]
    assert json.loads((dest / "manifest.json").read_text())["resolutions"] == fresh


def test_damaged_or_deleted_shard_is_redone_and_rerun_is_a_no_op(source, tmp_path, run_cli):
    root = tmp_path / "data"
    dest = root / "toy"
    prep.prepare("toy", source, RES, root, skip_bad=True, shard_size=SHARD)
    manifest = json.loads((dest / "manifest.json").read_text())
    (dest / "r024" / "shard-00001.zip").unlink()
    damaged = dest / "r016" / "shard-00002.zip"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: only the checksum can tell
    damaged.write_bytes(bytes(data))

    summary = prep.prepare("toy", source, RES, root, skip_bad=True, shard_size=SHARD)
    assert sorted(summary["written"]) == ["r016/shard-00002.zip", "r024/shard-00001.zip"]
    assert json.loads((dest / "manifest.json").read_text())["resolutions"] == manifest["resolutions"]

    before = _tree(dest)
    code, _, err = _prepare(run_cli, source, root, "--skip-bad")
    assert code == 0 and "nothing to do" in err
    assert _tree(dest) == before  # not a byte, not a timestamp


def test_new_resolutions_are_added_alone(source, tmp_path):
    root = tmp_path / "data"
    prep.prepare("toy", source, [16], root, skip_bad=True, shard_size=SHARD)
    first = json.loads((root / "toy" / "manifest.json").read_text())
    summary = prep.prepare("toy", source, [16, 32], root, skip_bad=True, shard_size=SHARD)
    assert sorted(summary["written"]) == [f"r032/shard-{k:05d}.zip" for k in range(4)]
    m = json.loads((root / "toy" / "manifest.json").read_text())
    assert sorted(m["resolutions"], key=int) == ["16", "32"] and m["created"] == first["created"]
    assert m["resolutions"]["16"] == first["resolutions"]["16"]
    assert PreparedDataset("toy", root).images([29], 32).shape == (1, 32, 32, 3)


def test_other_arguments_for_the_same_name_are_refused(source, prepared, tmp_path, run_cli):
    root, _ = prepared
    for extra, then in [((), "--skip-bad"), (("--skip-bad", "--source", str(tmp_path)), "--source")]:
        (tmp_path / "x.png").write_bytes(_png_bytes(Image.new("RGB", (8, 8))))
        code, _, err = run_cli("data", "prepare", "toy", "--source", str(source), "--resolutions", "16",
                               "--out", str(root), "--shard-size", str(SHARD), *extra)
        assert code == 2 and "prepared with other arguments" in err and then in err
        assert "use another NAME or delete" in err
    (tmp_path / "other" / "toy").mkdir(parents=True)
    (tmp_path / "other" / "toy" / "notes.txt").write_text("mine")
    code, _, err = _prepare(run_cli, source, tmp_path / "other", "--skip-bad")
    assert code == 2 and "not a dataset this command made" in err


def test_filter_is_recorded_used_and_checked(source, prepared, tmp_path, run_cli):
    root = tmp_path / "data"
    code, _, err = _prepare(run_cli, source, root, "--skip-bad", "--filter", "bilinear-aa", res=[16])
    assert code == 0, err
    m = json.loads((root / "toy" / "manifest.json").read_text())
    assert m["filter"] == "bilinear-aa" and m["filter_description"].startswith("bilinear-aa: ")
    assert "torchvision Resize" in m["filter_description"]
    lanczos = json.loads((prepared[0] / "toy" / "manifest.json").read_text())
    assert lanczos["filter"] == "lanczos" and lanczos["filter_description"].startswith("lanczos: ")
    folder = ImageFolder(source, filter="bilinear-aa")
    kept = [i for i, f in enumerate(folder.files) if f != BAD]
    got = PreparedDataset("toy", root).images(range(30), 16)
    np.testing.assert_array_equal(got, folder.images(kept, 16))
    assert not np.array_equal(got, PreparedDataset("toy", prepared[0]).images(range(30), 16))
    assert PreparedDataset("toy", root).describe()["filter"] == "bilinear-aa"

    # the same NAME with another filter is refused like any other changed argument
    code, _, err = _prepare(run_cli, source, root, "--skip-bad", res=[16])
    assert code == 2 and err.count("error:") == 1
    assert "(then: --filter bilinear-aa; now: --filter lanczos)" in err
    code, _, err = _prepare(run_cli, source, root, "--skip-bad", "--filter", "nearest", res=[16])
    assert code == 2 and "resize filter 'nearest' is not known" in err

    # a suite that states another filter stops at planning, in one line, with the command that fixes it
    from bench.plan import plan_suite

    cfg = parse_suite({"name": "s", "dataset": {"kind": "prepared", "name": "toy", "root": str(root),
                                                "filter": "lanczos"},
                       "models": [{"name": "m", "adapter": "unet", "train": {"resolutions": [16], "steps": 1}}],
                       "sample": {"resolutions": [16], "n": 2}})
    with pytest.raises(BenchError) as exc:
        plan_suite(cfg)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"dataset toy in {root / 'toy'} was prepared with --filter bilinear-aa, but the "
                              "suite's dataset says filter: lanczos; delete ")
    assert message.endswith(f"run: bench data prepare toy --source {source.resolve()} --resolutions 16 "
                            f"--out {root} --skip-bad --shard-size 8")
    assert PreparedDataset("toy", root, filter="bilinear-aa").validate([16])["count"] == 30
    assert PreparedDataset("toy", root).validate([16])["count"] == 30  # no filter stated: not checked
    # without data, the printed command asks for the suite's filter
    with pytest.raises(BenchError, match=r"--resolutions 16 --out \S+ --filter bilinear-aa$"):
        PreparedDataset("toy", tmp_path / "none", source="/src", filter="bilinear-aa").validate([16])


def test_bad_arguments_are_one_line_errors(source, tmp_path, run_cli):
    for args, needle in [(("--resolutions", "16,abc"), "'abc' is not an integer"),
                         (("--resolutions", "4"), "out of range"),
                         (("--resolutions", ","), "empty")]:
        code, _, err = run_cli("data", "prepare", "toy", "--source", str(source), "--out", str(tmp_path), *args)
        assert code == 2 and needle in err and err.count("error:") == 1
    code, _, err = run_cli("data", "prepare", "../up", "--source", str(source), "--resolutions", "16",
                           "--out", str(tmp_path))
    assert code == 2 and "not a plain folder name" in err
    code, _, err = run_cli("data", "prepare", "toy", "--source", str(tmp_path / "none"), "--resolutions", "16",
                           "--out", str(tmp_path))
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "toy").exists()


def test_ranks_split_shards_and_rank0_writes_the_manifest(source, prepared, tmp_path):
    """Two processes as torchrun would start them: shard k by rank k % 2, same bytes as one process."""
    root = tmp_path / "data"
    cmd = [sys.executable, "-m", "bench", "data", "prepare", "toy", "--source", str(source), "--resolutions",
           ",".join(map(str, RES)), "--out", str(root), "--shard-size", str(SHARD), "--skip-bad"]
    procs = [subprocess.Popen(cmd, cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "COLUMNS": "200"})
             for rank in (1, 0)]  # rank 1 first: it must wait for rank 0's verify pass
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert "rank 1: 4 shard archives written, 0 reused" in errs[0]
    assert "4 shard archives written, 0 reused" in errs[1]  # rank 0: shards 0 and 2 at two resolutions
    one = json.loads((prepared[0] / "toy" / "manifest.json").read_text())
    two = json.loads((root / "toy" / "manifest.json").read_text())
    assert two["resolutions"] == one["resolutions"]


# --- the prepared dataset ---------------------------------------------------


def test_prepared_dataset_is_registered_and_describes_itself(prepared):
    root, _ = prepared
    assert DATASETS["prepared"] is PreparedDataset
    ds = build_dataset("prepared", name="toy", root=str(root))
    assert isinstance(ds, ImageDataset) and ds.name == "toy"
    d = ds.describe()
    assert d["kind"] == "prepared" and d["size"] == 30 and d["skipped"] == 1 and d["resolutions"] == RES
    json.dumps(d)
    assert ds.image(3, 16).shape == (16, 16, 3)
    with pytest.raises(BenchError, match="out of range"):
        ds.images([30], 16)
    with pytest.raises(BenchError, match="not prepared at 32 px"):
        ds.images([0], 32)
    ds.images([0, 9], 24)  # opens two shards; the handles must not survive pickling
    import pickle
    assert np.array_equal(pickle.loads(pickle.dumps(ds)).images([9], 24), ds.images([9], 24))


def test_validate_prints_the_command_that_fixes_it(source, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("DFU_BENCH_DATA", str(tmp_path / "data"))
    ds = PreparedDataset("toy", source="/path/to/toy")
    with pytest.raises(BenchError) as err:
        ds.validate([24, 16, 24])
    assert str(err.value) == (f"dataset toy is not prepared in {tmp_path / 'data' / 'toy'} (no manifest.json); "
                              "run: bench data prepare toy --source /path/to/toy --resolutions 16,24")
    with pytest.raises(BenchError, match=r"--resolutions 16 --out /elsewhere$"):
        PreparedDataset("toy", root="/elsewhere", source="/path/to/toy").validate([16])

    code, _, err_text = run_cli("data", "prepare", "toy", "--source", str(source), "--resolutions", "16",
                                "--shard-size", str(SHARD), "--skip-bad")
    assert code == 0, err_text
    with pytest.raises(BenchError) as err:
        PreparedDataset("toy").validate([16, 24])
    message = str(err.value)
    assert "is not prepared at 24 px (has 16)" in message
    command = message.split("run: ", 1)[1]
    assert command == f"bench data prepare toy --source {source.resolve()} --resolutions 24 --skip-bad --shard-size 8"
    code, _, err_text = run_cli(*shlex.split(command)[1:])  # the printed command works as printed
    assert code == 0, err_text
    assert PreparedDataset("toy").validate([16, 24])["count"] == 30

    (tmp_path / "data" / "toy" / "r024" / "shard-00003.zip").unlink()
    with pytest.raises(BenchError, match=r"shard-00003.zip is missing.*--resolutions 24 --skip-bad"):
        PreparedDataset("toy").validate([16, 24])


def test_suite_dataset_config_for_prepared():
    base = {"name": "s", "models": [{"name": "m", "adapter": "unet", "train": {"resolutions": [16], "steps": 1}}],
            "sample": {"resolutions": [16], "n": 2}}
    cfg = parse_suite({**base, "dataset": {"kind": "prepared", "name": "ffhq", "source": "/x"}})
    assert (cfg.dataset.name, cfg.dataset.root, cfg.dataset.source) == ("ffhq", None, "/x")
    for dataset, needle in [({"kind": "prepared"}, "prepared needs `name`"),
                            ({"kind": "prepared", "name": "a", "path": "/x"}, "remove `path`"),
                            ({"kind": "toyfaces", "name": "a"}, "only apply to kind: prepared"),
                            ({"kind": "toyfaces", "filter": "lanczos"}, "remove `filter`"),
                            ({"kind": "prepared", "name": "a", "filter": "bicubic"}, "dataset.filter"),
                            ({"kind": "prepared", "name": "../a"}, "dataset.name")]:
        with pytest.raises(BenchError, match=needle) as err:
            parse_suite({**base, "dataset": dataset})
        assert "\n" not in str(err.value)
