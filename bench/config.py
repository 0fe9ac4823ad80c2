"""Suite configuration: YAML -> validated, typed objects (pydantic).

Every problem is reported as one line with its key path (`models.1.train.steps:
Input should be greater than 0`), and nothing is written before the whole suite
validates, including checks that need the model registry (unknown adapter,
resolutions the architecture cannot run at) and the data (missing folder).
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional, Union, get_args

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_serializer, model_validator)

from bench.errors import BenchError
from bench.metrics import FID_MODES, METRICS, MetricOptions
from bench.paper import labels

Resolution = Annotated[int, Field(ge=8, le=512)]

# Upper bounds that a user can read in the error (`Input should be less than or equal to ...`):
# far above any real run (the paper's are 50k samples, 200k steps, batch 512), far below what
# would allocate for ever or overflow a seed.
MAX_SEED = 2**32 - 1  # numpy's and torch's seeding range
MAX_IMAGES = 10_000_000  # dataset.size, sample.n: images
MAX_SEED_SET = 1_000_000  # sample.seeds: set s uses seeds s*n .. (s+1)*n-1
MAX_STEPS = 100_000_000  # optimizer steps
MAX_KIMG = 10_000_000.0  # thousands of images
MAX_BATCH = 65_536  # images per batch
MAX_SAMPLER_STEPS = 10_000  # ODE steps per sample
MAX_PATCH_SIZE = 512  # metrics.patch_size (px), and `bench metrics --patch-size`
MAX_PATCHES_PER_IMAGE = 10_000  # metrics.patches_per_image, and `bench metrics --patches-per-image`
MAX_PR_K = 10_000  # metrics.pr_k, and `bench metrics --pr-k`
# a run id, suite name or model name becomes one path component: letters, digits, '_', '.', '-'
# (model names also '+'), not starting with '.' or '-', at most 128 characters
NAME_LENGTH = 128
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
SAFE_MODEL_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]*")
# YAML aliases may expand a small file into an enormous structure (an "alias bomb")
MAX_YAML_NODES = 100_000
# a suite nests about six levels (models -> a model -> train -> micro_batch -> ...); thousands of
# brackets exhaust Python's recursion in the YAML reader, and hundreds the writers of the resolved suite
MAX_YAML_DEPTH = 64


def name_problem(value: str, pattern: re.Pattern = SAFE_NAME) -> Optional[str]:
    """Why `value` cannot be a path component of the results (None: it can)."""
    if not isinstance(value, str) or not value:
        return "must not be empty"
    if len(value) > NAME_LENGTH:
        return f"is {len(value)} characters long; use at most {NAME_LENGTH}"
    if not pattern.fullmatch(value):
        extra = ", '+'" if pattern is SAFE_MODEL_NAME else ""
        return (f"{value!r} is not one plain folder name; use letters, digits, '_', '.', '-'{extra} "
                "(not starting with '.' or '-')")
    return None


def _safe_name(pattern: re.Pattern):
    def check(v):
        problem = name_problem(v, pattern) if isinstance(v, str) else None
        if problem:
            raise ValueError(problem)
        return v
    return check


class Strict(BaseModel):
    # allow_inf_nan=False: every float of a suite is finite (`Input should be a finite number`)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DatasetConfig(Strict):
    kind: Literal["toyfaces", "imagefolder", "prepared", "grf", "openmoji"] = "toyfaces"
    size: Optional[int] = Field(None, gt=0, le=MAX_IMAGES, description="toyfaces, grf: number of images; openmoji: the first "
                                                        "`size` of the subset (default: all of it)")
    seed: int = 0
    path: Optional[str] = Field(None, description="imagefolder: folder or .zip of images")
    name: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
                                description="prepared: the NAME given to `bench data prepare`")
    root: Optional[str] = Field(None, description="prepared: folder holding NAME/ (default $DFU_BENCH_DATA or data/)")
    source: Optional[str] = Field(None, description="prepared: the original images, only to print the prepare command")
    # grf (bench/grf.py): P(k) = A (|k|^2 + kappa^2)^(-alpha), k in cycles per unit length
    # bounds: bench/grf.py (MIN_KAPPA, MAX_KAPPA, MIN_STD, MAX_STD) says why
    kappa: Optional[float] = Field(None, ge=1e-3, le=256, description="grf: spectral knee, cycles per unit length "
                                                                       "(default 2)")
    alpha: Optional[float] = Field(None, gt=1, le=10, description="grf: spectral exponent (default 2); > 1 "
                                                                  "for a finite variance")
    std: Optional[float] = Field(None, ge=0.1, le=1.5, description="grf: the field's standard deviation (default 1; "
                                                                 "+-4.5 map to uint8 0 and 255)")
    channel_correlation: Optional[float] = Field(None, gt=-0.5, lt=1, description="grf: correlation of the three "
                                                                                  "channels (default 0)")
    # openmoji (bench/openmoji.py)
    subset: Optional[Literal["faces", "emoji", "all"]] = Field(None, description="openmoji: which emoji (default faces)")
    background: Optional[tuple[Annotated[int, Field(ge=0, le=255)], Annotated[int, Field(ge=0, le=255)],
                               Annotated[int, Field(ge=0, le=255)]]] = Field(
        None, description="openmoji: RGB background, 0-255 (default [255, 255, 255])")
    filter: Optional[Literal["lanczos", "bilinear-aa"]] = Field(
        None, description="imagefolder: the resize filter (default lanczos); prepared: the filter the data must "
                          "have been prepared with (checked against its manifest; unset: not checked)")

    @model_validator(mode="after")
    def _check(self):
        if self.kind in ("toyfaces", "grf", "openmoji") and self.filter:
            raise ValueError(f"{self.kind} is rendered at each resolution, not resized; remove `filter`")
        if self.kind == "imagefolder" and not self.path:
            raise ValueError("imagefolder needs `path` (a folder or .zip of images)")
        if self.kind == "toyfaces" and self.path:
            raise ValueError("toyfaces is generated; remove `path` or use kind: imagefolder")
        if self.kind == "prepared" and not self.name:
            raise ValueError("prepared needs `name` (the NAME given to bench data prepare)")
        if self.kind == "prepared" and self.path:
            raise ValueError("prepared reads ROOT/NAME, not `path`; remove `path` (put the original images in `source`)")
        if self.kind != "prepared" and (self.name or self.root or self.source):
            raise ValueError(f"name/root/source only apply to kind: prepared; remove them from this {self.kind} dataset")
        if self.kind in ("grf", "openmoji") and self.path:
            raise ValueError(f"{self.kind} is generated; remove `path` or use kind: imagefolder")
        for owner, keys in (("grf", ("kappa", "alpha", "std", "channel_correlation")),
                            ("openmoji", ("subset", "background"))):
            stray = [k for k in keys if getattr(self, k) is not None]
            if self.kind != owner and stray:
                raise ValueError(f"{'/'.join(stray)}: only for kind: {owner}; remove from this {self.kind} dataset")
        return self


class TrainConfig(Strict):
    """One training (or fine-tuning) run. Durations and intervals are given in optimizer
    steps or, as the authors' code does, in thousands of images (kimg); not both."""

    resolutions: list[Resolution] = Field(default_factory=list,
                                          description="required, except for a finetune model (taken from its base)")
    weights: Optional[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]] = None
    schedule: Optional[Literal["round-robin", "weighted", "weighted-per-rank"]] = Field(
        None, description="round-robin: one step per resolution in the order of `resolutions` (the authors' "
                          "published runs); weighted: one resolution per global step drawn by `weights`; "
                          "weighted-per-rank: every process draws its own (results depend on the process "
                          "count). Default: weighted when weights are given (or for a fine-tune), else round-robin")
    steps: Optional[int] = Field(None, gt=0, le=MAX_STEPS)
    kimg: Optional[float] = Field(None, gt=0, le=MAX_KIMG, description="duration in thousands of images (instead of steps)")
    batch_size: int = Field(16, gt=0, le=MAX_BATCH)
    lr: float = Field(1e-3, gt=0, le=10)
    lr_warmup_steps: Optional[int] = Field(None, ge=0, le=MAX_STEPS)
    lr_warmup_kimg: Optional[float] = Field(None, ge=0, le=MAX_KIMG, description="linear LR warm-up, in kimg (instead of steps)")
    ema_halflife_kimg: float = Field(2.0, gt=0, description="EMA half-life in thousands of images")
    ema_rampup: Optional[float] = Field(0.05, gt=0, description="half-life <= rampup * images seen")
    dropout: Optional[float] = Field(None, ge=0, lt=1)
    augment: Optional[float] = Field(None, gt=0, le=1, description="EDM geometric augmentation probability "
                                     "(the authors: 0.12); needs the 9-dim augment label embedding")
    checkpoint_every: Optional[int] = Field(None, gt=0, le=MAX_STEPS)
    checkpoint_every_kimg: Optional[float] = Field(None, gt=0, le=MAX_KIMG, description="checkpoint interval in kimg")
    data_warmup_kimg: float = Field(0.0, ge=0, le=MAX_KIMG, description="first K thousand images only at <= data_warmup_max_resolution")
    data_warmup_max_resolution: Optional[Resolution] = None
    micro_batch: dict[int, Annotated[int, Field(gt=0, le=MAX_BATCH)]] = Field(
        default_factory=dict, description="per-resolution micro-batch cap (gradient accumulation)")

    @model_validator(mode="after")
    def _check(self):
        for a, b in (("steps", "kimg"), ("lr_warmup_steps", "lr_warmup_kimg"),
                     ("checkpoint_every", "checkpoint_every_kimg")):
            if getattr(self, a) is not None and getattr(self, b) is not None:
                raise ValueError(f"give {a} or {b}, not both")
        if self.steps is None and self.kimg is None:
            raise ValueError("give the training length as steps or kimg")
        if self.schedule == "round-robin" and self.weights is not None:
            raise ValueError("weights apply to the weighted schedules; remove them or set schedule: weighted")
        # (a fine-tune has no resolutions of its own: its weights are checked against its base's)
        if self.weights is not None and self.resolutions and len(self.weights) != len(self.resolutions):
            raise ValueError(f"weights has {len(self.weights)} entries but resolutions has "
                             f"{len(self.resolutions)}; give one weight per resolution")
        if len(set(self.resolutions)) != len(self.resolutions):
            raise ValueError("resolutions contains duplicates")
        if self.data_warmup_kimg and self.resolutions and (
                self.data_warmup_max_resolution is None or self.data_warmup_max_resolution < min(self.resolutions)):
            raise ValueError("data_warmup_kimg needs data_warmup_max_resolution >= the smallest training resolution")
        stray = sorted(set(self.micro_batch) - set(self.resolutions)) if self.resolutions else []
        if stray:
            raise ValueError(f"micro_batch names resolutions {stray} that are not training resolutions")
        return self

    def _to_steps(self, kimg: float) -> int:
        return max(1, math.ceil(kimg * 1000 / self.batch_size))

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else self._to_steps(self.kimg)

    @property
    def warmup_nimg(self) -> float:
        """Images over which the LR ramps linearly from 0 (EDM's lr_rampup_kimg * 1000)."""
        if self.lr_warmup_kimg is not None:
            return self.lr_warmup_kimg * 1000
        return (self.lr_warmup_steps or 0) * self.batch_size

    @property
    def checkpoint_steps(self) -> int:
        if self.checkpoint_every_kimg is not None:
            return self._to_steps(self.checkpoint_every_kimg)
        return self.checkpoint_every or 200


FreezePart = Literal["all", "norm", "spectral"]


class FinetuneConfig(Strict):
    """Fine-tune a model trained earlier in the same suite, as the authors' evaluated
    snapshot was made: a *transfer* start from the base's EMA weights.

    Transfer: images are counted from 0, so the LR ramps from 0 over the fine-tune's
    own `lr_warmup_kimg`; the EMA starts from the base's EMA with no ramp-up
    (`ema_rampup` defaults to none); augmentation defaults to the base's `augment`.
    The authors' first tick skipped the target resolution: say so with
    `data_warmup_kimg` and `data_warmup_max_resolution` (the FFHQ suite does).

    Strategies:
    ``mixed``: the base's training resolutions plus `target_resolution`, whose images
    are the data at `upsample_from` (default: the base's largest training resolution)
    upsampled bilinearly -- no real high-resolution data; the target is drawn with
    `target_weight`, the base resolutions share the rest (equally, or by `train.weights`).
    ``spectral-only``: the authors' `--finetune_spectral`: every spatial-conv weight
    and bias is frozen (norms, embeddings, attention and spectral weights train) and
    all data is the upsampled target resolution.
    ``spectral-weights-only``: stricter, ours: every weight but the spectral ones
    frozen, on the mixed data.
    ``freeze``: per UNet level (0 = finest) or ``misc`` (the embedding layers), which
    parameters to freeze: ``all``, ``norm`` (GroupNorm) or ``spectral`` (the FNO
    branch). The authors' code matches these words as substrings of parameter names,
    so there ``all`` freezes nothing and ``norm`` also matches the output
    ``aux_norm``; here ``all`` freezes the whole level and ``norm`` every GroupNorm
    of it (``0_aux_norm`` included, as theirs).
    """

    base: str
    strategy: Literal["mixed", "spectral-only", "spectral-weights-only"] = "mixed"
    target_resolution: Resolution
    target_weight: float = Field(0.3, gt=0, lt=1)
    upsample_from: Optional[Resolution] = None
    freeze: dict[Union[int, Literal["misc"]], list[FreezePart]] = Field(default_factory=dict)


class ModelConfig(Strict):
    name: Annotated[str, AfterValidator(_safe_name(SAFE_MODEL_NAME))]
    adapter: str
    arch: Optional[str] = None
    arch_overrides: dict = Field(default_factory=dict)
    train: Optional[TrainConfig] = None
    finetune: Optional[FinetuneConfig] = None
    source: Optional[str] = Field(None, description="bilinear: a model name or 'data'")
    base_resolution: Optional[Resolution] = None
    checkpoint: Optional[str] = Field(None, description="a pretrained network instead of `train`: a dfu-bench "
                                      "checkpoint (.safetensors with its .json; bench import-checkpoint's output "
                                      "or a model of another run), relative to the current directory")
    trained_on: Optional[list[Resolution]] = Field(None, min_length=1, description="the resolutions a checkpoint's "
                                                   "network was trained on, when its metadata does not record them")

    @model_validator(mode="after")
    def _check(self):
        if self.checkpoint is not None and self.train is not None:
            raise ValueError("give train (train it here) or checkpoint (a pretrained network), not both")
        if self.trained_on is not None and self.checkpoint is None:
            raise ValueError("trained_on describes a checkpoint; remove it or give checkpoint")
        if self.train is None:
            if self.finetune is not None:
                raise ValueError("a finetune model needs a train section (steps or kimg, lr, batch_size)")
            return self
        if self.finetune is None and not self.train.resolutions:
            raise ValueError("train.resolutions is required (one or more square resolutions)")
        if self.finetune is not None and self.train.resolutions:
            raise ValueError("a finetune model takes its resolutions from finetune.base; remove train.resolutions")
        return self


class SampleConfig(Strict):
    resolutions: list[Resolution] = Field(min_length=1)
    n: int = Field(gt=1, le=MAX_IMAGES, description="samples per (model, resolution, seed set)")
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED_SET)]] = Field(
        default_factory=lambda: [0], min_length=1,
        description="seed sets; set s uses per-sample seeds s*n .. (s+1)*n-1")
    steps: int = Field(18, gt=0, le=MAX_SAMPLER_STEPS)
    batch_size: int = Field(32, gt=0, le=MAX_BATCH)

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds contains duplicates")
        return self


MetricName = Literal[tuple(METRICS)]  # the metric table's names (bench.metrics)
FidMode = Literal[tuple(FID_MODES)]
_DEFAULTS = MetricOptions()


class MetricsConfig(Strict):
    fid_mode: Union[FidMode, list[FidMode]] = Field(
        "clean", description="; ".join(f"{m.name}: {m.how}" for m in FID_MODES.values())
        + "; a list computes every Inception metric in each mode, the first one is primary (figures, findings)")
    reference_n: Optional[Union[int, Literal["all"]]] = Field(
        None, description="real images per resolution for the reference statistics: a number (the first N) or "
                          "all (the paper's protocol); both are streamed. Default: min(sample.n, dataset size), "
                          "held in memory")
    metrics: list[MetricName] = Field(default_factory=lambda: ["fid", "kid", "spectral"])
    batch_size: int = Field(32, gt=0, le=MAX_BATCH)
    inception_path: Optional[str] = None
    kid_subset_seed: int = Field(_DEFAULTS.kid_subset_seed, ge=0, le=MAX_SEED)
    patch_size: int = Field(_DEFAULTS.patch_size, ge=8, le=MAX_PATCH_SIZE,
                            description="patch-fid/patch-kid crop size (px, native resolution)")
    patches_per_image: int = Field(_DEFAULTS.patches_per_image, ge=1, le=MAX_PATCHES_PER_IMAGE)
    pr_k: int = Field(_DEFAULTS.pr_k, ge=1, le=MAX_PR_K, description="k of the k-NN manifolds for precision/recall")

    # Unions report one error per member; these say what is wrong in one line instead.
    @field_validator("fid_mode", mode="before")
    @classmethod
    def _one_mode_or_a_list(cls, v):
        modes = [v] if isinstance(v, str) else v
        if not isinstance(modes, list) or any(m not in get_args(FidMode) for m in modes):
            raise ValueError(f"give clean, legacy or a list of them, not {v!r}")
        return v

    @field_validator("reference_n", mode="before")
    @classmethod
    def _count_or_all(cls, v):
        if v is None or v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 2):
            return v
        raise ValueError(f"give a number of real images (at least 2) or all, not {v!r}")

    @model_validator(mode="after")
    def _check(self):
        if "fid" not in self.metrics and not any(METRICS[m].exact for m in self.metrics):
            raise ValueError("metrics must include fid (the plot and tables are built on it), or a metric "
                             "scored against the dataset's exact answer (grf-spectrum)")
        if not self.fid_modes:
            raise ValueError("fid_mode is an empty list; give clean, legacy or a list of them")
        if len(set(self.fid_modes)) != len(self.fid_modes):
            raise ValueError("fid_mode repeats a mode; list each once")
        return self

    @property
    def fid_modes(self) -> list[str]:
        """The FID modes to compute, the primary one first."""
        return [self.fid_mode] if isinstance(self.fid_mode, str) else list(self.fid_mode)

    @property
    def options(self) -> MetricOptions:
        return MetricOptions(kid_subset_seed=self.kid_subset_seed, pr_k=self.pr_k, patch_size=self.patch_size,
                             patches_per_image=self.patches_per_image)


class RuntimeConfig(Strict):
    """How the stages execute (not what they compute): numeric precision and compilation.

    Both are off by default (fp32, eager), as in the paper's training; bf16 autocast
    needs a device with bf16 support, and torch.compile a working backend (inductor
    needs a C++ compiler on CPU and compiles once per resolution)."""

    precision: Literal["fp32", "tf32", "bf16"] = Field(
        "fp32", description="fp32: strict, TF32 off (the authors' setting); tf32: TF32 convolutions and "
                            "matmuls on CUDA; bf16: bf16 autocast of the forward pass (TF32 elsewhere)")
    compile: bool = False
    compile_backend: str = Field("inductor", description="torch.compile backend, e.g. inductor, aot_eager")
class ReportConfig(Strict):
    """What the report compares the run with: a dataset of bench/reference/paper_numbers.csv."""

    reference: Optional[str] = Field(None, description="dataset label in paper_numbers.csv, e.g. lsun_church")
    reference_models: dict[str, str] = Field(
        default_factory=dict, description="suite model name -> model label of that dataset in the csv")

    @model_validator(mode="after")
    def _check(self):
        if self.reference is None:
            if self.reference_models:
                raise ValueError("reference_models needs reference (a dataset of bench/reference/paper_numbers.csv)")
            return self
        known = labels()
        if self.reference not in known:
            raise ValueError(f"reference {self.reference!r} is not a dataset of bench/reference/paper_numbers.csv; "
                             f"known: {', '.join(known)}")
        bad = sorted(v for v in self.reference_models.values() if v not in known[self.reference])
        if bad:
            raise ValueError(f"reference_models maps to {', '.join(map(repr, bad))}, not a model of "
                             f"{self.reference} in paper_numbers.csv; known: {', '.join(known[self.reference])}")
        return self


class SuiteConfig(Strict):
    name: Annotated[str, AfterValidator(_safe_name(SAFE_NAME))]
    description: str = ""
    seed: int = Field(0, ge=0, le=MAX_SEED)
    seeds: Optional[list[Annotated[int, Field(ge=0, le=MAX_SEED)]]] = Field(
        None, min_length=1, description="training seeds: every trained model is trained once per seed (each as "
        "with `seed: T`); sampling seed sets stay as they are. Reports give mean and a 95% interval over them")
    device: str = "auto"
    dataset: DatasetConfig
    models: list[ModelConfig] = Field(min_length=1)
    sample: SampleConfig
    metrics: MetricsConfig = MetricsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    report: ReportConfig = ReportConfig()

    @model_validator(mode="after")
    def _check(self):
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dup)}")
        return self

    @model_validator(mode="after")
    def _check_seeds(self):
        if self.seeds is not None:
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError("seeds contains duplicates")
            if "seed" in self.model_fields_set and self.seed != self.seeds[0]:
                raise ValueError("seeds replaces seed: remove seed, or make it the first of seeds")
            object.__setattr__(self, "seed", self.seeds[0])  # so the resolved suite reads back the same
        return self

    @model_serializer(mode="wrap")
    def _without_unset_seeds(self, handler):
        # a suite without `seeds:` resolves as it did before the key existed, so runs started
        # then still resume (open_run_dir compares the resolved suite)
        data = handler(self)
        if self.seeds is None and isinstance(data, dict):
            data.pop("seeds", None)
        return data

    @property
    def train_seeds(self) -> list[int]:
        """The training seeds: `seeds`, or the one `seed`."""
        return list(self.seeds) if self.seeds is not None else [self.seed]

    @model_validator(mode="after")
    def _check_report(self):
        stray = sorted(set(self.report.reference_models) - {m.name for m in self.models})
        if stray:
            raise ValueError(f"report.reference_models names {', '.join(stray)}, not a model of this suite")
        return self


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_suite(data: object, source: str = "suite") -> SuiteConfig:
    try:
        return SuiteConfig.model_validate(data)
    except ValidationError as exc:
        raise BenchError(_format_errors(exc, source)) from None


class DuplicateKey(yaml.YAMLError):
    """A mapping that gives one key twice (YAML says keys are unique; PyYAML keeps the last)."""

    def __init__(self, key, line: int, first: int):
        super().__init__(f"key {key!r} on line {line} is given twice (first on line {first})")
        self.key, self.line, self.first = key, line, first


class _SuiteLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, at any level.

    Each mapping is checked once, as written, before PyYAML flattens it: flattening rewrites the node
    in place with the merged keys (`<<: *base`) inlined, and an anchored mapping that merges another
    may be flattened (through an alias) before its own turn comes, when its overrides would look
    like repeats."""

    def __init__(self, stream):
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node):
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # `<<: *base` may be overridden key by key, as YAML's merge keys allow
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise DuplicateKey(key, line, seen[key])
                seen[key] = line
        super().flatten_mapping(node)


def load_suite(path: str | Path) -> SuiteConfig:
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"suite file {path} is a directory; give a suite's YAML file, e.g. suites/smoke.yaml")
    if path.exists() and not path.is_file():
        raise BenchError(f"suite file {path} is not a regular file; give a suite's YAML file, e.g. suites/smoke.yaml")
    if not path.is_file():
        raise BenchError(f"suite file {path} does not exist; see suites/ for examples")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path} is not UTF-8 text (byte {exc.start} is not valid UTF-8); save the suite as "
                         "UTF-8 YAML") from None
    except OSError as exc:
        raise BenchError(f"{path} cannot be read ({exc.strerror or type(exc).__name__}); check the file") from None
    try:
        loader = _SuiteLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except RecursionError:
        raise _too_deep(path) from None
    except DuplicateKey as exc:
        raise BenchError(f"{path}: line {exc.line}: key {exc.key!r} is given twice (first on line {exc.first}); "
                         "keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise BenchError(f"{path}:{where} malformed YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: expected a mapping at the top level (name, dataset, models, sample)")
    try:
        cfg = parse_suite(data, str(path))  # first: an unknown key is the clearer message
    except RecursionError:
        raise _too_deep(path) from None
    nodes, depth = _expanded(node)
    if nodes > MAX_YAML_NODES:
        raise BenchError(f"{path}: YAML aliases (*name) expand to more than {MAX_YAML_NODES:,} values (an alias "
                         "bomb?); write the values out instead of repeating aliases")
    if depth > MAX_YAML_DEPTH:
        raise _too_deep(path)
    return cfg


def _too_deep(path: Path) -> BenchError:
    return BenchError(f"{path}: YAML nested more than {MAX_YAML_DEPTH} levels deep (lists or mappings inside each "
                      "other); a suite needs a few levels, remove the extra nesting")


def _expanded(root) -> tuple[int, int]:
    """(nodes, depth) of the YAML graph once every alias is expanded: shared nodes counted per use, a
    recursive alias once, as it is built once. Past the recursion limit: both over their bounds."""
    memo: dict[int, tuple[int, int]] = {}

    def walk(node) -> tuple[int, int]:
        key = id(node)
        if key not in memo:
            memo[key] = (1, 1)  # a recursive alias counts once
            children = (node.value if isinstance(node, yaml.SequenceNode) else
                        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
            below = [walk(n) for n in children]
            memo[key] = (1 + sum(n for n, _ in below), 1 + max((d for _, d in below), default=0))
        return memo[key]

    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(limit, 10_000))
        return walk(root)
    except RecursionError:
        return MAX_YAML_NODES + 1, MAX_YAML_DEPTH + 1
    finally:
        sys.setrecursionlimit(limit)
