"""Which embedded dataset lets Figure 2's N = 80 KID/FID see a 2x resolution loss?

For toyfaces (the default 4,096) and OpenMoji (`emoji`, 1,497 images), three
disjoint splits of 2 x 80 images at 64 px: the floor is real A vs real B, the
signal is A rendered at 32 px and bilinearly upsampled to 64 vs real B (what
a model that only knows 32 px at best produces). A dataset serves Figure 2 when
the signal stands well clear of the floor at this N.

    .venv/bin/python reports/embedded_dataset/measure.py   # ~1 min on 2 CPU cores

Writes result.json and prints one line per split.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from bench.api import compute_metrics
from bench.datasets import build_dataset
from bench.io import write_text
from models.images import resize_bilinear  # the bilinear baseline's own resize

N = 80
SPLITS = 3
HERE = Path(__file__).resolve().parent


def main() -> None:
    result: dict = {"n": N, "resolution": 64, "from": 32, "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, opts in [("toyfaces", {"size": 4096}), ("openmoji", {"subset": "emoji"})]:
            ds = build_dataset(kind, **opts)
            rows = []
            for split in range(SPLITS):
                a = list(range(2 * N * split, 2 * N * split + N))
                b = list(range(2 * N * split + N, 2 * N * (split + 1)))
                sets = {"real_a": ds.images(a, 64), "real_b": ds.images(b, 64),
                        "bilinear_a": resize_bilinear(ds.images(a, 32), 64)}
                paths = {}
                for name, arr in sets.items():
                    paths[name] = os.path.join(tmp, f"{kind}_{split}_{name}.npz")
                    np.savez(paths[name], images=arr)
                floor = compute_metrics(paths["real_a"], paths["real_b"], ["fid", "kid"])
                signal = compute_metrics(paths["bilinear_a"], paths["real_b"], ["fid", "kid"])
                row = {"split": split, "floor_fid": floor["fid"], "floor_kid": floor["kid"],
                       "bilinear_fid": signal["fid"], "bilinear_kid": signal["kid"]}
                rows.append(row)
                print(kind, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
            result["datasets"][kind] = {"options": opts, "splits": rows}
    write_text(HERE / "result.json", json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
