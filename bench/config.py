"""Suite configuration: YAML -> validated, typed objects (pydantic).

Every problem is reported as one line with its key path (`models.1.train.steps:
Input should be greater than 0`), and nothing is written before the whole suite
validates, including checks that need the model registry (unknown adapter,
resolutions the architecture cannot run at) and the data (missing folder).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.errors import BenchError

Resolution = Annotated[int, Field(ge=8, le=512)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(Strict):
    kind: Literal["toyfaces", "imagefolder"] = "toyfaces"
    size: Optional[int] = Field(None, gt=0, description="toyfaces: number of images")
    seed: int = 0
    path: Optional[str] = Field(None, description="imagefolder: folder or .zip of images")

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "imagefolder" and not self.path:
            raise ValueError("imagefolder needs `path` (a folder or .zip of images)")
        if self.kind == "toyfaces" and self.path:
            raise ValueError("toyfaces is generated; remove `path` or use kind: imagefolder")
        return self


class TrainConfig(Strict):
    resolutions: list[Resolution] = Field(min_length=1)
    weights: Optional[list[Annotated[float, Field(gt=0)]]] = None
    steps: int = Field(gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(1e-3, gt=0)
    lr_warmup_steps: int = Field(0, ge=0)
    ema_halflife_kimg: float = Field(2.0, gt=0, description="EMA half-life in thousands of images")
    ema_rampup: Optional[float] = Field(0.05, gt=0, description="half-life <= rampup * images seen")
    dropout: Optional[float] = Field(None, ge=0, lt=1)
    checkpoint_every: int = Field(200, gt=0)
    data_warmup_kimg: float = Field(0.0, ge=0, description="first K thousand images only at <= data_warmup_max_resolution")
    data_warmup_max_resolution: Optional[Resolution] = None
    micro_batch: dict[int, Annotated[int, Field(gt=0)]] = Field(
        default_factory=dict, description="per-resolution micro-batch cap (gradient accumulation)")

    @model_validator(mode="after")
    def _check(self):
        if self.weights is not None and len(self.weights) != len(self.resolutions):
            raise ValueError(f"weights has {len(self.weights)} entries but resolutions has "
                             f"{len(self.resolutions)}; give one weight per resolution")
        if len(set(self.resolutions)) != len(self.resolutions):
            raise ValueError("resolutions contains duplicates")
        if self.data_warmup_kimg and (self.data_warmup_max_resolution is None or
                                      self.data_warmup_max_resolution < min(self.resolutions)):
            raise ValueError("data_warmup_kimg needs data_warmup_max_resolution >= the smallest training resolution")
        stray = sorted(set(self.micro_batch) - set(self.resolutions))
        if stray:
            raise ValueError(f"micro_batch names resolutions {stray} that are not training resolutions")
        return self


class ModelConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.+-]+$")
    adapter: str
    arch: Optional[str] = None
    arch_overrides: dict = Field(default_factory=dict)
    train: Optional[TrainConfig] = None
    source: Optional[str] = Field(None, description="bilinear: a model name or 'data'")
    base_resolution: Optional[Resolution] = None


class SampleConfig(Strict):
    resolutions: list[Resolution] = Field(min_length=1)
    n: int = Field(gt=1, description="samples per (model, resolution, seed set)")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0], min_length=1,
        description="seed sets; set s uses per-sample seeds s*n .. (s+1)*n-1")
    steps: int = Field(18, gt=0)
    batch_size: int = Field(32, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds contains duplicates")
        return self


MetricName = Literal["fid", "kid", "pr", "patch-fid", "patch-kid", "spectral"]


class MetricsConfig(Strict):
    fid_mode: Literal["clean"] = "clean"
    metrics: list[MetricName] = Field(default_factory=lambda: ["fid", "kid", "spectral"])
    batch_size: int = Field(32, gt=0)
    inception_path: Optional[str] = None
    kid_subset_seed: int = 0
    patch_size: int = Field(32, ge=8, description="patch-fid/patch-kid crop size (px, native resolution)")
    patches_per_image: int = Field(4, ge=1)
    pr_k: int = Field(3, ge=1, description="k of the k-NN manifolds for precision/recall")

    @model_validator(mode="after")
    def _check(self):
        if "fid" not in self.metrics:
            raise ValueError("metrics must include fid (the plot and tables are built on it)")
        return self


class ReportConfig(Strict):
    """What the report compares the run with: a dataset of bench/reference/paper_numbers.csv."""

    reference: Optional[str] = Field(None, description="dataset label in paper_numbers.csv, e.g. lsun_church")
    reference_models: dict[str, str] = Field(
        default_factory=dict, description="suite model name -> model label of that dataset in the csv")

    @model_validator(mode="after")
    def _check(self):
        from bench.paper import labels

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
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    device: str = "auto"
    dataset: DatasetConfig
    models: list[ModelConfig] = Field(min_length=1)
    sample: SampleConfig
    metrics: MetricsConfig = MetricsConfig()
    report: ReportConfig = ReportConfig()

    @model_validator(mode="after")
    def _check(self):
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dup)}")
        return self

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


def load_suite(path: str | Path) -> SuiteConfig:
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"suite file {path} does not exist; see suites/ for examples")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise BenchError(f"{path}:{where} malformed YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: expected a mapping at the top level (name, dataset, models, sample)")
    return parse_suite(data, str(path))
