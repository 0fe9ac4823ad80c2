"""The `bench` process keeps the memory it frees (glibc on Linux): no page fault per fresh activation.

glibc's malloc serves every block over its mmap threshold (128 KiB, adapting up to 32 MiB) with a
fresh mapping from the kernel and unmaps it on free. A CPU network allocates its activations anew
each call, so each call touches fresh pages, and the kernel charges the process a page fault per
4 KiB: for Inception at batch 32, ~600,000 faults per 64 images. Told to keep what it frees (blocks
up to 1 GiB from the heap, the heap's free top handed back only past 1 GiB), glibc reuses the same
pages call after call. Measured with `python benchmarks/allocator.py` (reports/perf/cpu.md): the
same work, same results, in less CPU time.

Only the `bench` command does this (bench.cli.main), for its own process: a library imported by
someone else's program leaves their allocator alone. $DFU_BENCH_MALLOC=system turns it off, and a
user's own settings of these knobs ($MALLOC_MMAP_THRESHOLD_ and the like, or their $GLIBC_TUNABLES)
are left as they are.

The cost is memory. What the process frees stays with it rather than going back to the system, and
a block size that is allocated and freed over and over is held up to ~8 times before it is reused:
torch allocates 64-byte aligned, glibc frees the small fragments around an aligned block into its
per-thread cache (7 per size), and until that is full a freed block cannot merge back into the heap.
A 64 MiB tensor in a loop peaks at 956 MiB instead of 572; `make reproduce-fig2` and the smoke suite
peaked 16% and 14% higher (README, Performance).
"""
from __future__ import annotations

import ctypes
import os
import sys

from bench.errors import BenchError

ENV = "DFU_BENCH_MALLOC"
CHOICES = ("keep", "system")
# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 1 << 30  # bytes: smaller blocks come from the heap and are kept when freed (mallopt takes an int)
TRIM_ABOVE = 1 << 30  # bytes of free heap top before glibc hands any back
# a user's own settings of the same knobs, which are left as they are
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad",
                 "glibc.malloc.mmap_max")

KEPT = "glibc, freed memory kept"
_state = "system default (not set up)"


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only (musl has a mallopt that does nothing)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> str:
    """Set glibc up to keep freed memory, unless $DFU_BENCH_MALLOC=system or the user configured
    malloc; returns (and remembers for environment.json, ``state``) what the allocator does."""
    global _state
    choice = os.environ.get(ENV, "keep")
    if choice not in CHOICES:
        raise BenchError(f"${ENV}={choice!r} is not a choice; set it to keep (the default) or system, or unset it")
    if _state.startswith(KEPT):  # set by an earlier call: mallopt cannot be taken back, so it still holds
        return _state
    users = [k for k in USER_VARIABLES if k in os.environ]
    if any(t in os.environ.get("GLIBC_TUNABLES", "") for t in USER_TUNABLES):
        users.append("GLIBC_TUNABLES")
    libc = _glibc()
    if choice == "system":
        _state = f"system default (${ENV}=system)"
    elif users:
        _state = f"the user's settings ({', '.join(users)})"
    elif libc is None:
        _state = "system default (not glibc)"
    elif libc.mallopt(M_MMAP_THRESHOLD, KEEP_BELOW) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE) == 1:
        _state = f"{KEPT} (blocks < {KEEP_BELOW >> 30} GiB from the heap, trimmed past {TRIM_ABOVE >> 30} GiB free)"
    else:
        _state = "system default (glibc refused the settings)"
    return _state


def state() -> str:
    """What ``keep_freed_memory`` did in this process (environment.json's ``allocator``)."""
    return _state
