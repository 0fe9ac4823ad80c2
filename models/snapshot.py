"""Networks from EDM-format training snapshots (`network-snapshot-*.pkl`), read without running anything.

EDM's training loop (NVlabs/edm, and the DFU authors' fork Dahoas/edm) saves
``pickle.dump(dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...))``.
Its networks are "persistent" objects (torch_utils/persistence.py): each one
pickles as a call ``_reconstruct_persistent_obj(meta)`` whose ``meta`` holds the
class name, the *source text of the module that defined it*, the constructor
arguments and the instance ``__dict__``. An ordinary unpickle executes that
source, and a pickle can name any other callable as well, so loading a
snapshot from elsewhere runs whatever code is in it.

This module reads one with a restricted unpickler instead. It resolves only the
globals an EDM snapshot references (each listed below with why it is safe) and
turns every persistent or plainly pickled object into an inert ``ObjectRecord``
(class name, constructor kwargs, state as plain data). The embedded source is
only hashed; nothing from the file is imported, compiled or executed. Tensor
storages, which torch pickles as a nested legacy ``torch.save`` stream, are
parsed here too rather than by ``torch.load``.

From the ``ema`` record it then infers the dfu-bench architecture (the DFU
authors' ``DualUNet``, or EDM's ``SongUNet`` with the DDPM++ settings, which is
our DualUNet in spatial mode with resolution-named modules), renames the tensors
into the authors' state-dict layout and hands them to
``models.convert.from_authors_state_dict`` for the strict key/shape check.

Every problem is a ``SnapshotError`` with a one-line message.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.convert import from_authors_state_dict
from models.edm import EDMPrecond
from models.networks import ArchConfig

__all__ = ["SnapshotError", "ObjectRecord", "read_snapshot", "network_records", "infer_arch",
           "authors_state_dict", "load_snapshot"]

NOT_A_SNAPSHOT = "the file is not a plain EDM network snapshot; nothing from it was run"


class SnapshotError(ValueError):
    """A snapshot that cannot, or must not, be read. The message is one line."""


def _shown(text: Any, limit: int = 80) -> str:
    """A file-supplied string made safe for a one-line message (no control characters)."""
    text = ascii(str(text))[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."


def _refuse(what: str) -> SnapshotError:
    return SnapshotError(f"refused {what}: {NOT_A_SNAPSHOT}")


# ----------------------------------------------------------------------------
# Inert records of the pickled objects.


class ObjectRecord:
    """A pickled object as plain data; never an instance of the class it names.

    ``persistent``: an EDM persistent object (``_reconstruct_persistent_obj``); its
    meta carries no module name, only the module's source, of which we keep a
    sha256 fingerprint (``source_sha256``), so ``module`` is None. Otherwise a
    class pickled plainly by reference (``module``.``class_name``, e.g. torch's
    ModuleDict or the authors' DualConv). ``state`` is the instance ``__dict__``:
    for a torch module ``_parameters``, ``_buffers``, ``_modules`` and attributes.
    """

    def __init__(self, class_name: str, module: str | None, state: dict, persistent: bool,
                 source_sha256: str | None = None):
        self.class_name = class_name
        self.module = module
        self.state = state
        self.persistent = persistent
        self.source_sha256 = source_sha256

    @property
    def init_kwargs(self) -> dict | None:
        """Constructor kwargs as persistence.py records them (None when it did not)."""
        kwargs = self.state.get("_init_kwargs")
        return dict(kwargs) if isinstance(kwargs, dict) else None

    def child(self, name: str) -> "ObjectRecord | None":
        child = (self.state.get("_modules") or {}).get(name)
        return child if isinstance(child, ObjectRecord) else None

    def __setstate__(self, state):  # only plainly pickled classes receive a BUILD
        raise _refuse(f"a state update of persistent object {_shown(self.class_name)}")

    def __repr__(self) -> str:
        where = "persistent" if self.persistent else self.module
        return f"ObjectRecord({self.class_name}, {where})"


class _PlainRecord(ObjectRecord):
    """Base of the stand-ins for plainly pickled classes: pickle's NEWOBJ calls
    ``cls.__new__(cls)`` and BUILD calls ``__setstate__(state)``; both only store data."""

    _record_module = ""
    _record_name = ""

    def __new__(cls, *args):
        if args:
            raise _refuse(f"constructor arguments for {_shown(cls._record_module)}.{_shown(cls._record_name)}")
        rec = object.__new__(cls)
        ObjectRecord.__init__(rec, cls._record_name, cls._record_module, {}, persistent=False)
        return rec

    def __init__(self, *args):  # a REDUCE calls cls(); __new__ has already filled the record
        pass

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise _refuse(f"a non-dict state for {_shown(self.module)}.{_shown(self.class_name)}")
        self.state = state


_PLAIN_CLASSES: dict[tuple[str, str], type] = {}


def _plain_record_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _PLAIN_CLASSES:
        _PLAIN_CLASSES[key] = type(name, (_PlainRecord,), {"_record_module": module, "_record_name": name})
    return _PLAIN_CLASSES[key]


# Module classes a snapshot pickles plainly (not persistent), recorded like persistent ones:
# torch's own containers (ModuleDict; the brief allows any torch.nn.modules class, all of which
# become inert records), and the DFU authors' DualConv and SpectralConv2d, which their
# training/networks.py defines without the persistence decorator. `_imported_module_<hex>` is
# the name persistence.py gives a module it re-created from source, in case such a network was
# loaded and saved again.
_AUTHORS_PLAIN_CLASSES = {"DualConv", "SpectralConv2d"}
_AUTHORS_MODULE = re.compile(r"training\.networks|_imported_module_[0-9a-f]{32}")


def _is_plain_module_class(module: str, name: str) -> bool:
    if not name.isidentifier():
        return False
    if module.startswith("torch.nn.modules.") and all(p.isidentifier() for p in module.split(".")):
        return True
    return name in _AUTHORS_PLAIN_CLASSES and _AUTHORS_MODULE.fullmatch(module) is not None


def _persistent_record(meta=None, *extra):
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: records, never executes."""
    if extra or not isinstance(meta, dict) or meta.get("type") != "class":
        raise _refuse("a persistent object whose meta is not EDM's (type 'class')")
    name, src, state = meta.get("class_name"), meta.get("module_src"), meta.get("state")
    if not (isinstance(name, str) and name.isidentifier()) or not isinstance(src, str) or not isinstance(state, dict):
        raise _refuse("a persistent object without a class name, module source and state")
    # The source is only fingerprinted (surrogatepass: any str encodes).
    digest = hashlib.sha256(src.encode("utf-8", "surrogatepass")).hexdigest()
    return ObjectRecord(name, None, dict(state), persistent=True, source_sha256=digest)


# ----------------------------------------------------------------------------
# Tensors. Plain pickling of a tensor is `torch._utils._rebuild_tensor_v2(storage, offset,
# size, stride, requires_grad, hooks[, metadata])`, of a Parameter
# `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`, and of the storage
# `torch.storage._load_from_bytes(bytes)`, where the bytes are torch.save's legacy format.
# We never call torch's versions (_load_from_bytes runs torch.load on the nested stream,
# with weights_only=False, and torch.load's restricted mode had its own escape on this
# legacy format before torch 2.6); these replacements take only what they need.


class _TensorRef:
    """A rebuilt tensor, wrapped so that no pickle opcode can reach a torch object."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def __setstate__(self, state):
        raise _refuse("a state update of a tensor")


class _StorageData:
    """A storage's elements as a 1-D tensor of its dtype."""

    def __init__(self, flat: torch.Tensor):
        self.flat = flat

    def __setstate__(self, state):
        raise _refuse("a state update of a storage")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _rebuild_tensor(storage=None, offset=None, size=None, stride=None, requires_grad=False, hooks=None,
                    metadata=None, *extra):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a bounds-checked strided copy."""
    if extra or not isinstance(storage, _StorageData):
        raise _refuse("a tensor that is not built from a storage")
    if not (_is_int(offset) and offset >= 0 and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(_is_int(s) and s >= 0 for s in size + stride)):
        raise _refuse("a tensor with a malformed offset, size or stride")
    if metadata:  # torch writes tensor metadata only for exotic tensors, none of them weights
        raise _refuse("a tensor with extra metadata")
    numel = storage.flat.numel()
    extent = 0 if 0 in size else offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if extent > numel:
        raise _refuse(f"a tensor view beyond its storage ({extent} > {numel} elements)")
    return _TensorRef(torch.as_strided(storage.flat, size, stride, offset).clone(memory_format=torch.contiguous_format))


def _rebuild_parameter(data=None, requires_grad=False, hooks=None, *extra):
    """Stand-in for ``torch._utils._rebuild_parameter``: the weights are all we keep."""
    if extra or not isinstance(data, _TensorRef):
        raise _refuse("a parameter that is not built from a tensor")
    return data


def _rebuild_parameter_with_state(data=None, requires_grad=False, hooks=None, state=None, *extra):
    """Stand-in for ``torch._utils._rebuild_parameter_with_state`` (a Parameter with Python
    attributes; the attributes are dropped)."""
    return _rebuild_parameter(data, requires_grad, hooks, *extra)


# torch.save's legacy format: pickles of the magic number, the protocol version and a sys-info
# dict; then the object, in which every storage is a persistent id ('storage', <torch.XStorage
# class>, key, location, numel, view_metadata); then the sorted list of keys; then per key an
# int64 element count and the raw little-endian bytes.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}


class _StorageType:
    """The dtype a legacy stream's storage class (torch.FloatStorage, ...) stands for."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __setstate__(self, state):
        raise _refuse("a state update of a storage class")


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only (numbers, strings, containers): every global is refused."""

    def find_class(self, module, name):
        raise _refuse(f"global {_shown(module)}.{_shown(name)} inside a tensor storage")

    def persistent_load(self, pid):
        raise _refuse("a persistent id inside a tensor storage")


class _LegacyStorageUnpickler(_PlainDataUnpickler):
    """The object pickle of the legacy stream: storage classes by name, storages as ids."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, tuple[torch.dtype, int]] = {}

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:  # a dtype tag; the class is not touched
            return _StorageType(_STORAGE_DTYPES[name])
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise _refuse("a persistent id inside a tensor storage that is not a storage")
        _, kind, key, _location, numel, view = pid
        if not (isinstance(kind, _StorageType) and isinstance(key, str) and _is_int(numel) and numel >= 0
                and view is None):
            raise _refuse("a malformed storage record")
        self.storages[key] = (kind.dtype, numel)
        return key


def _storage_from_bytes(data=None, *extra):
    """Stand-in for ``torch.storage._load_from_bytes``: parses the one storage itself."""
    if extra or not isinstance(data, (bytes, bytearray)):
        raise _refuse("a storage that is not a byte string")
    f = io.BytesIO(data)
    try:
        magic, protocol, sys_info = (_PlainDataUnpickler(f).load() for _ in range(3))
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
            raise _refuse("a storage in an unknown format")
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise _refuse("a storage written on a big-endian machine")
        unpickler = _LegacyStorageUnpickler(f)
        root = unpickler.load()
        keys = _PlainDataUnpickler(f).load()
    except SnapshotError:
        raise
    except Exception as exc:
        raise SnapshotError(f"a tensor storage is unreadable ({type(exc).__name__}); "
                            "the file is truncated or corrupt") from None
    if not isinstance(keys, list) or sorted(keys) != sorted(unpickler.storages) or keys != [root]:
        raise _refuse("a storage record holding anything but one storage")
    dtype, numel = unpickler.storages[root]
    head = f.read(8)
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = numel * itemsize
    if len(head) != 8 or int.from_bytes(head, "little", signed=True) != numel or len(data) - f.tell() < nbytes:
        raise SnapshotError("a tensor storage is shorter than its header says; the file is truncated or corrupt")
    start = f.tell()
    with warnings.catch_warnings():  # frombuffer warns that bytes are read-only; we copy at once
        warnings.simplefilter("ignore", UserWarning)
        raw = torch.frombuffer(memoryview(data)[start:start + nbytes], dtype=torch.uint8) if nbytes else \
            torch.empty(0, dtype=torch.uint8)
        flat = raw.clone().view(dtype)  # clone: aligned memory of our own, then reinterpret
    return _StorageData(flat)


# ----------------------------------------------------------------------------
# numpy scalars: EDM stores e.g. skip_scale = np.sqrt(0.5), a numpy float64, which pickles as
# `numpy._core.multiarray.scalar(numpy.dtype('f8') + state, raw bytes)` (`numpy.core...` before
# numpy 2). We decode plain numeric scalars to Python numbers and build no numpy object from the
# file: a crafted dtype state could describe object fields.

_NUMPY_SCALAR_TYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}


class _NumpyDtypeName:
    """Stand-in for ``numpy.dtype(name, align, copy)`` plus its BUILD state: the name and byte order."""

    def __init__(self, name=None, align=False, copy=False, *extra):
        if extra or name not in _NUMPY_SCALAR_TYPES:
            raise _refuse(f"numpy dtype {_shown(name)} (only plain numeric scalars are read)")
        self.name, self.order = name, "="

    def __setstate__(self, state):
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in ("<", ">", "|", "=")
                and state[2] is None and state[3] is None and state[4] is None):
            raise _refuse("a structured or malformed numpy dtype")
        self.order = state[1]


def _numpy_scalar(dtype=None, data=None, *extra):
    """Stand-in for ``numpy.core.multiarray.scalar``: a Python number from its bytes."""
    if extra or not isinstance(dtype, _NumpyDtypeName) or not isinstance(data, bytes):
        raise _refuse("a numpy scalar that is not plain numeric data")
    order = "<" if dtype.order == "|" else dtype.order
    array = np.frombuffer(data, dtype=np.dtype(dtype.name).newbyteorder(order))
    if array.size != 1:
        raise _refuse("a numpy scalar of the wrong size")
    return array[0].item()


# ----------------------------------------------------------------------------
# The snapshot unpickler.

# Every global a plain EDM snapshot references, mapped to the stand-in that rebuilds it:
_ALLOWED_GLOBALS = {
    # persistence.py's reconstruction entry point -> an inert record (never the real function).
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    # Tensors, parameters, storages -> our own bounds-checked rebuilds above.
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    # torch modules keep parameters, buffers and hooks in OrderedDicts: a plain container.
    ("collections", "OrderedDict"): OrderedDict,
    # numpy scalar attributes and kwargs -> Python numbers (numpy 2 and numpy 1 spellings).
    ("numpy", "dtype"): _NumpyDtypeName,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    # Protocols 2 and 3 spell a set (a module's _non_persistent_buffers_set) as set(list).
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
}


class _SnapshotUnpickler(pickle.Unpickler):
    """Rebuilds what ``_ALLOWED_GLOBALS`` and the plain module classes name; refuses the rest."""

    def find_class(self, module, name):
        if not (isinstance(module, str) and isinstance(name, str)):
            raise _refuse("a global with a non-string name")
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        if _is_plain_module_class(module, name):
            return _plain_record_class(module, name)
        raise _refuse(f"to load global {_shown(module)}.{_shown(name)}")

    def persistent_load(self, pid):
        # pickle.dump writes no persistent ids; torch.save files do (use a .pt name for those).
        raise _refuse("a persistent id (torch.save writes these; a snapshot has none)")


class _BoundedReader:
    """A file as the unpickler's stream: ``read`` and ``readline`` only, and a read that asks for more
    bytes than are left is an EOFError before anything is read.

    Without ``readinto`` the C unpickler copies from ``read`` instead of reading into a buffer it
    exports: with a real file, a garbage length in a BYTEARRAY8 opcode made CPython print
    "SystemError: deallocated bytearray object has exported buffers" to stderr beside our one
    error line (seen with random 4 KB files, about 1 in 600). That did not stop it for BYTEARRAY8,
    which the C unpickler allocates before it reads, so ``read_snapshot`` first runs the opcodes
    through ``pickletools.genops`` on this reader, where every counted argument is bounded."""

    def __init__(self, f, size: int):
        self._f, self._left = f, size

    def read(self, n: int = -1) -> bytes:
        if n > self._left:
            raise EOFError(f"{n} bytes wanted, {self._left} left")
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self._f.readline()
        self._left -= len(data)
        return data


def read_snapshot(path: str | Path) -> Any:
    """The unpickled snapshot with every object as an ``ObjectRecord`` and tensors as plain data."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise SnapshotError("a torch.save archive, not an EDM snapshot; for a state dict give it a .pt "
                                "name and --arch")
        f.seek(0)
        try:
            # The opcodes first, as data (pickletools reads each counted argument through the bounded
            # reader): the C unpickler allocates a BYTEARRAY8's garbage length before it reads, which
            # raised MemoryError or, where the allocation succeeded, made CPython print a SystemError
            # line beside ours, depending on the memory free at the time.
            for _ in pickletools.genops(_BoundedReader(f, path.stat().st_size)):
                pass
            f.seek(0)
            obj = _SnapshotUnpickler(_BoundedReader(f, path.stat().st_size)).load()
        except SnapshotError:
            raise
        except Exception as exc:  # any malformed stream: EOFError, UnpicklingError, struct errors...
            raise SnapshotError(f"not a readable pickle ({type(exc).__name__}: {_shown(exc, 60)}); "
                                "the file is truncated or not an EDM snapshot") from None
    return _unwrap(obj)


def _unwrap(obj: Any) -> Any:
    """Tensor wrappers -> tensors, through containers and record states (iteratively: no
    recursion limit for deep module trees)."""
    seen: set[int] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ObjectRecord):
            stack.append(item.state)
        elif isinstance(item, dict):
            for key, value in list(item.items()):
                if isinstance(value, _TensorRef):
                    item[key] = value.tensor
                else:
                    stack.append(value)
        elif isinstance(item, list):
            for i, value in enumerate(item):
                if isinstance(value, _TensorRef):
                    item[i] = value.tensor
                else:
                    stack.append(value)
        elif isinstance(item, tuple):
            stack.extend(item)
    return obj.tensor if isinstance(obj, _TensorRef) else obj


# ----------------------------------------------------------------------------
# From the records to a dfu-bench network.


def network_records(snapshot: Any) -> tuple[ObjectRecord, ObjectRecord]:
    """(EDMPrecond record, its model record) of a snapshot's ``ema`` network."""
    if not isinstance(snapshot, dict) or "ema" not in snapshot:
        raise SnapshotError("no 'ema' network in it; give an EDM training snapshot (network-snapshot-*.pkl)")
    ema = snapshot["ema"]
    if not isinstance(ema, ObjectRecord):
        raise SnapshotError("its 'ema' entry is not a network; give an EDM training snapshot (network-snapshot-*.pkl)")
    if ema.class_name != "EDMPrecond":
        raise SnapshotError(f"not supported: the network is a {_shown(ema.class_name)}; only EDMPrecond "
                            "networks import (dfu-bench's denoiser uses EDM's preconditioning)")
    model = ema.child("model")
    if model is None:
        raise SnapshotError("not supported: its EDMPrecond holds no 'model' network")
    return ema, model


def _check_precond(precond: ObjectRecord, model: ObjectRecord) -> None:
    """What dfu-bench's EDMPrecond cannot honour: half-precision execution, another sigma_data."""
    state = precond.state
    if state.get("use_fp16"):
        raise SnapshotError("not supported: use_fp16=True (the network ran in float16 on CUDA; dfu-bench's "
                            "imported denoiser runs in float32, so its outputs would not be the snapshot's)")
    sigma_data = state.get("sigma_data", 0.5)
    if sigma_data != 0.5:
        raise SnapshotError(f"not supported: sigma_data={_shown(sigma_data)} (dfu-bench's EDMPrecond uses 0.5)")
    declared = (precond.init_kwargs or {}).get("model_type")
    if declared is not None and declared != model.class_name:
        raise SnapshotError(f"its model_type {_shown(declared)} disagrees with its model "
                            f"{_shown(model.class_name)}; the file is corrupt")


# Constructor defaults (the authors' DualUNet and EDM's SongUNet signatures); persistence.py
# records only the kwargs that were passed.
_DUALUNET_DEFAULTS = dict(
    label_dim=0, augment_dim=0, model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4,
    num_blocks=4, attn_levels=[1], dropout=0.10, label_dropout=0, embedding_type="positional",
    channel_mult_noise=1, encoder_type="standard", decoder_type="standard", resample_filter=[1, 1],
    mode="dual", modes1_list=None, modes2_list=None, dual_block_thresh=-1, random_fourier_feature=None,
    unfrozen_layers=None, verbose=False,
)
_SONGUNET_DEFAULTS = dict(
    label_dim=0, augment_dim=0, model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4,
    num_blocks=4, attn_resolutions=[16], dropout=0.10, label_dropout=0, embedding_type="positional",
    channel_mult_noise=1, encoder_type="standard", decoder_type="standard", resample_filter=[1, 1],
)
_AUTHORS_MODES = {"def": "spatial", "fourier": "spectral", "dual": "dual"}
_DHARIWAL = ("not supported: DhariwalUNet (EDM's ADM network) is not dfu-bench's UNet under other names: its "
             "blocks condition by scale and shift, use multi-head attention, skip scale 1, GroupNorm eps 1e-5 and "
             "an embedding without the sin/cos swap; DualUNet (DFU authors) and SongUNet (DDPM++) snapshots import")


def _check_model_type(model: ObjectRecord) -> None:
    if model.class_name == "DhariwalUNet":
        raise SnapshotError(_DHARIWAL)
    if model.class_name not in ("DualUNet", "SongUNet"):
        raise SnapshotError(f"not supported: model_type {_shown(model.class_name)}; DualUNet (the DFU authors' "
                            "code) and SongUNet (EDM's DDPM++) snapshots import")


def _model_kwargs(model: ObjectRecord, defaults: dict, required: tuple[str, ...]) -> dict:
    kwargs = model.init_kwargs
    if kwargs is None:
        raise SnapshotError(f"its {model.class_name} records no constructor arguments, so its architecture "
                            "is unknown; pass --arch")
    unknown = sorted(str(k) for k in set(kwargs) - set(defaults) - {"in_channels", "out_channels", *required})
    if unknown:
        raise SnapshotError(f"not supported: {model.class_name} argument(s) {_shown(', '.join(unknown))} unknown "
                            "to this importer; pass --arch if they do not change the network")
    missing = [k for k in ("in_channels", "out_channels", *required) if k not in kwargs]
    if missing:
        raise SnapshotError(f"its {model.class_name} arguments lack {', '.join(missing)}; pass --arch")
    if kwargs["in_channels"] != kwargs["out_channels"]:
        raise SnapshotError("not supported: in_channels != out_channels (not an EDMPrecond denoiser)")
    return {**defaults, **kwargs}


def _level_list(value, levels: int, what: str) -> tuple:
    if value is None:
        return (None,) * levels
    if not isinstance(value, (list, tuple)):
        raise SnapshotError(f"not supported: {what}={_shown(value)} is not a list")
    return tuple(value)


def infer_arch(model: ObjectRecord) -> ArchConfig:
    """The ArchConfig of the snapshot's network, from its recorded constructor kwargs."""
    _check_model_type(model)
    name = model.class_name
    if name == "DualUNet":
        kw = _model_kwargs(model, _DUALUNET_DEFAULTS, ())
        if kw["embedding_type"] != "positional":
            raise SnapshotError(f"not supported: embedding_type={_shown(kw['embedding_type'])} (NCSN++'s); "
                                "dfu-bench's DualUNet has the positional (DDPM++) embedding")
        if kw["random_fourier_feature"] is not None:
            raise SnapshotError("not supported: random_fourier_feature (a random Fourier projection of the input)")
        if kw["mode"] not in _AUTHORS_MODES:
            raise SnapshotError(f"not supported: mode={_shown(kw['mode'])}; the authors' modes are def, fourier, dual")
        # The authors' DualUNet accepts encoder_type/decoder_type but builds the standard encoder
        # and decoder whatever they say, so they are not checked.
        levels = len(kw["channel_mult"]) if isinstance(kw["channel_mult"], (list, tuple)) else 0
        fields = dict(
            mode=_AUTHORS_MODES[kw["mode"]], dual_block_thresh=kw["dual_block_thresh"],
            modes1=_level_list(kw["modes1_list"], levels, "modes1_list"),
            modes2=_level_list(kw["modes2_list"], levels, "modes2_list"),
            attn_levels=kw["attn_levels"],
        )
    else:  # SongUNet
        kw = _model_kwargs(model, _SONGUNET_DEFAULTS, ("img_resolution",))
        wanted = dict(embedding_type="positional", encoder_type="standard", decoder_type="standard",
                      resample_filter=[1, 1])
        ncsnpp = [f"{k}={kw[k]}" for k, want in wanted.items()
                  if (list(kw[k]) if isinstance(kw[k], (list, tuple)) else kw[k]) != want]
        if ncsnpp:
            raise SnapshotError(f"not supported: SongUNet with {_shown(', '.join(ncsnpp), 120)} (NCSN++ settings); "
                                "only the DDPM++ configuration (positional embedding, standard encoder and "
                                "decoder, resample filter [1, 1]) maps onto dfu-bench's UNet")
        res, mults, attn = kw["img_resolution"], kw["channel_mult"], kw["attn_resolutions"]
        if not (_is_int(res) and isinstance(mults, (list, tuple)) and isinstance(attn, (list, tuple))):
            raise SnapshotError("not supported: SongUNet img_resolution/channel_mult/attn_resolutions malformed")
        levels = len(mults)
        # SongUNet puts attention at resolutions (of img_resolution >> level); ours at levels.
        fields = dict(mode="spatial", dual_block_thresh=-1, modes1=(None,) * levels, modes2=(None,) * levels,
                      attn_levels=[lv for lv in range(levels) if res >> lv in attn])
    try:
        return ArchConfig(
            img_channels=kw["in_channels"], label_dim=kw["label_dim"], model_channels=kw["model_channels"],
            channel_mult=kw["channel_mult"], channel_mult_emb=kw["channel_mult_emb"],
            channel_mult_noise=kw["channel_mult_noise"], num_blocks=kw["num_blocks"], dropout=kw["dropout"],
            label_dropout=kw["label_dropout"], augment_dim=kw["augment_dim"], resample_filter=kw["resample_filter"],
            fft_norm="backward", spectral_product="componentwise", **fields)
    except (ValueError, TypeError) as exc:
        raise SnapshotError(f"not supported: its {name} arguments make no dfu-bench architecture "
                            f"({_shown(str(exc).splitlines()[0], 160)})") from None


def _flatten(record: ObjectRecord, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """state_dict()-style flattening of a record tree: parameters, persistent buffers, children."""
    stack = [(record, prefix)]
    while stack:
        rec, pre = stack.pop()
        skip = rec.state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            tensors = rec.state.get(group) or {}
            if not isinstance(tensors, dict):
                raise SnapshotError(f"{pre}{group} is not a dict; the file is corrupt")
            for name, value in tensors.items():
                if value is None or (group == "_buffers" and name in skip):
                    continue
                if not isinstance(name, str) or not isinstance(value, torch.Tensor):
                    raise SnapshotError(f"{_shown(pre + str(name))} is not a tensor; the file is corrupt")
                out[pre + name] = value
        children = rec.state.get("_modules") or {}
        if not isinstance(children, dict):
            raise SnapshotError(f"{pre}_modules is not a dict; the file is corrupt")
        for name, child in reversed(list(children.items())):
            if child is None:
                continue
            if not isinstance(name, str) or not isinstance(child, ObjectRecord):
                raise SnapshotError(f"{_shown(pre + str(name))} is not a module; the file is corrupt")
            stack.append((child, f"{pre}{name}."))


_SONG_NAME = re.compile(r"(\d+)x(\d+)_(.+)")
_BLOCK_CONV = re.compile(r"conv[01]\.")


def _songunet_renames(model: ObjectRecord) -> dict[str, str]:
    """SongUNet's resolution-named modules -> our level-named ones, e.g. enc.32x32_block0 ->
    enc.0_block0. Levels come from the order of the encoder's resolutions, not from img_resolution,
    so this also works under --arch."""
    names: dict[str, str] = {}
    enc = model.child("enc")
    order: list[str] = []
    for key in (enc.state.get("_modules") or {}) if enc else ():
        m = _SONG_NAME.fullmatch(key)
        if m and m[1] == m[2] and m[1] not in order:
            order.append(m[1])
    for part in ("enc", "dec"):
        rec = model.child(part)
        for key in (rec.state.get("_modules") or {}) if rec else ():
            m = _SONG_NAME.fullmatch(key)
            if m and m[1] == m[2] and m[1] in order:
                names[f"{part}.{key}"] = f"{part}.{order.index(m[1])}_{m[3]}"
    return names


def authors_state_dict(precond: ObjectRecord, model: ObjectRecord) -> dict[str, torch.Tensor]:
    """The network's tensors under the DFU authors' EDMPrecond state-dict keys."""
    flat: dict[str, torch.Tensor] = {}
    _flatten(precond, "", flat)
    if model.class_name != "SongUNet":
        return flat
    # SongUNet -> our spatial DualUNet: modules are named by level, and each 3x3 conv (the input
    # conv, every block's conv0/conv1, the output aux_conv) is a DualConv holding the Conv2d as
    # spatial_conv. Skips, attention qkv/proj and norms keep their names.
    renames = _songunet_renames(model)
    out: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        parts = key.split(".", 3)  # model, enc|dec, module, rest
        if len(parts) == 4 and f"{parts[1]}.{parts[2]}" in renames:
            module = renames[f"{parts[1]}.{parts[2]}"]
            role, rest = module.split("_", 1)[1], parts[3]
            if role in ("conv", "aux_conv"):  # the module is the conv: weight -> spatial_conv.weight
                rest = f"spatial_conv.{rest}"
            elif _BLOCK_CONV.match(rest):  # a block's conv0/conv1: conv0.weight -> conv0.spatial_conv.weight
                conv, tail = rest.split(".", 1)
                rest = f"{conv}.spatial_conv.{tail}"
            key = f"{parts[0]}.{module}.{rest}"
        out[key] = value
    return out


def describe(precond: ObjectRecord, model: ObjectRecord) -> dict[str, Any]:
    """JSON-safe facts about the snapshot's network, for the checkpoint's metadata."""
    kwargs = model.init_kwargs or {}
    info = {"format": "edm-network-snapshot", "network": f"EDMPrecond({model.class_name})",
            "source_sha256": model.source_sha256}
    if _is_int(kwargs.get("img_resolution")):
        info["img_resolution"] = kwargs["img_resolution"]
    return info


def load_snapshot(path: str | Path, arch: ArchConfig | None = None) -> tuple[EDMPrecond, ArchConfig, dict]:
    """(eval-mode EDMPrecond with the snapshot's EMA weights, its ArchConfig, facts for metadata).

    ``arch`` replaces the architecture inferred from the snapshot's constructor kwargs; the
    tensors must fit it exactly either way.
    """
    precond, model = network_records(read_snapshot(path))
    _check_precond(precond, model)
    _check_model_type(model)
    if arch is None:
        arch = infer_arch(model)
    state = authors_state_dict(precond, model)
    try:
        net = from_authors_state_dict(state, arch)
    except ValueError as exc:
        raise SnapshotError(f"its {model.class_name} tensors do not fit the architecture ({exc}); "
                            "check --arch") from None
    return net, arch, describe(precond, model)
