"""`--scale tiny`: the same suite, shrunk until every stage runs on a CPU in minutes.

cpu-tiny networks, a few training steps, 8 samples per resolution with 3 Heun
steps and one seed set, references capped at the samples; the resolution grid
and the data stay as they are, so a dry run exercises every stage and resolution
of the real suite. Works on the dumped suite, so fields added to TrainConfig
later pass through unless listed below, and validates the result again.
"""
from __future__ import annotations

from bench.config import SuiteConfig, parse_suite
from bench.errors import BenchError

SCALES = ("full", "tiny")
TINY = {"steps": 6, "batch_size": 4, "lr_warmup_steps": 2, "checkpoint_every": 3,
        "sample_n": 8, "sample_steps": 3, "batch": 8}
# Training keys that hold durations in images, per-resolution memory caps or a
# data warm-up: meaningless for a six-step run, so they go back to their defaults.
_TINY_DROPPED_TRAIN_KEYS = ("kimg", "lr_warmup_kimg", "checkpoint_every_kimg", "micro_batch",
                            "data_warmup_kimg", "data_warmup_max_resolution")
# arch_overrides that do not change cpu-tiny's shape; the rest (channels,
# levels, modes) were written for the full architecture and may not fit it.
_TINY_KEPT_OVERRIDES = ("dropout", "mode", "fft_norm")


def scale_suite(cfg: SuiteConfig, scale: str) -> SuiteConfig:
    """`full`: cfg unchanged; `tiny`: a CPU dry run of the same suite and resolution grid."""
    if scale not in SCALES:
        raise BenchError(f"--scale {scale!r} is not known; use one of: {', '.join(SCALES)}")
    if scale == "full":
        return cfg
    data = cfg.model_dump()
    if not data["name"].endswith("-tiny"):
        data["name"] += "-tiny"  # tiny results never land beside full ones
    pretrained = set()  # pretrained networks, and fine-tunes that continue one: their network stays
    for m in data["models"]:
        train = m.get("train")
        if m.get("checkpoint") is not None or (m.get("finetune") or {}).get("base") in pretrained:
            pretrained.add(m["name"])
        elif not (train is None and m.get("arch") is None):  # (bilinear: nothing to shrink)
            m["arch"] = "cpu-tiny"
            m["arch_overrides"] = {k: v for k, v in (m.get("arch_overrides") or {}).items()
                                   if k in _TINY_KEPT_OVERRIDES}
        if train is not None:
            warmup = bool(train.get("lr_warmup_steps") or train.get("lr_warmup_kimg"))
            for key in _TINY_DROPPED_TRAIN_KEYS:
                train.pop(key, None)
            train.update(steps=TINY["steps"], batch_size=TINY["batch_size"],
                         lr_warmup_steps=TINY["lr_warmup_steps"] if warmup else 0,
                         checkpoint_every=TINY["checkpoint_every"])
    data["sample"].update(n=TINY["sample_n"], steps=TINY["sample_steps"], seeds=data["sample"]["seeds"][:1],
                          batch_size=min(data["sample"]["batch_size"], TINY["batch"]))
    data["metrics"]["batch_size"] = min(data["metrics"]["batch_size"], TINY["batch"])
    if data["metrics"].get("reference_n") is not None:
        # `all` on FFHQ is 70,000 images per resolution and mode: hours of Inception on a
        # CPU. A dry run streams as many as it samples, through the same streamed path.
        data["metrics"]["reference_n"] = TINY["sample_n"]
    return parse_suite(data, f"{cfg.name} at --scale tiny")
