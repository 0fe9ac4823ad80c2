"""bench.allocator: the `bench` process keeps the memory it frees (glibc), unless told not to.

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")

# Allocates and frees a 64 MiB tensor 16 times, counting the minor page faults of each allocation;
# prints what keep_freed_memory said and the counts of the last 4. (Kept memory is reused from the
# 8th time on: torch's 64-byte-aligned allocations leave small fragments that glibc's thread cache
# holds, 7 at most per size, and until it is full a freed block cannot merge back. See
# bench.allocator.)
PROBE = """
import json, resource, sys
import torch
from bench.allocator import keep_freed_memory, state
said = keep_freed_memory() if sys.argv[1] == "set" else state()
faults = []
for i in range(16):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 << 20)  # 64 MiB, touched, then freed
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"said": said, "faults": faults[-4:]}))
"""


def fresh_python(code: str, *args: str, **env):
    """What ``code`` prints last (JSON), run in a fresh interpreter whose environment has no allocator
    settings but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"
             and k != "DFU_BENCH_MALLOC"}
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**clean, **env})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def probe(set_up: bool = True, **env) -> dict:
    return fresh_python(PROBE, "set" if set_up else "no", **env)


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_kept_memory_is_reused_without_page_faults():
    """64 MiB freed and allocated again: 16,384 fresh pages each time by default, none once kept."""
    default = probe(set_up=False)
    assert default["said"] == "system default (not set up)"
    assert min(default["faults"]) > 10_000, default
    kept = probe()
    assert kept["said"].startswith("glibc, freed memory kept"), kept
    assert max(kept["faults"]) < 100, kept


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
@pytest.mark.parametrize("env, said", [
    ({"DFU_BENCH_MALLOC": "system"}, "system default ($DFU_BENCH_MALLOC=system)"),
    ({"MALLOC_MMAP_THRESHOLD_": "131072"}, "the user's settings (MALLOC_MMAP_THRESHOLD_)"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "the user's settings (GLIBC_TUNABLES)"),
])
def test_off_switch_and_the_users_own_settings_are_respected(env, said):
    result = probe(**env)
    assert result["said"] == said
    assert min(result["faults"]) > 10_000, result  # the default's behaviour: not kept


def test_a_bad_choice_is_one_line_and_nothing_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.cli", "list"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "DFU_BENCH_MALLOC": "kep"})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "error: $DFU_BENCH_MALLOC='kep' is not a choice; set it to keep (the default) or system, or unset it"]


def test_bench_sets_it_up_in_its_own_process():
    """`bench` (cli.main) sets the allocator before the command; importing bench does not."""
    code = ("import json; from bench import allocator; before = allocator.state(); "
            "from bench.cli import main; main(['list']); print(json.dumps([before, allocator.state()]))")
    before, after = fresh_python(code)
    assert before == "system default (not set up)"
    assert after != before
    if GLIBC:
        assert after.startswith("glibc, freed memory kept")


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_once_kept_the_state_says_so_whatever_a_later_call_is_told():
    """mallopt cannot be taken back: a later call with $DFU_BENCH_MALLOC=system must not record the
    default in environment.json while the memory is still kept."""
    code = ("import os, json; from bench.allocator import keep_freed_memory; a = keep_freed_memory(); "
            "os.environ['DFU_BENCH_MALLOC'] = 'system'; print(json.dumps([a, keep_freed_memory()]))")
    first, second = fresh_python(code)
    assert first.startswith("glibc, freed memory kept") and second == first
