"""torch-fidelity's inception-v3-compat extractor on the converted clean-fid TorchScript weights, offline."""
from __future__ import annotations

import json
import socket
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.errors import BenchError
from bench.fidelity import (
    CACHE_NAME,
    convert_weights,
    expected_state_shapes,
    fidelity_extractor,
    fidelity_metrics,
    fidelity_weights_meta,
    fidelity_weights_path,
    key_mapping,
    load_converted,
)
from bench.inception import resolve
from bench.io import read_sidecar
from bench.metrics import precision_recall


class DownloadAttempted(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise DownloadAttempted(f"network access attempted: {args[:1]}")


_real_connect = socket.socket.connect


def _connect_local_only(sock, address):
    """Unix sockets (multiprocessing DataLoader workers) pass; any IP connection is refused."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(address)
    return _real_connect(sock, address)


@pytest.fixture(scope="module")
def offline():
    """Every download route torch / torch-fidelity could take raises, for the whole module."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "download_url_to_file", _refuse)
        mp.setattr(torch.hub, "load_state_dict_from_url", _refuse)
        mp.setattr(fe, "load_state_dict_from_url", _refuse)
        mp.setattr(urllib.request, "urlopen", _refuse)
        mp.setattr(urllib.request, "urlretrieve", _refuse)
        mp.setattr(socket.socket, "connect", _connect_local_only)
        yield


@pytest.fixture(scope="module")
def source(offline, tmp_path_factory):
    """The resolved TorchScript file, pinned by env; converted weights go to a fresh cache."""
    path, _ = resolve(allow_download=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFU_BENCH_INCEPTION", str(path))
        mp.setenv("DFU_BENCH_CACHE", str(tmp_path_factory.mktemp("fidelity-cache")))
        yield path


@pytest.fixture(scope="module")
def converted(source):
    return convert_weights(source)


@pytest.fixture(scope="module")
def extractor(source):
    return fidelity_extractor("cpu")


def smooth_images(n: int, size: int = 299, seed: int = 0) -> torch.Tensor:
    """n smooth random RGB uint8 images, Nx3xHxW."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 6, 6, generator=g) * 255
    return F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 255).round().to(
        torch.uint8)


def test_guard_blocks_downloads(offline):
    with pytest.raises(DownloadAttempted):
        torch.hub.download_url_to_file("https://example.invalid/x", "/tmp/x")
    with pytest.raises(DownloadAttempted):
        socket.create_connection(("127.0.0.1", 9))


def test_converted_weights_fill_every_key(source, converted):
    expected = expected_state_shapes()
    assert len(expected) == 566
    assert set(converted) == set(expected)
    for k, shape in expected.items():
        assert tuple(converted[k].shape) == tuple(shape), k
    # the mapping is one-to-one and consumes every TorchScript tensor
    mapping = key_mapping()
    assert len(set(mapping.values())) == len(mapping)
    holder = torch.jit.load(str(source), map_location="cpu")
    holder = holder if hasattr(holder, "layers") else holder.net
    script_sd = holder.state_dict()
    assert set(script_sd) <= set(mapping)
    assert converted.meta["n_source_tensors"] == len(script_sd)
    for ts_key, tf_key in [("layers.conv.weight", "Conv2d_1a_3x3.conv.weight"),
                           ("layers.mixed_4.tower_1.conv_3.var", "Mixed_6b.branch7x7dbl_4.bn.running_var"),
                           ("layers.mixed_10.tower_1_mixed_conv_1.beta", "Mixed_7c.branch3x3dbl_3b.bn.bias")]:
        assert torch.equal(converted[tf_key], script_sd[ts_key])
    assert torch.equal(converted["Mixed_7c.branch_pool.bn.weight"], torch.ones(192))
    assert converted.head_available == ("output.weight" in script_sd)
    if not converted.head_available:
        assert torch.isnan(converted["fc.weight"]).all() and torch.isnan(converted["fc.bias"]).all()
        assert converted.meta["synthesized"]["fc (NaN placeholder)"] == ["fc.weight", "fc.bias"]


def test_convert_rejects_foreign_file(tmp_path):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.layers(x)

    p = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(p))
    with pytest.raises(BenchError, match="no torch-fidelity key"):
        convert_weights(p)


def test_weights_cached_once_with_checksum(source, converted, extractor):
    from bench.io import cache_dir

    path = fidelity_weights_path()
    assert path == cache_dir() / CACHE_NAME and path.is_file()
    stamp = path.stat().st_mtime_ns
    assert fidelity_weights_path() == path and path.stat().st_mtime_ns == stamp  # not rewritten
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta == fidelity_weights_meta()
    assert meta["head_available"] == converted.head_available and len(meta["sha256"]) == 64
    back = load_converted(path)  # weights_only=True
    assert set(back) == set(converted)
    assert torch.equal(back["Mixed_6e.branch7x7_2.conv.weight"], converted["Mixed_6e.branch7x7_2.conv.weight"])
    # a sidecar that does not match the file is not trusted
    sidecar = path.with_suffix(".json")
    good = sidecar.read_text()
    try:
        sidecar.write_text(json.dumps(dict(meta, sha256="0" * 64)))
        assert read_sidecar(path) is None
    finally:
        sidecar.write_text(good)
    assert read_sidecar(path) == meta


def test_both_pipelines_give_same_features(source, extractor):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = smooth_images(4)
    # torch-fidelity always calls its TF1 bilinear resize; at 299 -> 299 it is an exact identity
    xf = x.float()
    assert torch.equal(interpolate_bilinear_2d_like_tensorflow1x(xf, size=(299, 299), align_corners=False), xf)

    holder = torch.jit.load(str(source), map_location="cpu")
    holder = holder if hasattr(holder, "layers") else holder.net
    with torch.no_grad():
        clean = holder.layers((xf - 128) / 128).view(4, 2048)  # clean-fid clean mode
        (ours,) = extractor(x)  # uint8 in, torch-fidelity preprocessing
    assert ours.shape == (4, 2048) and torch.isfinite(ours).all()
    assert (ours[0] - ours[1]).abs().max() > 1e-2  # different images, different features
    diff = (clean - ours).abs().max().item()
    print(f"max abs diff clean-fid vs torch-fidelity features: {diff:.3g}")
    assert diff <= 1e-4


def test_precision_recall():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((40, 16)).astype(np.float32)
    same = precision_recall(real, real.copy(), k=3)
    assert same == {"precision": 1.0, "recall": 1.0}
    shifted = precision_recall(real, real + 1.5, k=3)
    assert shifted["precision"] < 0.9 and shifted["recall"] < 0.9
    far = precision_recall(torch.from_numpy(real), torch.from_numpy(real + 100.0), k=3)
    assert far == {"precision": 0.0, "recall": 0.0}
    # torch-fidelity's convention (input1 = fake) is honoured: a fake set collapsed onto
    # one real point is precise but has poor recall
    collapsed = np.repeat(real[:1], 40, axis=0) + rng.standard_normal((40, 16)).astype(np.float32) * 1e-3
    pr = precision_recall(real, collapsed, k=3)
    assert pr["precision"] == 1.0 and pr["recall"] < 0.2
    with pytest.raises(BenchError, match="more than 3 samples"):
        precision_recall(real[:3], real[:3], k=3)


def _write_pngs(folder, images: torch.Tensor):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")


class _Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def test_calculate_metrics_prc_runs_offline(source, tmp_path):
    import torch_fidelity

    imgs = smooth_images(4, size=48, seed=1)
    _write_pngs(tmp_path / "a", imgs)
    # folder (PNG, lossless) vs the same images as an in-memory Dataset: identical features
    out = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "a"), input2=_Images(imgs), prc=True, feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(fidelity_weights_path()), cuda=False, cache=False, verbose=False,
        batch_size=4, save_cpu_ram=True,  # save_cpu_ram: no DataLoader worker processes
    )
    assert out["precision"] == 1.0 and out["recall"] == 1.0


def test_inception_score_without_head_is_one_line_error(source):
    meta = fidelity_weights_meta()
    if meta["head_available"]:
        pytest.skip("this Inception file carries the classifier head")
    with pytest.raises(BenchError) as exc:
        fidelity_metrics("unused-input", isc=True)
    msg = str(exc.value)
    assert "Inception Score" in msg and "head" in msg and "\n" not in msg
    with pytest.raises(BenchError) as exc:
        fidelity_extractor("cpu", features=["2048", "logits_unbiased"])
    assert "logits_unbiased" in str(exc.value) and "\n" not in str(exc.value)
