"""dfu-bench harness: suite -> plan -> train -> sample -> features -> metrics -> report.

The modules in layers. A module imports only from its own layer and the layers
below it, and nothing imports in a circle; tests/test_layering.py parses every
import (inside functions too) and checks both against this list, so keep it true.
models/ sits below all of it and never imports bench/; bench/ knows models only
through the adapter interface (models.adapters).

L0  __init__, errors, io, progress, allocator   -- plumbing: one-line user errors, atomic writes, paths, progress bars, the process's malloc
L1  metrics, paper, images                  -- facts: the metric table and math, the paper's numbers, image files
L2  config, datasets, toyfaces, grf, openmoji, inception, checkpoint, pretrained, dist   -- inputs: suite schema, data, weights, checkpoints as models, devices
L3  scale, rundir, fidelity, features, refset, sample   -- a run's directory; Inception features and their cache; bench sample
L4  plan, scoring, prepare, results, integrity   -- what a suite means; numbers from image sets; data prepare; metrics.csv; run lock and checksums
L5  figures, summary, tables                -- the report's parts, from metrics.csv and the run directory
L6  report                                  -- index.md and where the report goes
L7  run                                     -- the stages of `bench run`, top to bottom
L8  regress, perf, api, cli, __main__       -- entry points: the Python API (api) and the commands over it

Imports sit at the top of modules. Where one is inside a function, a comment
beside it says why with a measurement (`python -X importtime`): third-party
packages that take a second to import and only some commands need, and cli.py,
which imports each command's modules in that command.
"""

__version__ = "0.1.0"
