"""`bench import-checkpoint network-snapshot.pkl`: EDM snapshots read as data, never run.

The snapshots here come from a small test-only writer (below), not from EDM's code: it emits
what EDM's torch_utils/persistence.py and training loop emit (a dict of ema / loss_fn /
augment_pipe / dataset_kwargs; each persistent module a REDUCE of
`torch_utils.persistence._reconstruct_persistent_obj` on a meta dict with type, version,
module_src, class_name and state; the authors' DualConv/SpectralConv2d and torch's ModuleDict
pickled plainly by reference; tensors and numpy scalars as torch and numpy pickle them).
"""
from __future__ import annotations

import copyreg
import functools
import json
import math
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from torch import nn

import models
from models.edm import EDMPrecond
from models.layers import Conv2d, DualConv, DualUNetBlock, GroupNorm, Linear, PositionalEmbedding, SpectralConv2d
from models.networks import DualUNet, get_arch
from models.snapshot import SnapshotError, authors_state_dict, infer_arch, network_records, read_snapshot

# ----------------------------------------------------------------------------
# A minimal EDM-snapshot writer (test only).


def _reconstruct_persistent_obj(meta):  # pickled by reference only; never called
    raise AssertionError("the writer's stand-in is never called")


class _DualConv:  # the authors' plain (non-persistent) classes, pickled by reference
    pass


class _SpectralConv2d:
    pass


for _cls, _name in ((_DualConv, "DualConv"), (_SpectralConv2d, "SpectralConv2d")):
    _cls.__module__, _cls.__name__, _cls.__qualname__ = "training.networks", _name, _name
_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


@contextmanager
def _edm_module_names():
    """Make `torch_utils.persistence` and `training.networks` resolvable while pickling, as
    they are in EDM's process: pickle saves functions and classes by module and name."""
    fakes = {"torch_utils": types.ModuleType("torch_utils"),
             "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
             "training": types.ModuleType("training"),
             "training.networks": types.ModuleType("training.networks")}
    fakes["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    fakes["training.networks"].DualConv = _DualConv
    fakes["training.networks"].SpectralConv2d = _SpectralConv2d
    assert not set(fakes) & set(sys.modules)
    sys.modules.update(fakes)
    try:
        yield
    finally:
        for name in fakes:
            del sys.modules[name]


class Persistent:
    """An object that pickles as EDM's persistence decorator pickles its instances."""

    def __init__(self, class_name: str, state: dict, source: str):
        self.class_name, self.state, self.source = class_name, state, source


class Plain:
    """An object of class `cls` pickled plainly: NEWOBJ + BUILD(state)."""

    def __init__(self, cls: type, state: dict):
        self.cls, self.state = cls, state

    @property
    def __class__(self):  # pickle's NEWOBJ checks that the object is of the class it names
        return self.cls


class Call:
    """Pickles as a call func(*args) (REDUCE): how a booby-trapped pickle runs code."""

    def __init__(self, func, *args):
        self.func, self.args = func, args


class _Writer(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, Persistent):
            meta = dict(type="class", version=6, module_src=obj.source, class_name=obj.class_name, state=obj.state)
            return _reconstruct_persistent_obj, (meta,), None
        if type(obj) is Plain:
            return copyreg.__newobj__, (obj.cls,), obj.state
        if isinstance(obj, Call):
            return obj.func, obj.args
        return NotImplemented


def write_snapshot(path, snapshot) -> None:
    with _edm_module_names(), open(path, "wb") as f:
        _Writer(f, protocol=pickle.DEFAULT_PROTOCOL).dump(snapshot)


def _module_state(module: nn.Module, children: dict) -> dict:
    """A torch module's __dict__ as EDM pickles it: parameters (requires_grad off, as in the
    saved EMA), buffers, hook dicts, children and the plain attributes."""
    state = {"training": False,
             "_parameters": {k: None if v is None else nn.Parameter(v.detach().clone(), requires_grad=False)
                             for k, v in module._parameters.items()},
             "_buffers": dict(module._buffers), "_non_persistent_buffers_set": set(),
             "_backward_hooks": OrderedDict(), "_forward_hooks": OrderedDict(), "_forward_pre_hooks": OrderedDict(),
             "_state_dict_hooks": OrderedDict(), "_load_state_dict_pre_hooks": OrderedDict(), "_modules": children}
    for k, v in vars(module).items():
        if not k.startswith("_") and (v is None or isinstance(v, (bool, int, float, str))):
            state[k] = v
    if "skip_scale" in state:  # EDM computes it as np.sqrt(0.5): a numpy scalar in the pickle
        state["skip_scale"] = np.float64(state["skip_scale"])
    return state


_PERSISTENT_NAMES = {EDMPrecond: "EDMPrecond", DualUNet: "DualUNet", DualUNetBlock: "DualUNetBlock",
                     Conv2d: "Conv2d", Linear: "Linear", GroupNorm: "GroupNorm",
                     PositionalEmbedding: "PositionalEmbedding"}


def edm_tree(module: nn.Module, source: str, kwargs: dict, song_resolution: int | None = None, name: str = ""):
    """Our network as the EDM object tree. `kwargs`: qualified name -> recorded init kwargs.
    With `song_resolution`, lay a spatial DualUNet out as EDM's SongUNet: modules named by
    resolution (enc.32x32_block0), blocks of class UNetBlock, and each 3x3 conv a Conv2d in
    the place of our DualConv."""
    if song_resolution is not None and isinstance(module, DualConv):
        assert module.spectral_conv is None
        return edm_tree(module.spatial_conv, source, kwargs, song_resolution, name)
    children = {}
    for child_name, child in module._modules.items():
        label = child_name
        if song_resolution is not None and name in ("model.enc", "model.dec"):
            level, rest = child_name.split("_", 1)
            res = song_resolution >> int(level)
            label = f"{res}x{res}_{rest}"
        qualified = f"{name}.{child_name}" if name else child_name
        children[label] = None if child is None else edm_tree(child, source, kwargs, song_resolution, qualified)
    state = _module_state(module, children)
    if isinstance(module, (DualConv, SpectralConv2d, nn.ModuleDict)):
        cls = {DualConv: _DualConv, SpectralConv2d: _SpectralConv2d}.get(type(module), type(module))
        return Plain(cls, state)
    class_name = _PERSISTENT_NAMES[type(module)]
    if song_resolution is not None:
        class_name = {"DualUNet": "SongUNet", "DualUNetBlock": "UNetBlock"}.get(class_name, class_name)
    state["_init_args"] = ()
    state["_init_kwargs"] = kwargs.get(name, {"init_attn": {"init_mode": "xavier_uniform",
                                                             "init_weight": np.float64(math.sqrt(0.2))}})
    return Persistent(class_name, state, source)


def dualunet_kwargs(arch) -> dict:
    """The authors' DualUNet constructor kwargs for an ArchConfig (their names)."""
    return dict(augment_dim=arch.augment_dim, model_channels=arch.model_channels,
                channel_mult=list(arch.channel_mult), num_blocks=arch.num_blocks,
                attn_levels=list(arch.attn_levels), modes1_list=list(arch.modes1), modes2_list=list(arch.modes2),
                dual_block_thresh=arch.dual_block_thresh,
                mode={"spatial": "def", "spectral": "fourier", "dual": "dual"}[arch.mode], dropout=arch.dropout)


def songunet_kwargs(arch, img_resolution: int) -> dict:
    """EDM's SongUNet kwargs (DDPM++ settings, as EDM's train.py passes them) for an ArchConfig."""
    return dict(embedding_type="positional", encoder_type="standard", decoder_type="standard",
                channel_mult_noise=arch.channel_mult_noise, resample_filter=[1, 1],
                model_channels=arch.model_channels, channel_mult=list(arch.channel_mult),
                num_blocks=arch.num_blocks, attn_resolutions=[img_resolution >> lv for lv in arch.attn_levels],
                dropout=arch.dropout, augment_dim=arch.augment_dim)


def edm_snapshot(net: EDMPrecond, model_type: str = "DualUNet", source: str = "# module source\n",
                 img_resolution: int = 32, model_kwargs: dict | None = None, precond_state: dict | None = None,
                 extra: dict | None = None) -> dict:
    """EDM's snapshot dict around `net` (the dict EDM's training loop pickles)."""
    arch = net.model.arch
    if model_kwargs is None:
        model_kwargs = dualunet_kwargs(arch) if model_type == "DualUNet" else songunet_kwargs(arch, img_resolution)
    interface = dict(img_channels=arch.img_channels, label_dim=0, use_fp16=False)
    if model_type == "SongUNet":
        interface = dict(img_resolution=img_resolution, **interface)
    kwargs = {"": dict(interface, model_type=model_type, **model_kwargs),
              "model": dict(in_channels=arch.img_channels, out_channels=arch.img_channels, label_dim=0,
                            **({"img_resolution": img_resolution} if model_type == "SongUNet" else {}),
                            **model_kwargs)}
    ema = edm_tree(net, source, kwargs, img_resolution if model_type == "SongUNet" else None)
    ema.state.update({"img_channels": arch.img_channels, "label_dim": 0, "use_fp16": False, "sigma_min": 0,
                      "sigma_max": float("inf"), "sigma_data": 0.5, **(precond_state or {})})
    loss_fn = Persistent("EDMLoss", {"P_mean": -1.2, "P_std": 1.2, "sigma_data": 0.5, "_init_args": (),
                                     "_init_kwargs": {}}, source)
    augment_pipe = Persistent("AugmentPipe", {"p": 0.12, "xflip": 1e8, "_init_args": (), "_init_kwargs": {"p": 0.12}},
                              source)
    return dict(ema=ema, loss_fn=loss_fn, augment_pipe=augment_pipe,
                dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="faces.zip",
                                    use_labels=False, xflip=False, cache=True, resolution=img_resolution),
                **(extra or {}))


def random_net(arch) -> EDMPrecond:
    """Our network with every weight perturbed, so near-zero-initialised layers count too."""
    torch.manual_seed(0)
    net = EDMPrecond(DualUNet(arch)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net


DFU_ARCH = get_arch("cpu-tiny", augment_dim=9)  # dual mode, spectral at levels 0-2, attention at 3
UNET_ARCH = get_arch("cpu-tiny", mode="spatial", channel_mult=(1, 2, 2), attn_levels=(1,),
                     modes1=(None,) * 3, modes2=(None,) * 3, dual_block_thresh=-1, num_blocks=2, dropout=0.1)


def assert_same_denoiser(ours: EDMPrecond, path, resolutions) -> None:
    loaded = models.load(path)
    g = torch.Generator().manual_seed(3)
    for res in resolutions:
        x = torch.randn(2, 3, res, res, generator=g)
        sigma = torch.tensor([0.4, 5.0])
        with torch.no_grad():
            diff = (loaded(x, sigma) - ours(x, sigma)).abs().max().item()
        assert diff <= 1e-5, (res, diff)


def trap_source(marker) -> str:
    """Module source that leaves a marker file behind if anything executes it."""
    return f"open({str(marker)!r}, 'w').write('the embedded source ran')\nimport torch\n"


# ----------------------------------------------------------------------------
# Real networks: import, then the same denoiser.


def test_dfu_snapshot_imports_to_the_same_denoiser_without_running_its_source(run_cli, tmp_path, one_thread):
    """A DFU (dual mode) snapshot whose embedded module source would create a file if run."""
    marker = tmp_path / "source-ran"
    net = random_net(DFU_ARCH)
    write_snapshot(tmp_path / "network-snapshot-000100.pkl", edm_snapshot(net, source=trap_source(marker)))
    out = tmp_path / "ckpt" / "dfu.safetensors"
    code, stdout, err = run_cli("import-checkpoint", str(tmp_path / "network-snapshot-000100.pkl"), "--out", str(out))
    assert code == 0, err
    assert not marker.exists()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["arch_config"] == DFU_ARCH.to_dict()
    assert meta["snapshot"]["network"] == "EDMPrecond(DualUNet)"
    assert_same_denoiser(net, out, [16, 24])


def test_songunet_snapshot_imports_as_a_spatial_unet(run_cli, tmp_path, one_thread):
    """EDM's DDPM++ SongUNet, whose modules are named by resolution (enc.32x32_conv)."""
    net = random_net(UNET_ARCH)
    write_snapshot(tmp_path / "song.pkl", edm_snapshot(net, model_type="SongUNet", img_resolution=32))
    out = tmp_path / "unet.safetensors"
    code, _, err = run_cli("import-checkpoint", str(tmp_path / "song.pkl"), "--out", str(out))
    assert code == 0, err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["arch_config"] == UNET_ARCH.to_dict()
    assert (meta["snapshot"]["network"], meta["snapshot"]["img_resolution"]) == ("EDMPrecond(SongUNet)", 32)
    assert_same_denoiser(net, out, [16, 32])


# Keys of EDM's EDMPrecond(SongUNet) state_dict for UNET_ARCH at img_resolution 32 (a sample,
# read off NVlabs/edm training/networks.py; the writer's full key set was checked equal to that
# of a snapshot pickled by EDM's own code), and where each lands in our layout.
SONG_KEYS = {
    "model.map_layer0.weight": "model.map_layer0.weight",
    "model.enc.32x32_conv.weight": "model.enc.0_conv.spatial_conv.weight",
    "model.enc.32x32_block1.conv0.bias": "model.enc.0_block1.conv0.spatial_conv.bias",
    "model.enc.16x16_down.conv0.resample_filter": "model.enc.1_down.conv0.spatial_conv.resample_filter",
    "model.enc.16x16_down.skip.weight": "model.enc.1_down.skip.weight",
    "model.enc.16x16_block0.qkv.weight": "model.enc.1_block0.qkv.weight",
    "model.dec.8x8_in0.proj.bias": "model.dec.2_in0.proj.bias",
    "model.dec.8x8_in1.conv1.weight": "model.dec.2_in1.conv1.spatial_conv.weight",
    "model.dec.16x16_up.skip.resample_filter": "model.dec.1_up.skip.resample_filter",
    "model.dec.16x16_block2.norm2.weight": "model.dec.1_block2.norm2.weight",
    "model.dec.32x32_aux_norm.bias": "model.dec.0_aux_norm.bias",
    "model.dec.32x32_aux_conv.weight": "model.dec.0_aux_conv.spatial_conv.weight",
}


def test_songunet_keys_are_edms_and_map_onto_ours(tmp_path):
    net = random_net(UNET_ARCH)
    write_snapshot(tmp_path / "song.pkl", edm_snapshot(net, model_type="SongUNet", img_resolution=32))
    precond, model = network_records(read_snapshot(tmp_path / "song.pkl"))
    edm = {}
    stack = [(precond, "")]
    while stack:  # EDM's own names, before any mapping
        rec, pre = stack.pop()
        edm.update({pre + k: v for k, v in {**rec.state["_parameters"], **rec.state["_buffers"]}.items()
                    if v is not None})
        stack += [(c, f"{pre}{n}.") for n, c in rec.state["_modules"].items() if c is not None]
    assert set(SONG_KEYS) <= set(edm)
    mapped = authors_state_dict(precond, model)
    assert set(mapped) == set(net.state_dict())
    for edm_key, ours in SONG_KEYS.items():  # the very tensor moved (every weight is distinct)
        assert torch.equal(mapped[ours], edm[edm_key]) and torch.equal(mapped[ours], net.state_dict()[ours]), edm_key


def test_spectral_mode_and_numpy_scalars_are_read_as_plain_data(tmp_path):
    """FNO-UNet ('fourier') arch inference; numpy scalars come back as Python floats."""
    arch = get_arch("cpu-tiny", mode="spectral", attn_levels=(3,))
    write_snapshot(tmp_path / "fno.pkl", edm_snapshot(random_net(arch)))
    precond, model = network_records(read_snapshot(tmp_path / "fno.pkl"))
    assert infer_arch(model) == arch
    block = model.child("enc").child("0_block0")
    assert block.class_name == "DualUNetBlock" and block.persistent
    assert type(block.state["skip_scale"]) is float and block.state["skip_scale"] == math.sqrt(0.5)
    conv = block.child("conv0")
    assert (conv.module, conv.class_name, conv.persistent) == ("training.networks", "DualConv", False)
    assert model.child("enc").module == "torch.nn.modules.container"
    assert len(precond.source_sha256) == 64 and precond.init_kwargs["model_type"] == "DualUNet"


# ----------------------------------------------------------------------------
# Booby-trapped files: refused, nothing run, nothing written.


class _PickledCall:
    """Pickles as func(*args) under plain pickle.dumps (for the nested storage stream)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _nested_storage_trap(cmd: str) -> bytes:
    """Bytes for torch.storage._load_from_bytes (torch.save's legacy stream) whose object
    pickle calls os.system: torch's own loader would run it (weights_only=False)."""
    sys_info = dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4))
    head = (0x1950A86A20F9469CFC6C, 1001, sys_info)
    return b"".join(pickle.dumps(x, protocol=2) for x in head) + pickle.dumps(_PickledCall(os.system, cmd), protocol=2)


TRAPS = {
    "os.system": lambda m: Call(os.system, f"touch {m}"),
    "builtins.exec": lambda m: Call(exec, f"open({str(m)!r}, 'w').write('x')"),
    "builtins.eval": lambda m: Call(eval, f"open({str(m)!r}, 'w').write('x')"),
    "subprocess.call": lambda m: Call(subprocess.call, ["touch", str(m)]),
    "functools.partial": lambda m: Call(functools.partial(os.system, f"touch {m}")),
    "nested storage": lambda m: Call(torch.storage._load_from_bytes, _nested_storage_trap(f"touch {m}")),
}


def trapped_snapshot(net, trap, source: str = "# module source\n") -> dict:
    """A valid snapshot with `trap` in dataset_kwargs, moved first in the dict so that an
    ordinary unpickle reaches it before anything else can fail."""
    snapshot = edm_snapshot(net, source=source)
    dataset_kwargs = {**snapshot.pop("dataset_kwargs"), "cache": trap}
    return {"dataset_kwargs": dataset_kwargs, **snapshot}


@pytest.mark.parametrize("trap", sorted(TRAPS))
def test_booby_trapped_snapshot_is_refused_and_nothing_runs(run_cli, tmp_path, trap):
    marker = tmp_path / "trap-ran"
    net = random_net(get_arch("cpu-tiny"))
    write_snapshot(tmp_path / "evil.pkl", trapped_snapshot(net, TRAPS[trap](marker), trap_source(marker)))
    out = tmp_path / "ckpt" / "x.safetensors"
    code, stdout, err = run_cli("import-checkpoint", str(tmp_path / "evil.pkl"), "--out", str(out))
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "refused" in lines[0], err
    assert "not a plain EDM network snapshot" in lines[0]
    assert not marker.exists()
    assert not (tmp_path / "ckpt").exists()  # no output, not even a temp file


@pytest.mark.parametrize("trap", ["builtins.exec", "os.system"])
def test_the_traps_are_live_under_an_ordinary_unpickle(tmp_path, trap):
    """The trap files really run code when loaded the usual way (so the test above means something)."""
    marker = tmp_path / "trap-ran"
    write_snapshot(tmp_path / "evil.pkl", trapped_snapshot(random_net(get_arch("cpu-tiny")), TRAPS[trap](marker)))
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))",
                    str(tmp_path / "evil.pkl")], capture_output=True, timeout=120)
    assert marker.exists()


def test_refused_globals_are_named_in_one_line(tmp_path):
    write_snapshot(tmp_path / "evil.pkl", {"ema": Call(os.system, "true")})
    with pytest.raises(SnapshotError) as info:
        read_snapshot(tmp_path / "evil.pkl")
    assert str(info.value) == ("refused to load global posix.system: the file is not a plain EDM network "
                               "snapshot; nothing from it was run")


def test_malformed_tensors_and_dtypes_are_refused(tmp_path):
    """A tensor view beyond its storage, an object-dtype numpy scalar, a persistent id."""
    storage = torch.arange(4.0).untyped_storage()

    class Overrun:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (torch.storage.TypedStorage(wrap_storage=storage,
                                                                                 dtype=torch.float32, _internal=True),
                                                     2, (4,), (1,), False, OrderedDict())

    cases = {"beyond its storage": Overrun(), "numpy dtype O": _PickledCall(np.dtype, "O")}
    for expected, obj in cases.items():
        with open(tmp_path / "bad.pkl", "wb") as f:
            pickle.dump({"ema": obj}, f)
        with pytest.raises(SnapshotError, match=expected):
            read_snapshot(tmp_path / "bad.pkl")

    class WithIds(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if obj == "id me" else None

    with open(tmp_path / "bad.pkl", "wb") as f:
        WithIds(f).dump({"ema": "id me"})
    with pytest.raises(SnapshotError, match="persistent id"):
        read_snapshot(tmp_path / "bad.pkl")


# ----------------------------------------------------------------------------
# Unsupported networks, --arch, unreadable files.


def _one_error_line(run_cli, path, *args, out=None):
    out = out or path.parent / "ckpt" / "x.safetensors"
    code, _, err = run_cli("import-checkpoint", str(path), "--out", str(out), *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert not out.exists() and not out.with_suffix(".json").exists()
    return lines[0]


def test_unsupported_networks_are_one_line(run_cli, tmp_path):
    net = random_net(get_arch("cpu-tiny"))
    cases = {
        "NCSN++": edm_snapshot(random_net(UNET_ARCH), model_type="SongUNet",
                               model_kwargs={**songunet_kwargs(UNET_ARCH, 32), "embedding_type": "fourier"}),
        "use_fp16=True": edm_snapshot(net, precond_state={"use_fp16": True}),
        "sigma_data=0.25": edm_snapshot(net, precond_state={"sigma_data": 0.25}),
    }
    for model_type, expected in (("DhariwalUNet", "DhariwalUNet"), ("MyUNet", "model_type MyUNet")):
        cases[expected] = edm_snapshot(net, model_type=model_type, model_kwargs={})
        cases[expected]["ema"].state["_modules"]["model"].class_name = model_type
    for expected, snapshot in cases.items():
        write_snapshot(tmp_path / "net.pkl", snapshot)
        line = _one_error_line(run_cli, tmp_path / "net.pkl")
        assert "not supported" in line and expected in line, line
    vp = edm_snapshot(net)
    vp["ema"].class_name = "VPPrecond"
    write_snapshot(tmp_path / "vp.pkl", vp)
    assert "not supported: the network is a VPPrecond" in _one_error_line(run_cli, tmp_path / "vp.pkl")


def test_arch_overrides_the_recorded_architecture(run_cli, tmp_path, one_thread):
    """Without recorded kwargs only --arch can say what the network is; a wrong one is refused."""
    net = random_net(DFU_ARCH)
    snapshot = edm_snapshot(net)
    snapshot["ema"].state["_modules"]["model"].state["_init_kwargs"] = None  # _record_init_args = False
    write_snapshot(tmp_path / "net.pkl", snapshot)
    assert "records no constructor arguments" in _one_error_line(run_cli, tmp_path / "net.pkl")
    assert "do not fit the architecture" in _one_error_line(run_cli, tmp_path / "net.pkl", "--arch", "cpu-small")
    (tmp_path / "arch.json").write_text(json.dumps(DFU_ARCH.to_dict()))
    out = tmp_path / "dfu.safetensors"
    code, _, err = run_cli("import-checkpoint", str(tmp_path / "net.pkl"), "--arch", str(tmp_path / "arch.json"),
                           "--out", str(out))
    assert code == 0, err
    assert_same_denoiser(net, out, [16])


def test_truncated_or_garbage_files_are_one_line(run_cli, tmp_path):
    write_snapshot(tmp_path / "net.pkl", edm_snapshot(random_net(get_arch("cpu-tiny"))))
    data = (tmp_path / "net.pkl").read_bytes()
    for name, content in {"truncated": data[: len(data) // 2], "early cut": data[:200],
                          "garbage": np.random.default_rng(0).bytes(4096),
                          # a BYTEARRAY8 whose length exceeds the file (CPython printed a SystemError)
                          "garbage, huge bytearray": np.random.default_rng(215).bytes(4096),
                          "empty": b""}.items():
        (tmp_path / "bad.pkl").write_bytes(content)
        line = _one_error_line(run_cli, tmp_path / "bad.pkl")
        assert "truncated" in line or "refused" in line, (name, line)
    # a BYTEARRAY8 of 1 TiB: refused by its length before anything is allocated (the C unpickler
    # allocates first: a MemoryError, or a SystemError line where the allocation succeeded)
    (tmp_path / "bad.pkl").write_bytes(b"\x96" + (1 << 40).to_bytes(8, "little") + bytes(64))
    assert "1099511627776 bytes wanted" in _one_error_line(run_cli, tmp_path / "bad.pkl")
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2, 3], f)
    assert "no 'ema' network" in _one_error_line(run_cli, tmp_path / "list.pkl")
    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pkl")
    assert "torch.save archive" in _one_error_line(run_cli, tmp_path / "state.pkl")


def test_state_dicts_still_need_arch(run_cli, tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pt")
    assert "pass --arch" in _one_error_line(run_cli, tmp_path / "state.pt")
