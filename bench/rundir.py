"""A run directory, `results/<suite>/<run-id>/`: every path of a run, its environment record, run ids.

`RunDir` is the one place that spells the layout (`<model>` is `model_key`: the
model's name, or name@tT for its training with training seed T); every stage and the report ask
it for paths (nothing else in bench/ joins run-directory path pieces). `LAYOUT`
lists every path pattern with what it holds, in the order the README's listing
gives them (tests/test_rundir.py checks the two against each other and against
what a run writes). Every file is written atomically (bench.io.atomic_path).

Inception features are not here: they live in the content-keyed cache
(`.cache/features/`, bench.features), shared by every run.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Optional

import torch

from bench import allocator
from bench.config import name_problem
from bench.dist import cpu_name, machine_kind
from bench.errors import BenchError
from bench.io import PROJECT_ROOT, rank_info

SUITE = "suite.yaml"
ENVIRONMENT = "environment.json"
METRICS = "metrics.csv"
CHECKSUMS = "checksums.json"
REPORT_FILES = ("index.md", "fig2.png", "samples.png", "fig5.png", "table.md", "table.csv", "table.tex")
COPIED_FILES = (METRICS, SUITE, ENVIRONMENT)  # also copied beside a report written elsewhere

# (pattern, what it is), in the order the README lists them
LAYOUT: tuple[tuple[str, str], ...] = (
    (SUITE, "the resolved suite"),
    (ENVIRONMENT, "versions, device, git commit"),
    ("checkpoints/<model>/model.safetensors", "trained weights"),
    ("checkpoints/<model>/model.json", "their metadata: architecture, training settings, losses"),
    ("checkpoints/<model>/train_state.safetensors", "the last training checkpoint (weights, EMA, Adam)"),
    ("checkpoints/<model>/train_state.json", "its step and losses, for resuming"),
    ("checkpoints/<model>/model_card.json", "parameters, FLOPs per resolution, training-step memory"),
    ("samples/<model>/rNNN_sS.npz", "generated images of seed set S at NNN px, their seeds and seconds"),
    ("samples/<model>/rNNN_sS.parts/bKKKKK.npz", "transient: batch K of a set being made"),
    ("references/rNNN.npz", "the first real images at NNN px, for Fig. 5"),
    ("previews/<model>_rNNN.png", "a grid of the first samples of the first seed set"),
    (METRICS, "one row per model, sampled resolution, seed set and FID mode"),
    (CHECKSUMS, "sha256 of every file the run wrote (not the report), checked on resume and by bench report"),
    *((name, "the report") for name in REPORT_FILES),
)
TRANSIENT = ("samples/<model>/rNNN_sS.parts/bKKKKK.npz",)  # in LAYOUT, but gone once a run has finished


def _res(resolution: int) -> str:
    return f"r{int(resolution):03d}"


class RunDir:
    """The paths of one run directory (nothing is created until a stage writes a file)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def of(cls, results: str | Path, suite: str, run_id: str) -> "RunDir":
        """results/<suite>/<run-id>."""
        return cls(Path(results) / suite / run_id)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __str__(self) -> str:
        return str(self.root)

    @property
    def name(self) -> str:
        """The run id."""
        return self.root.name

    # ------------------------------------------------------------------ top level
    @property
    def suite_yaml(self) -> Path:
        return self.root / SUITE

    @property
    def environment_json(self) -> Path:
        return self.root / ENVIRONMENT

    @property
    def metrics_csv(self) -> Path:
        return self.root / METRICS

    @property
    def checksums(self) -> Path:
        """sha256 of each file as the run wrote it (bench.integrity)."""
        return self.root / CHECKSUMS

    def is_report_file(self, path: Path) -> bool:
        return Path(path).parent == self.root and Path(path).name in REPORT_FILES

    def is_transient(self, path: Path) -> bool:
        """A sample set's batch file: removed once the set is merged."""
        return Path(path).parent.suffix == ".parts"

    def checkpoint_files(self) -> list[Path]:
        """Every file under checkpoints/, sorted."""
        return sorted(p for p in (self.root / "checkpoints").rglob("*") if p.is_file())

    # the report (REPORT_FILES)
    @property
    def index_md(self) -> Path:
        return self.root / "index.md"

    @property
    def fig2(self) -> Path:
        return self.root / "fig2.png"

    @property
    def samples_panel(self) -> Path:
        return self.root / "samples.png"

    @property
    def fig5(self) -> Path:
        return self.root / "fig5.png"

    @property
    def table_md(self) -> Path:
        return self.root / "table.md"

    @property
    def table_csv(self) -> Path:
        return self.root / "table.csv"

    @property
    def table_tex(self) -> Path:
        return self.root / "table.tex"

    def report_files(self) -> list[Path]:
        return [self.root / name for name in REPORT_FILES]

    def copied_files(self) -> list[Path]:
        return [self.root / name for name in COPIED_FILES]

    # ---------------------------------------------------------------- checkpoints
    def _model_dir(self, model: str) -> Path:
        return self.root / "checkpoints" / model

    def checkpoint(self, model: str) -> Path:
        """The trained model (safetensors; bench.checkpoint writes the .json beside it)."""
        return self._model_dir(model) / "model.safetensors"

    def train_state(self, model: str) -> Path:
        """The last training checkpoint, to resume from (safetensors + .json)."""
        return self._model_dir(model) / "train_state.safetensors"

    def model_card(self, model: str) -> Path:
        return self._model_dir(model) / "model_card.json"

    def model_cards(self) -> dict[str, Path]:
        """model -> its model_card.json, for every card present, sorted by model name (a model trained with
        several training seeds has one card, its first seed's: they share the network)."""
        return {model_of_key(p.parent.name)[0]: p for p in sorted(self.root.glob("checkpoints/*/model_card.json"))}

    # ------------------------------------------------------------------- samples
    def samples(self, model: str, resolution: int, seed_set: int) -> Path:
        """Where a seed set's samples are written."""
        return self.root / "samples" / model / f"{_res(resolution)}_s{seed_set}.npz"

    def sample_parts(self, model: str, resolution: int, seed_set: int) -> Path:
        """The folder of a set's per-batch files while it is being made."""
        path = self.samples(model, resolution, seed_set)
        return path.with_name(path.stem + ".parts")

    def sample_part(self, model: str, resolution: int, seed_set: int, batch: int) -> Path:
        return self.sample_parts(model, resolution, seed_set) / f"b{batch:05d}.npz"

    def samples_to_read(self, model: str, resolution: int, seed_set: int) -> Path:
        """The file that holds a seed set's samples: runs made before seed sets wrote rNNN.npz
        (one set), which reports still read; a missing file is the current name."""
        path = self.samples(model, resolution, seed_set)
        old = path.with_name(f"{_res(resolution)}.npz")
        return old if not path.is_file() and old.is_file() else path

    # ------------------------------------------------------------- other outputs
    def reference(self, resolution: int) -> Path:
        """A few real images at `resolution`, kept so reports never reopen the dataset."""
        return self.root / "references" / f"{_res(resolution)}.npz"

    def preview(self, model: str, resolution: int) -> Path:
        return self.root / "previews" / f"{model}_{_res(resolution)}.png"

    def relative(self, path: Path) -> str:
        """`path` as seen from the run directory (for messages and links in index.md)."""
        return Path(path).relative_to(self.root).as_posix()


def model_key(model: str, train_seed: Optional[int] = None) -> str:
    """A model's name in the run directory (the `<model>` of LAYOUT): its name, or `name@tT` for
    its training with training seed T in a suite with `seeds:`."""
    return model if train_seed is None else f"{model}@t{int(train_seed)}"


def model_of_key(key: str) -> tuple[str, Optional[int]]:
    """model_key's inverse: 'dfu@t2' -> ('dfu', 2), 'dfu' -> ('dfu', None)."""
    name, sep, seed = key.rpartition("@t")
    return (name, int(seed)) if sep and seed.isdigit() else (key, None)


def check_run_id(run_id: str, what: str = "--run-id") -> str:
    """A run id that is one safe folder name under results/<suite>/, or BenchError."""
    problem = name_problem(run_id)
    if problem:
        raise BenchError(f"{what}: {problem} (a run id becomes one folder under results/<suite>/, "
                         "e.g. 20261127-142725 or baseline-2)")
    return run_id


def new_run_id() -> str:
    """A run id from the local clock, e.g. 20261127-142725."""
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def environment(device: torch.device) -> dict:
    """environment.json: what ran the run (time, git commit, versions, device, process count)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                  timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    versions: dict[str, Optional[str]] = {}
    for pkg in ("torch", "numpy", "clean-fid", "torch-fidelity", "pillow", "dfu-bench"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
        "python": platform.python_version(), "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "machine": machine_kind(device),
        "torch_threads": torch.get_num_threads(), "versions": versions,
        "world_size": rank_info()[1], "allocator": allocator.state(),
    }
