"""Weights from the authors' code (Dahoas/edm) into dfu-bench networks, and back out.

The authors' `EDMPrecond` wraps their `DualUNet` as `.model`; its `state_dict()`
keys (`model.map_layer0.weight`, `model.enc.0_conv.spatial_conv.weight`,
`model.enc.1_down.conv0.spectral_conv.weights1`, `model.dec.3_in0.qkv.weight`,
...) are the keys of our `EDMPrecond(DualUNet(arch))`, because our modules are
named and nested as theirs are. Conversion is therefore a strict check (every
key present, none extra, every shape equal) plus a cast to float32; what it
cannot check, the architecture hyper-parameters, comes from the ArchConfig the
caller names.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from models.edm import EDMPrecond
from models.networks import ArchConfig, DualUNet


def from_authors_state_dict(state: Mapping[str, torch.Tensor], arch: ArchConfig) -> EDMPrecond:
    """An eval-mode EDMPrecond with the authors' weights; ValueError names any mismatch."""
    net = EDMPrecond(DualUNet(arch)).eval()
    ours = net.state_dict()
    missing = sorted(set(ours) - set(state))
    extra = sorted(set(state) - set(ours))
    shapes = sorted(k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes)):
        if keys:
            problems.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
    if problems:
        raise ValueError("state dict does not fit the architecture: " + "; ".join(problems))
    net.load_state_dict({k: torch.as_tensor(v).to(torch.float32) for k, v in state.items()}, strict=True)
    return net


def load(path: str | Path, device: torch.device | str = "cpu") -> EDMPrecond:
    """The preconditioned denoiser D(x; sigma) written by `bench import-checkpoint` (eval mode)."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    net = EDMPrecond(DualUNet(ArchConfig.from_checkpoint(meta["arch_config"])))
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.to(device).eval()
