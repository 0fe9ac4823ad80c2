"""Two `bench run` processes on one run id (issue #13, concurrency): the work is done once.

Both processes start together on tests/_hostile.py's TINY suite with the same --run-id.
With a lock per run directory the second either waits and then finds everything done, or
exits 2 with one `error:` line naming the run; either way the run's expensive files --
checkpoints, the model card, sample and reference files, previews -- are each written
exactly once, and metrics.csv holds the values of an undisturbed run.

Both processes import everything first and then meet at a barrier (a folder each
touches), so today's code reliably overlaps them. The observable: each process runs
under a wrapper that logs the target of every os.replace / os.rename (the harness writes
every file atomically: temp file, then rename) to a shared log, one O_APPEND line per
write. Files a resume rewrites by design
(suite.yaml, environment.json, metrics.csv, the report) are not counted.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pandas as pd

from _hostile import ROOT, TINY, Workspace, error_lines, metrics_values

WRAPPER = textwrap.dedent("""
    import os, sys
    log = os.environ["DFU_TEST_WRITE_LOG"]

    def logged(real):
        def move(src, dst, *args, **kwargs):
            out = real(src, dst, *args, **kwargs)
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {os.fspath(dst)}\\n")
            return out
        return move

    os.replace, os.rename = logged(os.replace), logged(os.rename)
    import importlib, time
    import torch  # the heavy imports first, so that both processes start their work together
    for name in ("bench.run", "bench.metrics", "bench.report"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from bench.cli import main

    barrier = os.environ["DFU_TEST_BARRIER"]
    open(os.path.join(barrier, str(os.getpid())), "w").close()
    start = time.time()
    while len(os.listdir(barrier)) < 2 and time.time() - start < 300:
        time.sleep(0.01)
    sys.exit(main(sys.argv[1:]))
""")
# the run's work: written once by a locked run, whatever the order the two processes get
WORK = ("checkpoints/", "samples/", "references/", "previews/")


def test_two_runs_on_one_id_do_the_work_once(tmp_path, finished):
    ws = Workspace(tmp_path / "ws", finished)
    suite = ws.suite()
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    log = tmp_path / "writes.log"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "DFU_BENCH_CACHE": str(ws.cache), "DFU_TEST_WRITE_LOG": str(log),
           "DFU_TEST_BARRIER": str(barrier),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "DFU_BENCH_INCEPTION"):
        env.pop(k, None)
    cmd = [sys.executable, str(wrapper), "run", suite, "--results", str(ws.results), "--run-id", "shared",
           "--report-dir", str(ws.reports)]
    procs = [subprocess.Popen(cmd, cwd=ws.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    errs = [e for _, e in outs]
    assert all("Traceback" not in o + e for o, e in outs), [e[-1500:] for e in errs]
    assert codes in ([0, 0], [0, 2]), (codes, [e[-1500:] for e in errs])
    if codes == [0, 2]:
        err = errs[[p.returncode for p in procs].index(2)]
        lines = error_lines(err)
        assert len(lines) == 1 and "shared" in lines[0], lines

    run = ws.results / TINY["name"] / "shared"
    writes = Counter()
    for line in log.read_text().splitlines():
        target = Path(line.split(" ", 1)[1])
        if run in target.parents:
            rel = target.relative_to(run).as_posix()
            if rel.startswith(WORK):
                writes[rel] += 1
    assert writes, "no file of the run was written"
    twice = {k: v for k, v in writes.items() if v > 1}
    assert not twice, f"written more than once: {twice}"
    assert (run / "checkpoints" / "dfu" / "model.safetensors").is_file()
    pd.testing.assert_frame_equal(metrics_values(run / "metrics.csv"),
                                  metrics_values(finished.run_dir / "metrics.csv"))
