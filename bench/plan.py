"""What a suite means: every check that can run before anything is written, and each model resolved once.

`plan_suite(cfg)` builds the dataset and checks that the data is there, builds
every model's adapter (from the registry, models.adapters.ADAPTERS), and checks
what the adapters and the process count can tell: unknown adapters, sections an
adapter does not take, resolutions a network cannot run at, fine-tunes that do not
continue their base, batch sizes smaller than the process count. All problems
are collected and raised as one BenchError, one line each, before a run
directory exists. Then it resolves each model into a `ModelPlan`: its adapter
and role, the real-data resolutions it learned from (as ints), its TrainSettings,
its fine-tune base, its source -- the facts every stage reads and none works out
again. A suite with `seeds:` gets one ModelPlan per model and training seed T for
every model a training seed touches (trained, fine-tuned, or resizing such a
model's samples), each built and trained as the suite with `seed: T` would be;
`key` names its place in the run directory (bench.rundir.model_key).

A model with `checkpoint:` (a pretrained network) is loaded here, through
bench.pretrained, so a missing, unreadable or mismatched checkpoint fails the
plan like any other problem; its training resolutions are its metadata's or
`trained_on:`, and a fine-tune of it starts from its weights.

What the harness knows about a model comes from its adapter's interface
(trainable, uses_source, role, resolution_problem, ...): nothing here tests an
adapter's name.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional

import torch

from bench import grf, openmoji
from bench.config import ModelConfig, SuiteConfig
from bench.datasets import RESIZE_FILTER, ImageDataset, build_dataset
from bench.errors import BenchError
from bench.inception import check_explicit, resolve
from bench.dist import pick_device
from bench.io import rank_info
from bench.pretrained import arch_of, load_model, recorded_resolutions
from bench.metrics import select
from bench.rundir import model_key
from models.adapters import ADAPTERS, ROLES, Adapter, Setup
from models.augment import LABEL_DIM
from models.networks import get_arch
from models.training import TrainSettings


@dataclass(frozen=True)
class SampleSettings:
    """What every model is sampled at: seed set s of n images uses per-sample seeds s*n .. (s+1)*n-1."""

    resolutions: tuple[int, ...]
    n: int
    seeds: tuple[int, ...]
    steps: int
    batch_size: int


@dataclass(frozen=True)
class ModelPlan:
    """One model of a suite, resolved."""

    name: str
    config: ModelConfig
    adapter: Adapter
    role: str  # models.adapters.ROLES
    # the real data it learned from, in the suite's order: a fine-tune's are its base's (its
    # upsampled target is not real data), a model that resizes another's images has its source's
    train_resolutions: tuple[int, ...]
    train: Optional[TrainSettings]  # None: not trained in this run
    finetune_base: Optional[str]  # the model a fine-tune starts from
    source: Optional[str]  # uses_source adapters: the model whose samples it resizes, or "data"
    base_resolution: Optional[int]  # ... at this resolution
    sample: SampleSettings
    train_seed: Optional[int] = None  # the suite's `seeds:` entry this instance was trained with, else None
    key: str = ""  # its name in the run directory: the model's name, or name@tT per training seed
    checkpoint: Optional[str] = None  # a pretrained network's checkpoint (loaded into the adapter at planning)

    @property
    def largest_trained_resolution(self) -> int:
        """The largest resolution a training step runs at, a fine-tune's upsampled target included."""
        return max(self.train_resolutions + (self.train.resolutions if self.train else ()))


@dataclass(frozen=True)
class Plan:
    """A validated suite, bound to its dataset and device, with every model resolved."""

    cfg: SuiteConfig
    device: torch.device
    dataset: ImageDataset
    models: tuple[ModelPlan, ...]  # in the suite's order; per model, one per training seed it depends on
    sample: SampleSettings
    reference_n: int  # real images per resolution the metrics compare against

    def model(self, name: str, train_seed: Optional[int] = None) -> ModelPlan:
        """The model called `name` (trained with `train_seed`, where it has one)."""
        return next(m for m in self.models if m.name == name and m.train_seed in (train_seed, None))

    @property
    def train_seeds(self) -> list[int]:
        return self.cfg.train_seeds


def dataset_options(cfg: SuiteConfig) -> dict:
    """build_dataset keyword arguments from the suite's `dataset:` section."""
    d = cfg.dataset
    if d.kind == "toyfaces":
        return {"size": d.size or 10000, "seed": d.seed}
    if d.kind == "prepared":
        return {"name": d.name, "root": d.root, "source": d.source, "filter": d.filter}
    if d.kind == "grf":
        return grf.options_from_config(d)
    if d.kind == "openmoji":
        return openmoji.options_from_config(d)
    return {"path": d.path, "filter": d.filter or RESIZE_FILTER}


def data_resolutions(cfg: SuiteConfig) -> list[int]:
    """Resolutions the suite reads from its dataset: training sets, bilinear bases, FID references.

    A fine-tune's target resolution is not here: it is made by upsampling
    `finetune.upsample_from` images, which are.
    """
    needed = set(cfg.sample.resolutions)
    for i, m in enumerate(cfg.models):
        if m.train is not None:
            needed.update(m.train.resolutions)
        if m.source == "data" and m.base_resolution is not None:
            needed.add(m.base_resolution)
        if m.finetune is not None and m.finetune.upsample_from is not None:
            needed.add(m.finetune.upsample_from)
        if m.finetune is not None and _bases_come_first(cfg, i):  # a fine-tune trains on its base's
            needed.update(_real_resolutions(cfg, m))                  # resolutions (a pretrained base's too)
    return sorted(needed)


def plan_suite(cfg: SuiteConfig) -> Plan:
    """Check everything that can be checked without training, then resolve every model.

    Raises BenchError with one line per problem."""
    dataset = build_dataset(cfg.dataset.kind, **dataset_options(cfg))
    if hasattr(dataset, "validate"):
        dataset.validate(data_resolutions(cfg))  # missing data fails here, in well under a second
    device = pick_device(cfg.device, "device")
    problems: list[str] = []
    rn = cfg.metrics.reference_n
    if isinstance(rn, int) and rn > len(dataset):
        problems.append(f"metrics.reference_n: {rn} is more than the {len(dataset)} images of the dataset; "
                        "lower it or use all")
    adapters: dict[str, Adapter] = {}
    for i in range(len(cfg.models)):
        problems += _model_problems(cfg, i, device, adapters)
    world = rank_info()[1]
    for i, m in enumerate(cfg.models):
        if m.train is not None and m.train.batch_size < world:
            problems.append(f"models.{i} ({m.name}).train.batch_size: {m.train.batch_size} is smaller than the "
                            f"{world} processes; raise it or run fewer processes")
    if cfg.runtime.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        problems.append(f"runtime.precision: bf16 is not supported on {torch.cuda.get_device_name(device)}; "
                        "use fp32")
    exact = [m.name for m in select(cfg.metrics.metrics) if m.exact]
    if exact and not callable(getattr(dataset, "exact_scores", None)):
        problems.append(f"metrics.metrics: {', '.join(exact)} scores against a dataset's exact answer, which "
                        f"the {cfg.dataset.kind} dataset does not have; use kind: grf or remove it")
    if problems:
        raise BenchError("\n".join(problems))
    if cfg.metrics.inception_path:  # a known file, or one trusted with --trust-inception
        check_explicit(cfg.metrics.inception_path, "metrics.inception_path")
    resolve(cfg.metrics.inception_path)  # fail now, not after training

    s = cfg.sample
    sample = SampleSettings(tuple(s.resolutions), s.n, tuple(s.seeds), s.steps, s.batch_size)
    models = []
    for m in cfg.models:
        if cfg.seeds is None or not _seeded(cfg, m):
            models.append(_resolve(cfg, m, adapters[m.name], len(dataset), sample, None, cfg.seed))
            continue
        for t in cfg.seeds:
            adapter = adapters[m.name] if t == cfg.seeds[0] and t == cfg.seed else \
                _build(cfg, m, ADAPTERS[m.adapter], device, t)
            models.append(_resolve(cfg, m, adapter, len(dataset), sample, t, t))
    models = tuple(models)
    reference_n = min(s.n, len(dataset)) if rn is None else (len(dataset) if rn == "all" else rn)
    return Plan(cfg, device, dataset, models, sample, reference_n)


# ------------------------------------------------------------------------- checks


def _model_problems(cfg: SuiteConfig, i: int, device: torch.device, adapters: dict[str, Adapter]) -> list[str]:
    """Problems of model i; its adapter goes into `adapters` when it can be built."""
    m, where = cfg.models[i], f"models.{i} ({cfg.models[i].name})"
    cls = ADAPTERS.get(m.adapter)
    if cls is None:
        return [f"{where}.adapter: unknown model {m.adapter!r}; known: {', '.join(sorted(ADAPTERS))}"]
    problems = []
    if m.checkpoint is not None:
        if not cls.trainable:
            return [f"{where}.checkpoint: {m.adapter} has no network to load; remove checkpoint"]
        adapter, problems = _pretrained(cfg, m, device, where)
        if adapter is None:
            return problems
    elif cls.trainable and m.train is None:
        return [f"{where}.train: {m.adapter} needs a train section (resolutions, steps) or a checkpoint "
                "(a pretrained network)"]
    if not cls.trainable and m.train is not None:
        problems.append(f"{where}.train: {m.adapter} is not trained; remove the train section")
    if cls.uses_source:
        problems += _source_problems(cfg, i)
    elif m.source or m.base_resolution:
        takers = sorted(name for name, c in ADAPTERS.items() if c.uses_source)
        problems.append(f"{where}: source/base_resolution only apply to {', '.join(takers)}; remove them")
    try:
        if m.checkpoint is None:
            adapter = _build(cfg, m, cls, device)
    except (KeyError, ValueError, TypeError) as exc:
        return problems + [f"{where}.arch: {str(exc).strip(chr(39))}"]
    if getattr(adapter, "role", None) not in ROLES:
        return problems + [f"{where}.adapter: {m.adapter} declares role {getattr(adapter, 'role', None)!r}, not one "
                           f"of {', '.join(ROLES)}; fix the adapter class"]
    if m.train is not None:
        if m.finetune is not None:
            problems += _finetune_problems(cfg, i, adapter, adapters)
        if m.train.augment and adapter.augment_dim != LABEL_DIM:
            problems.append(f"{where}.arch_overrides.augment_dim: train.augment needs the {LABEL_DIM}-dim "
                            f"augmentation label embedding, not {adapter.augment_dim}; remove the override")
    trained = set(m.train.resolutions) if m.train is not None else set()
    for r in sorted(trained | set(cfg.sample.resolutions)):
        p = adapter.resolution_problem(r)
        if p:
            key = "train.resolutions" if r in trained else "sample.resolutions"
            problems.append(f"{where}.{key}: {p}")
    adapters[m.name] = adapter
    return problems


def _pretrained(cfg: SuiteConfig, m: ModelConfig, device: torch.device,
                where: str) -> tuple[Optional[Adapter], list[str]]:
    """(adapter with the checkpoint's weights, problems) of a `checkpoint:` model; adapter None when
    the checkpoint cannot be used at all. Its training resolutions: the metadata's, or trained_on."""
    if m.arch_overrides:
        return None, [f"{where}.arch_overrides: a checkpoint's network is the one its metadata records; "
                      "remove arch_overrides"]
    rt = cfg.runtime
    try:
        adapter = load_model(m.checkpoint, device, adapter=m.adapter, sample_steps=cfg.sample.steps,
                             precision=rt.precision, compile_backend=rt.compile_backend if rt.compile else None)
    except BenchError as exc:
        return None, [f"{where}.checkpoint: {exc}"]
    problems = []
    if m.arch is not None:
        try:
            named = get_arch(m.arch, mode=adapter.arch.mode).to_dict()
        except ValueError as exc:
            return None, [f"{where}.arch: {str(exc).strip(chr(39))}"]
        differ = [k for k, v in adapter.arch.to_dict().items() if k != "dropout" and named.get(k) != v]
        if differ:
            problems.append(f"{where}.arch: the checkpoint's network is not {m.arch} (it differs in "
                            f"{', '.join(differ[:4])}); remove arch: a checkpoint records its architecture")
    recorded = tuple(adapter.train_resolutions)
    if m.trained_on is not None and recorded and tuple(m.trained_on) != recorded:
        problems.append(f"{where}.trained_on: {list(m.trained_on)} contradicts the {list(recorded)} the checkpoint "
                        "records; remove trained_on")
    elif m.trained_on is None and not recorded:
        problems.append(f"{where}.trained_on: {m.checkpoint} does not record the resolutions its network was "
                        "trained on; give them, e.g. trained_on: [32, 64]")
    adapter.train_resolutions = tuple(m.trained_on or recorded)
    return adapter, problems


def _build(cfg: SuiteConfig, m: ModelConfig, cls: type, device: torch.device, seed: Optional[int] = None) -> Adapter:
    """The model's adapter; its initial weights depend on the seed (default: the suite's) and the model's name only.
    A fine-tune of a pretrained network with no arch of its own takes the checkpoint's."""
    overrides = dict(m.arch_overrides)
    arch = m.arch
    root = _pretrained_root(cfg, m)
    if arch is None and root is not None and arch_of(root.checkpoint) is not None:
        arch = arch_of(root.checkpoint)
        overrides.setdefault("mode", arch.mode)
    if m.train is not None and m.train.dropout is not None:
        overrides["dropout"] = m.train.dropout
    if _augmented(cfg, m):  # EDM's pipe conditions the network on its augmentation labels
        overrides.setdefault("augment_dim", LABEL_DIM)
    torch.manual_seed(zlib.crc32(f"{cfg.seed if seed is None else seed}:{m.name}".encode()))
    rt = cfg.runtime
    return cls.build(Setup(arch=arch, arch_overrides=overrides, device=device, sample_steps=cfg.sample.steps,
                           precision=rt.precision, compile_backend=rt.compile_backend if rt.compile else None,
                           source=m.source, base_resolution=m.base_resolution))


def _source_problems(cfg: SuiteConfig, i: int) -> list[str]:
    """A model that resizes another's images needs a source listed before it and one of its resolutions."""
    m, where = cfg.models[i], f"models.{i} ({cfg.models[i].name})"
    names = [b.name for b in cfg.models[:i]]
    if m.base_resolution is None or m.source is None:
        return [f"{where}: {m.adapter} needs source (a model name or 'data') and base_resolution"]
    if m.source != "data" and m.source not in names:
        return [f"{where}.source: {m.source!r} is not a model listed before it (or 'data')"]
    if m.source != "data" and m.base_resolution not in _real_resolutions(cfg, _named(cfg, m.source)):
        return [f"{where}.base_resolution: {m.base_resolution} is not a training resolution of {m.source}"]
    return []


def _finetune_problems(cfg: SuiteConfig, i: int, adapter: Adapter, adapters: dict[str, Adapter]) -> list[str]:
    """A fine-tune must start from a trainable model listed before it with the same network."""
    m = cfg.models[i]
    ft, where = m.finetune, f"models.{i} ({m.name}).finetune"
    before = {b.name: b for b in cfg.models[:i]}
    base = before.get(ft.base)
    if base is None:
        return [f"{where}.base: {ft.base!r} is not a model listed before {m.name}"]
    if base.train is None and base.checkpoint is None:
        trainable = " or ".join(sorted(name for name, c in ADAPTERS.items() if c.trainable))
        return [f"{where}.base: {ft.base!r} is not trained (adapter {base.adapter}); name a {trainable} model "
                "(trained here or from a checkpoint)"]
    if ft.base not in adapters:
        return []  # the base's own problems are reported already
    if not adapter.same_network(adapters[ft.base]):
        return [f"{where}.base: {ft.base!r} has another adapter or architecture; a fine-tune continues "
                "the same network, so copy its adapter, arch and arch_overrides"]
    problems = []
    base_res = list(_real_resolutions(cfg, base))
    src = _upsample_source(cfg, m)
    if src not in base_res:
        problems.append(f"{where}.upsample_from: {src} is not a training resolution of {ft.base} ({base_res})")
    if ft.target_resolution in base_res:
        problems.append(f"{where}.target_resolution: {ft.target_resolution} is already a training resolution "
                        f"of {ft.base}; pick a higher one")
    p = adapter.resolution_problem(ft.target_resolution)
    if p:
        problems.append(f"{where}.target_resolution: {p}")
    t = m.train
    if t.weights is not None and len(t.weights) != len(base_res):
        problems.append(f"models.{i} ({m.name}).train.weights: give one weight per base resolution {base_res}")
    stray = sorted(set(t.micro_batch) - set(base_res) - {ft.target_resolution})
    if stray:
        problems.append(f"models.{i} ({m.name}).train.micro_batch: {stray} are not training resolutions")
    try:
        adapter.frozen_parameters(ft.strategy, ft.freeze)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
    return problems


# ------------------------------------------------------------------ resolution


def _seeded(cfg: SuiteConfig, m: ModelConfig) -> bool:
    """Whether a training seed touches the model: trained, or resizing a trained model's samples."""
    if m.train is not None:
        return True
    cls = ADAPTERS.get(m.adapter)
    return bool(cls is not None and cls.uses_source and m.source not in (None, "data")
                and _seeded(cfg, _named(cfg, m.source)))


def _resolve(cfg: SuiteConfig, m: ModelConfig, adapter: Adapter, dataset_size: int,
             sample: SampleSettings, train_seed: Optional[int], seed: int) -> ModelPlan:
    return ModelPlan(
        name=m.name, config=m, adapter=adapter, role=adapter.role,
        train_resolutions=_real_resolutions(cfg, m),
        train=_train_settings(cfg, m, adapter, dataset_size, seed) if m.train is not None else None,
        finetune_base=m.finetune.base if m.finetune is not None else None,
        source=m.source if type(adapter).uses_source else None,
        base_resolution=m.base_resolution if type(adapter).uses_source else None,
        sample=sample, train_seed=train_seed, key=model_key(m.name, train_seed), checkpoint=m.checkpoint)


def _named(cfg: SuiteConfig, name: str) -> ModelConfig:
    return next(m for m in cfg.models if m.name == name)


def _real_resolutions(cfg: SuiteConfig, m: ModelConfig) -> tuple[int, ...]:
    """Resolutions of real data a model learned from (see ModelPlan.train_resolutions)."""
    if m.checkpoint is not None:  # () when neither says: reported by _pretrained
        return tuple(m.trained_on) if m.trained_on else recorded_resolutions(m.checkpoint)
    if m.finetune is not None:
        return _real_resolutions(cfg, _named(cfg, m.finetune.base))
    if m.train is not None:
        return tuple(m.train.resolutions)
    cls = ADAPTERS.get(m.adapter)
    if cls is not None and cls.uses_source:
        return _real_resolutions(cfg, _named(cfg, m.source)) if m.source != "data" else (m.base_resolution,)
    return ()


def _bases_come_first(cfg: SuiteConfig, i: int) -> bool:
    """Each base in model i's fine-tune chain is listed before the model that names it (checked, with a
    message, by _finetune_problems; until then nothing may follow the chain)."""
    index = {b.name: k for k, b in enumerate(cfg.models)}
    while cfg.models[i].finetune is not None:
        k = index.get(cfg.models[i].finetune.base)
        if k is None or k >= i:
            return False
        i = k
    return True


def _pretrained_root(cfg: SuiteConfig, m: ModelConfig) -> Optional[ModelConfig]:
    """The pretrained model a fine-tune (or a fine-tune's fine-tune) starts from, if any."""
    seen = set()
    while m.finetune is not None and m.name not in seen:
        seen.add(m.name)
        m = next((b for b in cfg.models if b.name == m.finetune.base), None)
        if m is None:
            return None
    return m if m.checkpoint is not None else None


def _upsample_source(cfg: SuiteConfig, m: ModelConfig) -> int:
    """The resolution whose data a fine-tune upsamples to its target."""
    return m.finetune.upsample_from or max(_real_resolutions(cfg, _named(cfg, m.finetune.base)))


def _augmented(cfg: SuiteConfig, m: ModelConfig) -> bool:
    """Trained with augmentation, or fine-tuning a model that was (same network)."""
    if m.train is not None and m.train.augment:
        return True
    before = cfg.models[:cfg.models.index(m)]  # a base must come first (checked elsewhere); no cycles
    base = next((b for b in before if m.finetune is not None and b.name == m.finetune.base), None)
    return base is not None and _augmented(cfg, base)


def _base_augment(cfg: SuiteConfig, m: ModelConfig) -> Optional[float]:
    """The augmentation probability a fine-tune inherits: its base's (or the base's base's)."""
    while m.finetune is not None:
        m = _named(cfg, m.finetune.base)
        if m.train is not None and m.train.augment:
            return m.train.augment
    return None


def _train_settings(cfg: SuiteConfig, m: ModelConfig, adapter: Adapter, dataset_size: int,
                    suite_seed: int) -> TrainSettings:
    """The TrainSettings of a model's training (or fine-tuning) run under the suite seed `suite_seed`."""
    t, ft = m.train, m.finetune
    resolutions, weights, seed = list(t.resolutions), t.weights, suite_seed
    schedule = t.schedule or ("weighted" if weights else "round-robin")
    upsampled, frozen = None, ()
    ema_rampup, augment = t.ema_rampup, t.augment
    if ft is not None:
        base_res = list(_real_resolutions(cfg, _named(cfg, ft.base)))
        if ft.strategy == "spectral-only":  # the authors' --finetune_spectral: all data at the target
            resolutions, weights = [ft.target_resolution], None
            schedule = t.schedule or "round-robin"
        else:
            share = list(weights) if weights else [1.0] * len(base_res)
            weights = [w / sum(share) * (1 - ft.target_weight) for w in share] + [ft.target_weight]
            resolutions = base_res + [ft.target_resolution]
            schedule = t.schedule or "weighted"
        upsampled = ((ft.target_resolution, _upsample_source(cfg, m)),)
        frozen = adapter.frozen_parameters(ft.strategy, ft.freeze)
        seed = zlib.crc32(f"{suite_seed}:finetune:{m.name}".encode())  # other draws than the base's
        # a transfer start: the EMA continues the base's EMA without a ramp-up, and the
        # augmentation is the base's, unless the suite says otherwise
        if "ema_rampup" not in t.model_fields_set:
            ema_rampup = None
        if "augment" not in t.model_fields_set:
            augment = _base_augment(cfg, m)
    rt = cfg.runtime
    return TrainSettings(resolutions=tuple(resolutions), steps=t.total_steps, batch_size=t.batch_size,
                         lr=t.lr, dataset_size=dataset_size, weights=tuple(weights) if weights else None,
                         schedule=schedule, lr_warmup_nimg=t.warmup_nimg, ema_halflife_kimg=t.ema_halflife_kimg,
                         ema_rampup=ema_rampup, checkpoint_every=t.checkpoint_steps, seed=seed,
                         data_warmup_kimg=t.data_warmup_kimg,
                         data_warmup_max_resolution=t.data_warmup_max_resolution,
                         micro_batch=tuple(sorted(t.micro_batch.items())) or None,
                         upsampled=upsampled, frozen=frozen, augment=augment, precision=rt.precision,
                         compile_backend=rt.compile_backend if rt.compile else None)
