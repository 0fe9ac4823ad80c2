"""The paper's and the authors' FID numbers (bench/reference/paper_numbers.csv).

Suites name a dataset of this file in `report.reference`, and map their model
names onto its model labels in `report.reference_models`; reports then put these
numbers beside the run's. The file lies inside the package (see its README), so
nothing here reads outside the repository.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

PAPER_NUMBERS = Path(__file__).resolve().parent / "reference" / "paper_numbers.csv"
COLUMNS = ["dataset", "model", "train_resolutions", "sample_resolution", "fid", "n_samples", "fid_impl", "source"]
# fid_impl -> the FID mode of this harness that follows the same protocol; a number is
# shown only beside a run's numbers of that mode. `unknown` is the paper's abstract,
# which names no implementation; the authors' code has one FID script, EDM's fid.py,
# so legacy is the only mode it could match (its impl still reads `unknown`).
PROTOCOL = {"edm-fid": "legacy", "unknown": "legacy"}


def paper_rows() -> list[dict]:
    """Every row of the file, numbers parsed; n_samples is None where the source does not give it."""
    with open(PAPER_NUMBERS, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["sample_resolution"] = int(r["sample_resolution"])
        r["fid"] = float(r["fid"])
        r["n_samples"] = int(r["n_samples"]) if r["n_samples"] else None
    return rows


def labels() -> dict[str, list[str]]:
    """dataset label -> its model labels, in file order."""
    out: dict[str, list[str]] = {}
    for r in paper_rows():
        models = out.setdefault(r["dataset"], [])
        if r["model"] not in models:
            models.append(r["model"])
    return out


def reference_frame(dataset: str | None, mapping: dict[str, str] | None = None):
    """The dataset's rows as a DataFrame, with `label` ("paper: dfu") and `suite_models`.

    With a mapping (suite model -> csv model), only the mapped csv models are kept;
    without one, all of the dataset's models are. Empty when dataset is None.
    """
    # inside: pandas takes 0.1-0.25 s to import (python -X importtime), and bench.config imports this
    # module, i.e. every command does, while only reports need the frame
    import pandas as pd

    cols = ["label", "suite_models", *COLUMNS, "protocol"]
    if dataset is None:
        return pd.DataFrame(columns=cols)
    rows = [r for r in paper_rows() if r["dataset"] == dataset]
    if mapping:
        rows = [r for r in rows if r["model"] in mapping.values()]
    for r in rows:
        r["label"] = f"paper: {r['model']}"
        r["suite_models"] = "/".join(k for k, v in (mapping or {}).items() if v == r["model"])
        r["protocol"] = PROTOCOL.get(r["fid_impl"])
    return pd.DataFrame(rows, columns=cols)


def describe_n(n) -> str:
    """50000 -> 'N=50k'; a missing count says so instead of guessing."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "N not given"
    n = int(n)
    return f"N={n // 1000}k" if n % 1000 == 0 else f"N={n:,}"
