"""The Dual-FNO UNet (DFU) and its architecture configs.

``DualUNet`` is EDM's DDPM++ UNet ("SongUNet") in which every 3x3 conv is a
``DualConv``: spatial only (a plain UNet), spectral only (an FNO-UNet) or both
(DFU), chosen per level. Layout, module names and parameter counts follow the
authors' code (repo Dahoas/edm, ``training/networks.py``); paper-small builds
630,574,979 parameters as DFU and 61,804,419 as a UNet (+1,152 with the 9-dim
augmentation embedding), exactly as their training logs print.

Which convs are spectral (mode 'dual'): a level is *dual* when
``level <= dual_block_thresh`` (authors' name and semantics; -1 = none). At a
dual level the input conv, every encoder block (including the downsampling
block that enters the level), the bottleneck blocks and the decoder blocks and
output conv are dual, all with that level's modes. A decoder upsampling block
that enters level l works on level l+1's grid first, so it uses level l+1's
modes and is dual only when level l+1 is. Skip 1x1 convs and attention qkv/proj
are always spatial. Mode 'spectral' makes every 3x3 conv spectral-only (needs
modes at every level); mode 'spatial' ignores the modes.

Resolution rule (``resolution_problem``): level l runs at the grid size obtained
by floor-halving the input l times (odd sizes floor, as the [1,1] box filter
does; the decoder upsamples to the exact recorded size, so e.g. 196 -> 98 -> 49
-> 24 -> 49 -> 98 -> 196 works, as in the authors' LSUN 196 evaluation). The
coarsest grid must be at least 1 pixel, and every spectral level l with modes
(m1, m2) needs its grid R_l to satisfy R_l >= 2*m1 (the two kept row bands must
not overlap) and R_l//2 + 1 >= m2 (enough rfft columns). ``strict=True`` also
demands R divisible by 2**(levels-1), i.e. a clean 2x pyramid with no row or
column dropped by an odd downsampling step.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.functional import silu

from models.layers import (
    CONV_MODES,
    FFT_NORMS,
    SPECTRAL_PRODUCTS,
    DualConv,
    DualUNetBlock,
    GroupNorm,
    Linear,
    PositionalEmbedding,
    SpectralConv2d,
    spectral_size_problem,
)

# ----------------------------------------------------------------------------
# Architecture config.


@dataclass(frozen=True)
class ArchConfig:
    """Everything that determines the network's structure (not its training).

    Per-level tuples (``channel_mult``, ``modes1``, ``modes2``) are indexed by level,
    0 = full resolution. ``modes1[l]``/``modes2[l]`` may be None at levels that are
    never spectral. Mode names map to the authors' as spatial='def',
    spectral='fourier', dual='dual'.
    """

    img_channels: int = 3
    label_dim: int = 0                      # number of classes, 0 = unconditional
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    channel_mult_emb: int = 4               # embedding width = model_channels * this
    channel_mult_noise: int = 1             # noise embedding width = model_channels * this
    num_blocks: int = 4                     # encoder blocks per level (decoder has one more)
    attn_levels: tuple[int, ...] = (2,)
    modes1: tuple[int | None, ...] = (16, 8, 4, None)
    modes2: tuple[int | None, ...] = (9, 5, 3, None)
    dual_block_thresh: int = 2              # levels <= this are dual in mode 'dual'
    mode: str = "dual"                      # 'spatial' | 'spectral' | 'dual'
    dropout: float = 0.13
    label_dropout: float = 0.0
    augment_dim: int = 0                    # EDM augmentation-label size, 0 = none (9 with EDM's pipe)
    resample_filter: tuple[int, ...] = (1, 1)
    fft_norm: str = "backward"              # torch.fft norm; 'backward' is the authors'
    spectral_product: str = "componentwise"  # the authors' channel mixing; 'complex' for ablations

    def __post_init__(self):
        # Accept lists (e.g. from JSON) but store tuples so the config stays hashable.
        for name in ("channel_mult", "attn_levels", "modes1", "modes2", "resample_filter"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"ArchConfig.{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        n = len(self.channel_mult)
        if n < 1:
            raise ValueError("ArchConfig.channel_mult needs at least one level")
        if self.mode not in CONV_MODES:
            raise ValueError(f"ArchConfig.mode {self.mode!r} unknown; use one of {CONV_MODES}")
        if self.fft_norm not in FFT_NORMS:
            raise ValueError(f"ArchConfig.fft_norm {self.fft_norm!r} unknown; use one of {FFT_NORMS}")
        if self.spectral_product not in SPECTRAL_PRODUCTS:
            raise ValueError(f"ArchConfig.spectral_product {self.spectral_product!r} unknown; "
                             f"use one of {SPECTRAL_PRODUCTS}")
        if len(self.modes1) != n or len(self.modes2) != n:
            raise ValueError(f"ArchConfig.modes1/modes2 need one entry per level ({n}), "
                             f"got {len(self.modes1)} and {len(self.modes2)}")
        bad = [lv for lv in self.attn_levels if not 0 <= lv < n]
        if bad:
            raise ValueError(f"ArchConfig.attn_levels {bad} outside levels 0..{n - 1}")
        for lv in self.spectral_levels():
            m1, m2 = self.modes1[lv], self.modes2[lv]
            if m1 is None or m2 is None or m1 < 1 or m2 < 1:
                raise ValueError(f"level {lv} is spectral in mode {self.mode!r} but has modes1={m1}, "
                                 f"modes2={m2}; give positive modes or lower dual_block_thresh")
        if min(self.model_channels, self.num_blocks + 1, self.img_channels) < 1:
            raise ValueError("ArchConfig.model_channels and img_channels must be >= 1, num_blocks >= 0")
        # sizes far above any trainable network, so that a typo is refused before it is allocated
        for name, value, top in (("model_channels", self.model_channels, 4096), ("img_channels", self.img_channels, 64),
                                 ("num_blocks", self.num_blocks, 64), ("label_dim", self.label_dim, 100_000),
                                 ("channel_mult_emb", self.channel_mult_emb, 64),
                                 ("channel_mult_noise", self.channel_mult_noise, 64),
                                 ("augment_dim", self.augment_dim, 1024),
                                 ("levels (len(channel_mult))", len(self.channel_mult), 16)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise ValueError(f"ArchConfig.{name} {value!r} is out of range; use an integer from 0 to {top}")
        for name, values, top in (("channel_mult", self.channel_mult, 64), ("modes1", self.modes1, 1024),
                                  ("modes2", self.modes2, 1024), ("resample_filter", self.resample_filter, 1024)):
            bad = [v for v in values if v is not None and (not isinstance(v, int) or isinstance(v, bool)
                                                           or not 0 <= v <= top)]
            if bad:
                raise ValueError(f"ArchConfig.{name} {bad[0]!r} is out of range; use integers from 0 to {top}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1
                and isinstance(self.label_dropout, (int, float)) and 0 <= self.label_dropout < 1):
            raise ValueError(f"ArchConfig.dropout {self.dropout!r} / label_dropout {self.label_dropout!r}: "
                             "use numbers in [0, 1)")

    # --- structure queries ---------------------------------------------------

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    def level_mode(self, level: int) -> str:
        """Conv mode of the 3x3 convs that use ``level``'s modes."""
        if self.mode == "dual":
            return "dual" if level <= self.dual_block_thresh else "spatial"
        return self.mode

    def spectral_levels(self) -> tuple[int, ...]:
        """Levels whose convs carry a spectral branch."""
        return tuple(lv for lv in range(self.num_levels) if self.level_mode(lv) != "spatial")

    # --- serialisation -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists)."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ArchConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any]) -> "ArchConfig":
        """The config recorded in a checkpoint's metadata.

        Checkpoints written before ``spectral_product`` existed were computed with
        the complex product (the only one then), so a missing key means 'complex'.
        """
        return cls.from_dict({"spectral_product": "complex", **data})

    def replace(self, **changes: Any) -> "ArchConfig":
        """Copy with some fields changed (unknown names raise ValueError)."""
        return type(self).from_dict({**self.to_dict(), **changes})


ARCHS: dict[str, ArchConfig] = {
    # Authors' FFHQ / LSUN-Church "small" model (model_configs/small_ffhq.yml), trained
    # with EDM's augmentation pipe, hence the 9-dim augmentation-label embedding.
    "paper-small": ArchConfig(
        model_channels=128, channel_mult=(1, 2, 2, 2), num_blocks=4, attn_levels=(2,),
        modes1=(16, 8, 4, None), modes2=(9, 5, 3, None), dual_block_thresh=2, mode="dual",
        dropout=0.13, augment_dim=9,
    ),
    # Authors' "large" model (FFHQ 96-160); 2,248,364,035 parameters with augment_dim=9.
    "paper-large": ArchConfig(
        model_channels=128, channel_mult=(1, 2, 2, 2, 2, 2), num_blocks=4, attn_levels=(4,),
        modes1=(32, 16, 8, 4, None, None), modes2=(17, 9, 5, 3, None, None), dual_block_thresh=3,
        mode="dual", dropout=0.13, augment_dim=9,
    ),
    # Seconds-scale model for unit tests, paper-small's shape in miniature (coarsest
    # level spatial in 'dual'; it has modes so that 'spectral' works too). Attention
    # only at the coarsest level keeps large resolutions cheap. Runs at any size >= 16.
    "cpu-tiny": ArchConfig(
        model_channels=16, channel_mult=(1, 2, 2, 2), num_blocks=1, attn_levels=(3,),
        modes1=(8, 4, 2, 1), modes2=(5, 3, 2, 1), dual_block_thresh=2, mode="dual", dropout=0.0,
    ),
    # Paper-small's shape scaled down for a ~10-minute CPU run at 16-64.
    "cpu-small": ArchConfig(
        model_channels=32, channel_mult=(1, 2, 2, 2), num_blocks=2, attn_levels=(2,),
        modes1=(8, 4, 2, None), modes2=(5, 3, 2, None), dual_block_thresh=2, mode="dual", dropout=0.0,
    ),
}


def get_arch(name_or_cfg: str | ArchConfig, **overrides: Any) -> ArchConfig:
    """Look up a named architecture (or take a config) and apply overrides."""
    if isinstance(name_or_cfg, ArchConfig):
        cfg = name_or_cfg
    elif name_or_cfg in ARCHS:
        cfg = ARCHS[name_or_cfg]
    else:
        raise ValueError(f"unknown architecture {name_or_cfg!r}; choose one of {sorted(ARCHS)}")
    return cfg.replace(**overrides) if overrides else cfg


# ----------------------------------------------------------------------------
# Which resolutions a config can run at.


def level_sizes(arch: ArchConfig, size: tuple[int, int]) -> list[tuple[int, int]]:
    """Grid size at every level: floor-halving per downsampling step."""
    sizes = [tuple(size)]
    for _ in range(arch.num_levels - 1):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


def _size_problem(arch: ArchConfig, size: tuple[int, int], strict: bool) -> str | None:
    """Terse reason why ``size`` cannot run, or None; shared by forward and resolution_problem."""
    factor = 2 ** (arch.num_levels - 1)
    if min(size) < factor:
        return f"it is smaller than {factor}, the {arch.num_levels - 1}-times-halved coarsest level would be empty"
    if strict and (size[0] % factor or size[1] % factor):
        return f"it is not divisible by {factor} ({arch.num_levels - 1} downsampling steps)"
    sizes = level_sizes(arch, size)
    for lv in arch.spectral_levels():
        m1, m2 = arch.modes1[lv], arch.modes2[lv]
        problem = spectral_size_problem(sizes[lv], m1, m2)
        if problem:
            h, w = sizes[lv]
            return f"level {lv} runs at {h}x{w}, too coarse for its spectral modes ({m1}, {m2}): {problem}"
    return None


def min_resolution(arch: ArchConfig | str, strict: bool = False) -> int:
    """Smallest square resolution the architecture accepts."""
    arch = get_arch(arch)
    factor = 2 ** (arch.num_levels - 1)
    # Lower bound from the modes, then step up: floor-halving makes a closed form awkward.
    need = [2 ** lv * max(2 * arch.modes1[lv], 2 * arch.modes2[lv] - 2) for lv in arch.spectral_levels()]
    r = max([factor, *need])
    while _size_problem(arch, (r, r), strict):
        r += 1
    return r


def resolution_problem(arch: ArchConfig | str, resolution: int, strict: bool = False) -> str | None:
    """None if the network runs at ``resolution`` x ``resolution``, else a one-line reason and fix."""
    name = arch if isinstance(arch, str) else "this architecture"
    cfg = get_arch(arch)
    if not isinstance(resolution, numbers.Integral) or isinstance(resolution, bool) or resolution < 1:
        return f"resolution {resolution!r} must be a positive integer"
    resolution = int(resolution)
    problem = _size_problem(cfg, (resolution, resolution), strict)
    if problem is None:
        return None
    lo = min_resolution(cfg, strict)
    loose = _size_problem(cfg, (resolution, resolution), strict=False)
    if resolution < lo and loose:
        return f"resolution {resolution} is too small for {name}: {loose}; use at least {lo}"
    factor = 2 ** (cfg.num_levels - 1)
    down = resolution // factor * factor
    up = down + factor
    suggestion = f"{down} or {up}" if down >= lo else f"{up}"
    return (f"resolution {resolution} is not divisible by {factor} ({name} downsamples "
            f"{cfg.num_levels - 1} times); use a multiple of {factor} such as {suggestion}")


def valid_resolutions(arch: ArchConfig | str, lo: int, hi: int, strict: bool = False) -> list[int]:
    """All square resolutions in [lo, hi] the architecture accepts."""
    cfg = get_arch(arch)
    return [r for r in range(max(lo, 1), hi + 1) if _size_problem(cfg, (r, r), strict) is None]


# ----------------------------------------------------------------------------
# The network.


class DualUNet(nn.Module):
    """DDPM++ UNet with dual (spatial + spectral) convolutions; F_theta in EDM's notation.

    ``forward(x, noise_labels, class_labels=None, augment_labels=None)`` takes
    images (B, C, H, W) at any size ``resolution_problem`` accepts and noise
    labels (B,) (EDM's c_noise) and returns (B, C, H, W).
    """

    def __init__(self, arch: ArchConfig | str):
        super().__init__()
        arch = get_arch(arch)
        self.arch = arch
        self.img_channels = arch.img_channels
        self.label_dim = arch.label_dim
        self.label_dropout = arch.label_dropout
        emb_channels = arch.model_channels * arch.channel_mult_emb
        noise_channels = arch.model_channels * arch.channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        block_kwargs = dict(emb_channels=emb_channels, num_heads=1, dropout=arch.dropout,
                            skip_scale=math.sqrt(0.5), eps=1e-6, resample_filter=arch.resample_filter,
                            resample_proj=True, init=init, init_zero=init_zero, init_attn=init_attn,
                            fft_norm=arch.fft_norm, spectral_product=arch.spectral_product)

        def spectral(level: int) -> dict:
            # The conv mode and modes a block built "at" this level uses.
            return dict(mode=arch.level_mode(level), modes1=arch.modes1[level], modes2=arch.modes2[level])

        # Mapping: noise label -> positional embedding (+ label, + augmentation) -> 2x (Linear, SiLU).
        self.map_noise = PositionalEmbedding(noise_channels, endpoint=True)
        self.map_label = Linear(arch.label_dim, noise_channels, **init) if arch.label_dim else None
        self.map_augment = (Linear(arch.augment_dim, noise_channels, bias=False, **init)
                            if arch.augment_dim else None)
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        # Encoder: input conv, then per level a downsampling block (levels > 0) and num_blocks blocks.
        self.enc = nn.ModuleDict()
        cout = arch.img_channels
        skips = []
        for level, mult in enumerate(arch.channel_mult):
            if level == 0:
                cin, cout = cout, arch.model_channels
                self.enc[f"{level}_conv"] = DualConv(cin, cout, kernel=3, fft_norm=arch.fft_norm,
                                                     spectral_product=arch.spectral_product,
                                                     resample_filter=arch.resample_filter,
                                                     **spectral(level), **init)
            else:
                self.enc[f"{level}_down"] = DualUNetBlock(cout, cout, down=True, **spectral(level), **block_kwargs)
            skips.append(cout)
            for idx in range(arch.num_blocks):
                cin, cout = cout, arch.model_channels * mult
                self.enc[f"{level}_block{idx}"] = DualUNetBlock(
                    cin, cout, attention=level in arch.attn_levels, **spectral(level), **block_kwargs)
                skips.append(cout)

        # Decoder: bottleneck pair, then per level an upsampling block (not at the coarsest)
        # and num_blocks + 1 blocks that each consume one encoder skip.
        self.dec = nn.ModuleDict()
        top = arch.num_levels - 1
        for level, mult in reversed(list(enumerate(arch.channel_mult))):
            if level == top:
                self.dec[f"{level}_in0"] = DualUNetBlock(cout, cout, attention=True, **spectral(level), **block_kwargs)
                self.dec[f"{level}_in1"] = DualUNetBlock(cout, cout, **spectral(level), **block_kwargs)
            else:
                # The up block starts on level+1's grid, so it carries level+1's modes.
                self.dec[f"{level}_up"] = DualUNetBlock(cout, cout, up=True, **spectral(level + 1), **block_kwargs)
            for idx in range(arch.num_blocks + 1):
                cin, cout = cout + skips.pop(), arch.model_channels * mult
                self.dec[f"{level}_block{idx}"] = DualUNetBlock(
                    cin, cout, attention=(idx == arch.num_blocks and level in arch.attn_levels),
                    **spectral(level), **block_kwargs)
        self.dec["0_aux_norm"] = GroupNorm(cout, eps=1e-6)
        self.dec["0_aux_conv"] = DualConv(cout, arch.img_channels, kernel=3, fft_norm=arch.fft_norm,
                                          spectral_product=arch.spectral_product,
                                          resample_filter=arch.resample_filter, **spectral(0), **init_zero)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        problem = _size_problem(self.arch, tuple(x.shape[-2:]), strict=False)
        if problem:
            raise ValueError(f"DualUNet cannot run at {tuple(x.shape[-2:])}: {problem}")

        # Mapping. EDM feeds [sin | cos], so swap the embedding's halves.
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError(f"this network is class-conditional (label_dim={self.label_dim}); "
                                 f"pass class_labels of shape (B, {self.label_dim})")
            labels = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                labels = labels * keep.to(labels.dtype)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = silu(self.map_layer0(emb))
        emb = silu(self.map_layer1(emb))

        # Encoder: remember the grid each downsampling block starts from, so the decoder
        # can restore odd sizes exactly.
        skips, sizes = [], []
        for block in self.enc.values():
            if isinstance(block, DualUNetBlock):
                if block.down:
                    sizes.append(tuple(x.shape[-2:]))
                x = block(x, emb)
            else:
                x = block(x)
            skips.append(x)

        # Decoder.
        for name, block in self.dec.items():
            if name.endswith("aux_norm"):
                x = block(x)
            elif name.endswith("aux_conv"):
                x = block(silu(x))
            else:
                if "_block" in name:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb, out_size=sizes.pop() if block.up else None)
        return x


# ----------------------------------------------------------------------------
# Parameter accounting.


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on the 'meta' device)."""
    return sum(p.numel() for p in module.parameters())


def parameter_breakdown(module: nn.Module) -> dict[str, int]:
    """{'total', 'spectral', 'spatial'}: spectral = SpectralConv2d weights, spatial = the rest."""
    spectral = sum(count_parameters(m) for m in module.modules() if isinstance(m, SpectralConv2d))
    total = count_parameters(module)
    return {"total": total, "spectral": spectral, "spatial": total - spectral}
