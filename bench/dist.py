"""Where a process runs: its device (`pick_device`), and torch.distributed for the stages.

Launched by `torchrun` (or `bench run --nproc N`, which starts torchrun) every
rank runs the same program over the same suite. Work is split by *seed* or
*batch index*, never by process: batch k of a sample set or feature pass goes to
rank k % world, so the same images and features come out for any number of
processes, and a resumed run may even use another number. Rank 0 alone writes
the shared files (suite copy, checkpoints, merged samples, metrics, report).
NCCL on CUDA, gloo on CPU; nothing assumes a single node (ranks come from
RANK/WORLD_SIZE, devices from LOCAL_RANK).
"""
from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as tdist

from bench.errors import BenchError
from bench.io import rank_info


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(name: str = "auto", what: str = "--device") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; cpu, cuda, cuda:N or mps when this machine
    has it, else BenchError naming `what` (the option or suite key the name came from)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise BenchError(f"{what} {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BenchError(f"{what} {name!r}: no CUDA device is available on this machine; use cpu or auto")
        if device.index is not None and device.index >= count:
            raise BenchError(f"{what} {name!r}: this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}; use one of them or auto")
    if device.type == "mps" and not _mps_available():
        raise BenchError(f"{what} {name!r}: MPS is not available on this machine; use cpu or auto")
    return device


CPUINFO = Path("/proc/cpuinfo")


def cpu_fields(path: Path = CPUINFO) -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo ({} where there is none, e.g. macOS)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name(fields: dict[str, str] | None = None) -> str:
    """The CPU's model name ("AMD EPYC"), or what platform knows of it."""
    fields = cpu_fields() if fields is None else fields
    return fields.get("model name") or platform.processor() or platform.machine()


def machine_kind(device: torch.device, fields: dict[str, str] | None = None) -> str:
    """What kind of machine ``device`` is, as far as timings go: a kernel's time relative to a GEMM
    measured on one kind says little about another (bench regress keeps a throughput baseline per
    kind). CUDA: the GPU's name. CPU: vendor, family, model and name from /proc/cpuinfo (a VM's
    model name alone, e.g. "AMD EPYC", covers generations whose ratios differ by up to 55%)
    and the vector instructions torch's CPU kernels use here."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    if device.type != "cpu":
        return f"{device.type} {platform.machine()}"
    fields = cpu_fields() if fields is None else fields
    labels = {"vendor_id": "", "CPU implementer": "", "cpu family": "family ", "model": "model ", "CPU part": "part "}
    ident = " ".join(f"{label}{fields[key]}" for key, label in labels.items() if fields.get(key))
    name = cpu_name(fields)
    return f"cpu {ident + ' ' if ident else ''}({name}), {torch.backends.cpu.get_cpu_capability()}"


def enabled() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def init(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes (no-op when run alone); (rank, world)."""
    rank, world = rank_info()
    if world > 1 and not enabled():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        timeout = dt.timedelta(seconds=float(os.environ.get("DFU_BENCH_DIST_TIMEOUT", 1800)))
        tdist.init_process_group(backend, timeout=timeout,
                                 device_id=device if device.type == "cuda" else None)
    return rank, world


def shutdown() -> None:
    if enabled():
        tdist.destroy_process_group()


def _comm_device() -> torch.device:
    if enabled() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if enabled():
        if tdist.get_backend() == "nccl":
            tdist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            tdist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s value of a small picklable object, on every rank."""
    if not enabled():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def all_reduce_sum(value: float) -> float:
    if not enabled():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    tdist.all_reduce(t)
    return float(t.item())


def my_batches(n_batches: int, rank: int, world: int) -> list[int]:
    """Batch indices of this rank: k % world == rank (round-robin keeps load even)."""
    return list(range(rank, n_batches, world))


def describe_batches(ks) -> str:
    """[0, 2, 4] -> '0,2,4', for the per-rank shard logs; long lists shortened."""
    ks = sorted(ks)
    return ",".join(map(str, ks[:8])) + (f",... ({len(ks)} batches)" if len(ks) > 8 else "")


def gather_batches(local: Sequence[np.ndarray], n_batches: int, batch_rows: Sequence[int]) -> np.ndarray:
    """Reassemble per-batch arrays computed round-robin on all ranks, in batch order.

    `local` holds this rank's batches (in `my_batches` order); `batch_rows[k]` is the
    row count of batch k. Every rank receives the whole array.
    """
    rank, world = (tdist.get_rank(), tdist.get_world_size()) if enabled() else (0, 1)
    if world == 1:
        return np.concatenate(list(local))
    tail = local[0].shape[1:] if local else None
    tail = broadcast(tail, src=0)  # rank 0 always has batch 0
    rows = [sum(batch_rows[k] for k in my_batches(n_batches, r, world)) for r in range(world)]
    width = max(rows)
    dev = _comm_device()
    mine = np.concatenate(list(local)) if local else np.zeros((0, *tail))
    buf = torch.zeros((width, *tail), dtype=torch.float64, device=dev)
    buf[:len(mine)] = torch.from_numpy(mine.astype(np.float64)).to(dev)
    parts = [torch.empty_like(buf) for _ in range(world)]
    tdist.all_gather(parts, buf)
    out, offsets = [None] * n_batches, [0] * world
    for k in range(n_batches):
        r = k % world
        out[k] = parts[r][offsets[r]:offsets[r] + batch_rows[k]].cpu().numpy()
        offsets[r] += batch_rows[k]
    return np.concatenate(out)
