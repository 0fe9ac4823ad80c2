"""Layers of the Dual-FNO UNet (DFU, Havrilla et al. 2024, arXiv 2401.06144).

Two kinds of layer live here:

* EDM's DDPM++ building blocks (Karras et al. 2022): weight initialisation,
  ``Linear``, ``Conv2d`` with [1,1] up/downsampling, ``GroupNorm``, the
  positional noise embedding and the residual UNet block with optional
  self-attention.
* The DFU additions: ``SpectralConv2d`` (an FNO layer that keeps a fixed number
  of Fourier modes, so it acts on the underlying function rather than on the
  pixel grid) and ``DualConv`` (spatial conv + spectral conv, outputs summed).

Every layer that changes resolution takes an explicit output size
``(H_out, W_out)``, so odd sizes (e.g. 5 -> 10, 25 -> 12) are exact. Attribute
and parameter names follow the authors' code (``weights1``/``weights2``,
``spatial_conv``/``spectral_conv``, ``norm0``/``conv0``/``affine``...) so that
state-dict keys line up with theirs.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.functional import silu

Size = tuple[int, int]

CONV_MODES = ("spatial", "spectral", "dual")
FFT_NORMS = ("backward", "forward", "ortho")
# How a kept Fourier coefficient is mixed over channels (see SpectralConv2d):
# 'componentwise' is the authors' product, 'complex' the textbook FNO product.
SPECTRAL_PRODUCTS = ("componentwise", "complex")


def autocast_on(kind: str) -> bool:
    """Whether autocast is on for device type ``kind`` (False for types that have none, such as
    the meta device FLOP counting uses).

    Not ``torch.amp.is_autocast_available``: torch 2.11's dynamo cannot trace it, so each
    spectral layer that asked broke a compiled DFU into a graph per layer and hit the recompile
    limit (the lent GPU machine's torch is 2.11; tests/test_runtime.py simulates it)."""
    try:
        return torch.is_autocast_enabled(kind)
    except RuntimeError:  # "unknown device type for autocast"
        return False


# ----------------------------------------------------------------------------
# Initialisation.


def weight_init(shape: Sequence[int], mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    """Random tensor for a weight of ``shape`` under one of EDM's four schemes.

    Uses the default device, so building a model inside ``with torch.device('meta')``
    allocates nothing.
    """
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f"unknown init mode {mode!r}; use xavier_uniform, xavier_normal, "
                     f"kaiming_uniform or kaiming_normal")


# ----------------------------------------------------------------------------
# Dense layers and normalisation.


class Linear(nn.Module):
    """Fully connected layer with EDM's initialisation knobs."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init_mode: str = "kaiming_normal", init_weight: float = 1.0, init_bias: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(weight_init([out_features, in_features], **fans) * init_weight)
        self.bias = nn.Parameter(weight_init([out_features], **fans) * init_bias) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ self.weight.to(x.dtype).t()
        if self.bias is not None:
            x = x.add_(self.bias.to(x.dtype))  # in place on the fresh product (see ``DualUNetBlock``)
        return x


class GroupNorm(nn.Module):
    """Group norm whose group count shrinks so each group has >= 4 channels (EDM)."""

    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4,
                 eps: float = 1e-5):
        super().__init__()
        self.num_groups = max(1, min(num_groups, num_channels // min_channels_per_group))
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.group_norm(x, num_groups=self.num_groups, weight=self.weight.to(x.dtype),
                                              bias=self.bias.to(x.dtype), eps=self.eps)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of the noise label, [cos | sin] over geometric frequencies."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=x.device)
        # endpoint=True makes the lowest frequency exactly 1/max_positions (DDPM++).
        freqs = freqs / (half - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** freqs
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


# ----------------------------------------------------------------------------
# Spatial convolution with optional resampling.


def resampled_size(in_size: Size, up: bool, down: bool, out_size: Size | None = None) -> Size:
    """Size after optional resampling: floor-halve when down; 2x, or ``out_size`` (the
    encoder's recorded size, so odd sizes come back exactly), when up."""
    h, w = in_size
    if down:
        return h // 2, w // 2
    if up:
        return tuple(out_size) if out_size is not None else (2 * h, 2 * w)
    return h, w


class Conv2d(nn.Module):
    """EDM convolution: optional 2x up/downsampling by a separable FIR filter, then a
    ``kernel`` x ``kernel`` conv (``kernel=0`` means resampling only).

    With the DDPM++ filter [1,1], downsampling is a 2x2 box average (odd sizes floor)
    and upsampling is nearest-neighbour; ``out_size`` picks the exact upsampled size
    so an odd encoder size is restored exactly (50 -> 25 -> 12 -> back to 25).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True,
                 up: bool = False, down: bool = False, resample_filter: Sequence[int] = (1, 1),
                 init_mode: str = "kaiming_normal", init_weight: float = 1.0, init_bias: float = 0.0):
        if up and down:
            raise ValueError("Conv2d cannot both upsample and downsample")
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel = kernel
        self.up = up
        self.down = down
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        self.weight = (nn.Parameter(weight_init([out_channels, in_channels, kernel, kernel], **fans) * init_weight)
                       if kernel else None)
        self.bias = nn.Parameter(weight_init([out_channels], **fans) * init_bias) if kernel and bias else None
        f = torch.as_tensor(list(resample_filter), dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum().square()  # 2-D filter with unit DC gain
        self.register_buffer("resample_filter", f if up or down else None)

    def output_size(self, in_size: Size, out_size: Size | None = None) -> Size:
        """Spatial size this layer produces from ``in_size`` (``out_size`` only matters when up)."""
        return resampled_size(in_size, self.up, self.down, out_size)

    def forward(self, x: torch.Tensor, out_size: Size | None = None) -> torch.Tensor:
        f = self.resample_filter
        if self.up:
            f = f.to(x.dtype)
            k, pad = f.shape[-1], (f.shape[-1] - 1) // 2
            target = self.output_size(x.shape[-2:], out_size)
            # conv_transpose gives 2*size for this filter; output_padding adds the odd row/col.
            natural = [(s - 1) * 2 - 2 * pad + k for s in x.shape[-2:]]
            extra = [t - n for t, n in zip(target, natural)]
            if not all(0 <= e <= 1 for e in extra):
                raise ValueError(f"cannot upsample {tuple(x.shape[-2:])} to {tuple(target)}: "
                                 f"the target must be 2x or 2x+1 the input")
            x = torch.nn.functional.conv_transpose2d(
                x, (f * 4).tile([x.shape[1], 1, 1, 1]), groups=x.shape[1], stride=2, padding=pad,
                output_padding=tuple(extra))
        elif self.down:
            f = f.to(x.dtype)
            pad = (f.shape[-1] - 1) // 2
            x = torch.nn.functional.conv2d(x, f.tile([x.shape[1], 1, 1, 1]), groups=x.shape[1], stride=2, padding=pad)
        if self.weight is not None:
            x = torch.nn.functional.conv2d(x, self.weight.to(x.dtype), padding=self.kernel // 2)
        if self.bias is not None:  # in place on the convolution's fresh output (see ``DualUNetBlock``)
            x = x.add_(self.bias.to(x.dtype).reshape(1, -1, 1, 1))
        return x


# ----------------------------------------------------------------------------
# Spectral (Fourier neural operator) convolution.


def spectral_size_problem(size: Size, modes1: int, modes2: int) -> str | None:
    """Why a grid of ``size`` cannot carry ``modes1`` x ``modes2`` Fourier modes, or None.

    rfft2 of an H x W grid has H rows of frequencies and W//2+1 columns. The layer
    keeps two row bands, [:modes1] (frequencies 0..m1-1) and [-modes1:] (-m1..-1);
    with H < 2*modes1 they would overlap and one band would silently overwrite the
    other, so we require H >= 2*modes1. Columns need W//2 + 1 >= modes2.
    """
    h, w = size
    if h < 2 * modes1:
        return f"{h} rows < 2*modes1 = {2 * modes1}"
    if w // 2 + 1 < modes2:
        return f"{w} columns give {w // 2 + 1} rfft columns < modes2 = {modes2}"
    return None


class SpectralConv2d(nn.Module):
    """FNO layer: y = irfft2( R(rfft2(x)) ) at an explicit output size.

    The lowest ``modes1`` positive and ``modes1`` negative row frequencies and the
    lowest ``modes2`` column frequencies are each mixed over channels by a learned
    weight (``weights1`` for rows [:m1], ``weights2`` for rows [-m1:], each
    (in, out, m1, m2, 2) = real and imaginary part); all other coefficients are
    zeroed. Resampling is truncation or zero-padding in Fourier space, so any
    output size works.

    The product (``product``):

    * ``'componentwise'`` -- the authors' (Dahoas/edm ``compl_mul2d``: an einsum
      over ``view_as_real`` tensors), and the default because their published
      checkpoints and numbers were computed with it: with X = a + ib and
      W = c + id, out = sum_i (a c) + i sum_i (b d). The real and imaginary parts
      are two independent real channel mixings; there are no cross terms.
    * ``'complex'`` -- the textbook FNO product sum_i X W = (ac - bd) + i(ad + bc),
      kept for ablations.

    Both are linear maps of the kept coefficients, so the layer is discretisation
    invariant either way (below). They differ in symmetry: a translation multiplies
    X by e^{i phi}, which commutes with the complex product but not with the
    component-wise one, so the authors' layer is *not* translation equivariant
    (tested both ways in tests/test_layers.py).

    Normalisation: the authors use torch's default ``norm='backward'`` for both
    transforms. Then, when the output size equals the input size, the layer is
    exactly discretisation-invariant (rfft2 scales by H*W, irfft2 divides it
    back out). When the size changes, the output is scaled by
    (H_in*W_in)/(H_out*W_out) -- 4 for a 2x downsample, 1/4 for a 2x upsample.
    ``norm='forward'`` removes that factor (resampling becomes exactly invariant
    too); it is available for ablations but is not what the authors trained.
    """

    def __init__(self, in_channels: int, out_channels: int, modes1: int, modes2: int, norm: str = "backward",
                 product: str = "componentwise"):
        super().__init__()
        if modes1 < 1 or modes2 < 1:
            raise ValueError(f"modes must be positive, got modes1={modes1}, modes2={modes2}")
        if norm not in FFT_NORMS:
            raise ValueError(f"unknown fft norm {norm!r}; use one of {FFT_NORMS}")
        if product not in SPECTRAL_PRODUCTS:
            raise ValueError(f"unknown spectral product {product!r}; use one of {SPECTRAL_PRODUCTS}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modes1 = modes1
        self.modes2 = modes2
        self.norm = norm
        self.product = product
        # Authors' init: U[0,1) on real and imaginary parts, scaled by 1/(in*out). The authors'
        # shape (I, O, m1, m2, 2), stored mode-major in memory (see ``mode_major``).
        scale = 1 / (in_channels * out_channels)
        shape = (in_channels, out_channels, modes1, modes2)
        self.weights1 = nn.Parameter(empty_mode_major(*shape).copy_(scale * torch.rand(*shape, 2)))
        self.weights2 = nn.Parameter(empty_mode_major(*shape).copy_(scale * torch.rand(*shape, 2)))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, modes=({self.modes1}, {self.modes2}), "
                f"norm={self.norm}, product={self.product}")

    def check_sizes(self, in_size: Size, out_size: Size) -> None:
        for what, size in (("input", in_size), ("output", out_size)):
            problem = spectral_size_problem(size, self.modes1, self.modes2)
            if problem:
                raise ValueError(f"SpectralConv2d {what} grid {size} too small for modes "
                                 f"({self.modes1}, {self.modes2}): {problem}")

    def mix(self, x_ft: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Channel mixing of one band: (B, I, m1, m2, 2) x (I, O, m1, m2, 2) -> (B, O, m1, m2, 2)."""
        if self.product == "componentwise":
            return torch.einsum("bixyt,ioxyt->boxyt", x_ft, w)
        out = torch.einsum("bixy,ioxy->boxy", torch.view_as_complex(x_ft.contiguous()),
                           torch.view_as_complex(w.contiguous()))
        return torch.view_as_real(out)

    def forward(self, x: torch.Tensor, out_size: Size | None = None,
                add_to: torch.Tensor | None = None) -> torch.Tensor:
        """The layer at ``out_size`` (default: the input's size); with ``add_to`` (B, O, H_out, W_out),
        ``add_to + layer(x)`` -- DualConv's sum, which the default path folds into its last
        matrix product, written into ``add_to``'s memory (an in-place update that autograd
        knows of: DualConv passes its spatial branch's fresh output)."""
        in_size = tuple(x.shape[-2:])
        out_size = in_size if out_size is None else tuple(out_size)
        self.check_sizes(in_size, out_size)
        # Transforms in at least float32 (bf16 has too few bits for a DFT; half-precision FFTs
        # are limited to powers of two on CUDA), outside autocast.
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        kind = x.device.type
        autocast = autocast_on(kind)
        fuse = (add_to is not None and self.impl != "reference" and x.dtype == dtype and add_to.dtype == dtype
                and tuple(add_to.shape) == (x.shape[0], self.out_channels, *out_size) and add_to.is_contiguous()
                and not (add_to.is_leaf and add_to.requires_grad))
        with torch.autocast(kind, enabled=False) if autocast else contextlib.nullcontext():
            if self.impl == "reference":
                y = self.forward_reference(x.to(dtype), out_size)
            else:
                y = self.forward_dft(x.to(dtype), out_size, add_to if fuse else None)
        y = y.to(x.dtype)
        return y if add_to is None or fuse else add_to + y

    # The layer is computed one of two ways, equal to ~1e-7 in float32 (tests/test_layers.py):
    # 'reference' is the authors' computation written plainly (rfft2, two einsums into a
    # zero-filled spectrum, irfft2); 'dft' (the default) evaluates the same sums as real
    # matrix products over the kept modes only, which is faster, needs no complex dtype
    # (so torch.compile can fuse it) and never materialises the full spectrum.
    impl = "dft"

    def forward_reference(self, x: torch.Tensor, out_size: Size) -> torch.Tensor:
        m1, m2 = self.modes1, self.modes2
        x_ft = torch.view_as_real(torch.fft.rfft2(x, norm=self.norm))
        out_ft = torch.zeros(x.shape[0], self.out_channels, out_size[0], out_size[1] // 2 + 1, 2,
                             dtype=x.dtype, device=x.device)
        out_ft[:, :, :m1, :m2] = self.mix(x_ft[:, :, :m1, :m2], self.weights1.to(x.dtype))
        out_ft[:, :, -m1:, :m2] = self.mix(x_ft[:, :, -m1:, :m2], self.weights2.to(x.dtype))
        return torch.fft.irfft2(torch.view_as_complex(out_ft), s=out_size, norm=self.norm)

    def forward_dft(self, x: torch.Tensor, out_size: Size, add_to: torch.Tensor | None = None) -> torch.Tensor:
        """Truncated DFT as matrix products (``truncated_dft_bases``), in the layout

            x (B*I*H, W) -> A = Fw x^T: (2*m2 [re|im, k2], B*I*H)
              -> X = Th[re] A_re^T + Th[im] A_im^T: (P, B*I), P = (band, [re|im], k1, k2)
              -> Y[band] = X[band] W[band], one batched GEMM over 2*m1*m2 modes per band
              -> Z[q] = Y^T Gh[q]: (2*m2, B*O*Ho) -> y = Z^T Gw: (B*O*Ho, Wo),

        in which every product reads its operands as they lie (transposed views, no copies)
        and ``W[band]`` is a view of the parameter (see ``mode_major``). In eager mode with
        the authors' product it runs as one autograd function with a hand-written backward
        (9 kernels forward, 12 backward; x itself is not kept for it); under torch.compile,
        and for the complex product, as the same ops differentiated by autograd."""
        compiling = torch.compiler.is_compiling()
        if compiling or self.product != "componentwise":
            y = self._forward_dft_ops(x, out_size, compiling)
            return y if add_to is None else add_to + y
        bases = _cached_dft_bases(tuple(x.shape[-2:]), tuple(out_size), self.modes1, self.modes2, self.norm,
                                  x.dtype, x.device)
        return _SpectralDFT.apply(x.contiguous(), self.weights1, self.weights2, add_to, *bases)

    def _forward_dft_ops(self, x: torch.Tensor, out_size: Size, compiling: bool) -> torch.Tensor:
        """``forward_dft`` as plain differentiable ops (torch.compile, the complex product)."""
        b, i, h, w = x.shape
        o, m1, m2 = self.out_channels, self.modes1, self.modes2
        ho, wo = out_size
        args = ((h, w), tuple(out_size), m1, m2, self.norm, x.dtype, x.device)
        if compiling:
            fwt, th, gh, gw = truncated_dft_bases(*args)
            th0, th1, gh0, gh1 = th[0], th[1], gh[0], gh[1]
            x = _LayoutBarrier.apply(x)
        else:
            fwt, th0, th1, gh0, gh1, gw = _cached_dft_bases(*args)
        a = (fwt @ x.reshape(b * i * h, w).t()).reshape(2, m2 * b * i, h)
        xk = (th0 @ a[0].t() + th1 @ a[1].t()).reshape(2, 2, m1 * m2, b, i)  # (band, re|im, mode, B, I)
        yk = []
        for band, weight in enumerate((self.weights1, self.weights2)):
            wr, wi = mode_major(weight.to(x.dtype)).reshape(2, m1 * m2, i, o).unbind(0)
            xr, xi = xk[band].unbind(0)
            if self.product == "componentwise":
                yk += [torch.bmm(xr, wr), torch.bmm(xi, wi)]
            else:  # (a + ib)(c + id) = (ac - bd) + i(ad + bc)
                yk += [torch.bmm(xr, wr) - torch.bmm(xi, wi), torch.bmm(xr, wi) + torch.bmm(xi, wr)]
        yk = torch.cat(yk).reshape(4 * m1, m2 * b * o).t()
        z = torch.stack([yk @ gh0, yk @ gh1])
        y = (z.reshape(2 * m2, b * o * ho).t() @ gw).reshape(b, o, ho, wo)
        return _LayoutBarrier.apply(y) if compiling else y


def mode_major(weight: torch.Tensor) -> torch.Tensor:
    """A spectral weight (I, O, m1, m2, [re|im]) as (2*m1*m2, I, O): one (I, O) matrix per kept
    mode and part, the operand a batched GEMM over the modes needs.

    ``SpectralConv2d`` stores its weights in this order in memory (``empty_mode_major``) while
    keeping the authors' shape, so this is a view and the gradients the layer returns are
    taken by autograd without copies; a weight in another layout (e.g. assigned by
    ``load_state_dict(assign=True)``) is copied. The per-mode operand must be laid out like
    this: a strided view with the modes innermost made torch's CPU bmm loop over 160 small
    products one at a time (9x slower), and re-laying the weights out on every call cost
    more than the layer's arithmetic (6-D permuting copies)."""
    i, o, m1, m2, _ = weight.shape
    return weight.permute(4, 2, 3, 0, 1).reshape(2 * m1 * m2, i, o)


def empty_mode_major(in_channels: int, out_channels: int, modes1: int, modes2: int, **kwargs) -> torch.Tensor:
    """Uninitialised (I, O, m1, m2, 2) tensor whose memory is ordered ([re|im], m1, m2, I, O)."""
    return torch.empty(2, modes1, modes2, in_channels, out_channels, **kwargs).permute(3, 4, 1, 2, 0)


def _dft_forward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, fwt, th0, th1, gh0, gh1, gw,
                 out: torch.Tensor | None = None, a: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward of ``forward_dft``'s layout on a contiguous x, bases as ``_cached_dft_bases``
    gives them: (y, X). With ``out`` (contiguous, (B, O, Ho, Wo)) the result is added into it
    in place and ``out`` returned; ``a`` is the first product ``fwt @ x^T`` when the caller
    made it already. (Written for few Python-level tensor calls: at 8 channels and 32 px the
    interpreter costs as much as the arithmetic.)"""
    b, i, h, w = x.shape
    o = w1.shape[1]
    m2, mm, ho, wo = fwt.shape[0] // 2, th0.shape[0], gh0.shape[1], gw.shape[1]  # mm = 4*m1: (band, re|im, k1)
    if a is None:
        a = torch.mm(fwt, x.view(b * i * h, w).t())
    a_re, a_im = a.view(2, m2 * b * i, h).unbind(0)
    xk = torch.mm(th0, a_re.t()).addmm_(th1, a_im.t()).view(2, mm * m2 // 2, b, i)
    yk = x.new_empty(2, mm * m2 // 2, b, o)
    for xk_band, yk_band, weight in zip(xk.unbind(0), yk.unbind(0), (w1, w2)):
        torch.bmm(xk_band, mode_major(weight.to(x.dtype)), out=yk_band)
    yk = yk.view(mm, m2 * b * o).t()
    z = x.new_empty(2, m2 * b * o, ho)
    z_re, z_im = z.unbind(0)
    torch.mm(yk, gh0, out=z_re)
    torch.mm(yk, gh1, out=z_im)
    z = z.view(2 * m2, b * o * ho).t()
    if out is None:  # not a view of the product: callers may add into it in place
        y = x.new_empty(b, o, ho, wo)
        torch.mm(z, gw, out=y.view(b * o * ho, wo))
        return y, xk
    # into the caller's memory: a fresh output costs as much as the product (cold pages)
    out.view(b * o * ho, wo).addmm_(z, gw)
    return out, xk


def _dft_backward(gy: torch.Tensor, xk: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, fwt, th0, th1, gh0, gh1,
                  gw, x_size: tuple[int, ...], need: tuple[bool, bool, bool], gx: torch.Tensor | None = None):
    """Gradients (x, weights1, weights2) of ``_dft_forward`` for a contiguous gy; the x gradient
    is added into ``gx`` (contiguous, x's shape) when one is given."""
    b, i, h, w = x_size
    o, ho, wo = gy.shape[1:]
    m2, mm = fwt.shape[0] // 2, th0.shape[0]
    gz_re, gz_im = torch.mm(gw, gy.view(b * o * ho, wo).t()).view(2, m2 * b * o, ho).unbind(0)
    gyk = torch.mm(gh0, gz_re.t()).addmm_(gh1, gz_im.t()).view(2, mm * m2 // 2, b, o)
    gyk_bands = gyk.unbind(0)
    grads = [None, None]
    if need[1] or need[2]:
        for band, (xk_band, gyk_band, weight) in enumerate(zip(xk.unbind(0), gyk_bands, (w1, w2))):
            if need[1 + band]:
                g = torch.bmm(xk_band.transpose(1, 2), gyk_band)  # (2*m1*m2, I, O), the weight's memory order
                grads[band] = g.view(2, weight.shape[2], m2, i, o).permute(3, 4, 1, 2, 0).to(weight.dtype)
    if need[0]:
        gxk = gy.new_empty(2, mm * m2 // 2, b, i)
        for gyk_band, gxk_band, weight in zip(gyk_bands, gxk.unbind(0), (w1, w2)):
            torch.bmm(gyk_band, mode_major(weight.to(gy.dtype)).transpose(1, 2), out=gxk_band)
        gxk = gxk.view(mm, m2 * b * i).t()
        ga = gy.new_empty(2, m2 * b * i, h)
        ga_re, ga_im = ga.unbind(0)
        torch.mm(gxk, th0, out=ga_re)
        torch.mm(gxk, th1, out=ga_im)
        ga = ga.view(2 * m2, b * i * h).t()
        if gx is None:
            gx = torch.mm(ga, fwt).view(b, i, h, w)
        else:
            gx.view(b * i * h, w).addmm_(ga, fwt)
    return gx, grads[0], grads[1]


class _SpectralDFT(torch.autograd.Function):
    """The default (eager, component-wise) spectral layer as one autograd node.

    forward(x, weights1, weights2, add_to, *bases) -> add_to + layer(x), in add_to's
    memory (or layer(x)). The hand-written backward needs only the mode coefficients X and
    the weights: the ~25 autograd nodes (views, permutes, copies) of the same computation
    as separate ops cost more than its arithmetic at the sizes DFU runs."""

    @staticmethod
    def forward(ctx, x, w1, w2, add_to, *bases):
        y, xk = _dft_forward(x, w1, w2, *bases, out=add_to)
        if add_to is not None:
            ctx.mark_dirty(add_to)
        ctx.save_for_backward(xk, w1, w2, *bases)
        ctx.x_size = tuple(x.shape)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        xk, w1, w2, *bases = ctx.saved_tensors
        gx, g1, g2 = _dft_backward(gy.contiguous(), xk, w1, w2, *bases, ctx.x_size, ctx.needs_input_grad[:3])
        return gx, g1, g2, (gy if ctx.needs_input_grad[3] else None), *[None] * len(bases)


class _DualConvDFT(torch.autograd.Function):
    """A DualConv without resampling -- 3x3 conv + bias + spectral layer, summed -- as one node.

    forward(x, conv weight, conv bias or None, weights1, weights2, *bases). The
    spatial branch is Conv2d's own computation (conv2d, then + bias in place), and its gradients come
    from the same aten kernel autograd would call; the spectral branch reads x right before
    the convolution does, adds itself into the convolution's output, and in backward adds
    its x gradient into the convolution's, where autograd would write a fresh one and then
    sum the two."""

    @staticmethod
    def forward(ctx, x, weight, bias, w1, w2, *bases):
        b, i, h, w = x.shape
        a = torch.mm(bases[0], x.view(b * i * h, w).t())
        y = torch.nn.functional.conv2d(x, weight, padding=weight.shape[-1] // 2)
        if bias is not None:
            y = y.add_(bias.reshape(1, -1, 1, 1))
        y, xk = _dft_forward(x, w1, w2, *bases, out=y.contiguous(), a=a)
        ctx.save_for_backward(x, weight, xk, w1, w2, *bases)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        x, weight, xk, w1, w2, *bases = ctx.saved_tensors
        need_x, need_weight, need_bias, need_w1, need_w2 = ctx.needs_input_grad[:5]
        gy = gy.contiguous()
        gx = g_weight = None
        if need_x or need_weight:
            pad = weight.shape[-1] // 2
            gx, g_weight, _ = torch.ops.aten.convolution_backward(
                gy, x, weight, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, [need_x, need_weight, False])
        g_bias = gy.sum((0, 2, 3)) if need_bias else None
        if need_x and not gx.is_contiguous():
            gx = gx.contiguous()
        gx, g1, g2 = _dft_backward(gy, xk, w1, w2, *bases, tuple(x.shape), (need_x, need_w1, need_w2), gx=gx)
        return gx, g_weight, g_bias, g1, g2, *[None] * len(bases)


class _LayoutBarrier(torch.autograd.Function):
    """Identity that hands on contiguous copies, forwards and backwards (used under torch.compile).

    A traced graph can predict another memory layout for an activation or its gradient
    than it has at run time (on CPU, fake strides of channels_last convolution and
    group-norm outputs disagree with the real ones), and a reshape traced as a view then
    fails when the graph runs. Copies made at the layer's boundary are layout-proof;
    inductor fuses them away where they are not needed."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone(memory_format=torch.contiguous_format)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clone(memory_format=torch.contiguous_format)


@functools.lru_cache(maxsize=256)
def _cached_dft_bases(*args) -> tuple[torch.Tensor, ...]:
    """``truncated_dft_bases`` memoised, as six contiguous matrices (fwt, th[0], th[1], gh[0],
    gh[1], gw): one set per (sizes, modes, norm, dtype, device), a few KB each; rebuilding
    them is ~40 small ops per call, a third of the layer's time at 8 channels and 32 px.
    (Under torch.compile they are built inside the graph instead, and constant-folded.)"""
    fwt, th, gh, gw = truncated_dft_bases(*args)
    return tuple(t.contiguous() for t in (fwt, th[0], th[1], gh[0], gh[1], gw))


def truncated_dft_bases(in_size: Size, out_size: Size, m1: int, m2: int, norm: str, dtype: torch.dtype,
                        device: torch.device) -> tuple[torch.Tensor, ...]:
    """Real matrices that compute rfft2 -> keep modes -> irfft2 as matrix products.

    Kept row frequencies k1 in [0, m1) (band 1, ``weights1``) and [-m1, 0) (band 2,
    ``weights2``), column frequencies k2 in [0, m2). With phase angles phi = 2 pi k n / N,
    c = cos phi and s = sin phi:

    * ``fwt`` (2 m2, W): sum_w x e^{-i k2 w} = [c; -s] x, real parts then imaginary parts;
    * ``th`` (2, 4 m1, H): the same along H for A = A_re + i A_im: X = th[0] A_re + th[1] A_im,
      rows ordered (band, [re|im], k1): th[0] = [c1; -s1; c2; -s2], th[1] = [s1; c1; s2; c2];
    * ``gh`` (2, 4 m1, Ho): sum_k1 Y e^{+i k1 h'} for Y with rows (band, [re|im], k1):
      Z_re = Y^T gh[0], Z_im = Y^T gh[1], with the same block pattern as ``th``;
    * ``gw`` (2 m2, Wo): the real inverse along columns, c2r's rule: weight 1 for
      k2 = 0 and the Nyquist column, 2 for the others, imaginary parts of those two
      columns ignored -- what torch.fft.irfft2 does with a non-Hermitian spectrum.

    torch.fft's ``norm`` sets the scales: 'backward' divides by Ho*Wo on the way back,
    'forward' by H*W on the way in, 'ortho' by the square roots of both. Built in float64
    from integer frequencies each call (a few thousand elements), then cast.
    """
    (h, w), (ho, wo) = in_size, out_size
    f64 = dict(dtype=torch.float64, device=device)
    bands = (torch.arange(m1, **f64), torch.arange(-m1, 0, **f64))
    k2 = torch.arange(m2, **f64)
    scale_in = {"backward": (1.0, 1.0), "forward": (1 / w, 1 / h), "ortho": (w ** -0.5, h ** -0.5)}[norm]
    scale_out = {"backward": (1 / ho, 1 / wo), "forward": (1.0, 1.0), "ortho": (ho ** -0.5, wo ** -0.5)}[norm]

    def rows(n: int, scale: float) -> torch.Tensor:
        """(2, 4 m1, n): [c1; -s1; c2; -s2] and [s1; c1; s2; c2] over positions 0..n-1."""
        cs = [(ang.cos() * scale, ang.sin() * scale)
              for ang in (2 * math.pi * torch.outer(k1, torch.arange(n, **f64)) / n for k1 in bands)]
        return torch.stack([torch.cat([t for c, s in cs for t in (c, -s)]),
                            torch.cat([t for c, s in cs for t in (s, c)])])

    ang = 2 * math.pi * torch.outer(k2, torch.arange(w, **f64)) / w
    fwt = torch.cat([ang.cos(), -ang.sin()], 0) * scale_in[0]
    th = rows(h, scale_in[1])
    gh = rows(ho, scale_out[0])
    weight = torch.full((m2,), 2.0, **f64)
    weight[0] = 1.0
    if wo % 2 == 0 and m2 - 1 == wo // 2:
        weight[-1] = 1.0
    ang = 2 * math.pi * torch.outer(k2, torch.arange(wo, **f64)) / wo
    gw = torch.cat([weight[:, None] * ang.cos(), -weight[:, None] * ang.sin()], 0) * scale_out[1]
    return tuple(t.to(dtype) for t in (fwt, th, gh, gw))


# ----------------------------------------------------------------------------
# Dual convolution.


class DualConv(nn.Module):
    """Spatial conv + spectral conv at the same output size, outputs summed.

    ``mode`` selects the branches: 'spatial' (plain UNet conv), 'spectral'
    (FNO-UNet) or 'dual' (DFU). ``modes1``/``modes2`` may be None for 'spatial'.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int,
                 modes1: int | None = None, modes2: int | None = None, mode: str = "dual",
                 bias: bool = True, up: bool = False, down: bool = False,
                 resample_filter: Sequence[int] = (1, 1), init_mode: str = "kaiming_normal",
                 init_weight: float = 1.0, init_bias: float = 0.0, fft_norm: str = "backward",
                 spectral_product: str = "componentwise"):
        super().__init__()
        if mode not in CONV_MODES:
            raise ValueError(f"unknown conv mode {mode!r}; use one of {CONV_MODES}")
        if mode != "spatial" and (modes1 is None or modes2 is None):
            raise ValueError(f"conv mode {mode!r} needs modes1 and modes2")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mode = mode
        self.up = up
        self.down = down
        self.spatial_conv = (Conv2d(in_channels, out_channels, kernel, bias=bias, up=up, down=down,
                                    resample_filter=resample_filter, init_mode=init_mode,
                                    init_weight=init_weight, init_bias=init_bias)
                             if mode != "spectral" else None)
        self.spectral_conv = (SpectralConv2d(in_channels, out_channels, modes1, modes2, norm=fft_norm,
                                             product=spectral_product)
                              if mode != "spatial" else None)

    def output_size(self, in_size: Size, out_size: Size | None = None) -> Size:
        """Same rule as ``Conv2d``: floor-halve when down, 2x or ``out_size`` when up."""
        return resampled_size(in_size, self.up, self.down, out_size)

    def forward(self, x: torch.Tensor, out_size: Size | None = None) -> torch.Tensor:
        size = self.output_size(tuple(x.shape[-2:]), out_size)
        if self._fusable(x, size):
            spec, conv = self.spectral_conv, self.spatial_conv
            spec.check_sizes(size, size)
            bases = _cached_dft_bases(size, size, spec.modes1, spec.modes2, spec.norm, x.dtype, x.device)
            return _DualConvDFT.apply(x.contiguous(), conv.weight, conv.bias, spec.weights1, spec.weights2, *bases)
        y = None
        if self.spatial_conv is not None:
            y = self.spatial_conv(x, out_size=size)
        if self.spectral_conv is not None:
            y = self.spectral_conv(x, out_size=size, add_to=y)  # y + spectral(x), the sum fused
        return y

    def _fusable(self, x: torch.Tensor, size: Size) -> bool:
        """Whether the two branches run as one autograd node (``_DualConvDFT``): eager mode, the
        default spectral path with the authors' product, no resampling, no autocast, one dtype."""
        conv, spec = self.spatial_conv, self.spectral_conv
        if (conv is None or spec is None or self.up or self.down or conv.weight is None or conv.kernel % 2 == 0
                or spec.impl == "reference" or spec.product != "componentwise" or torch.compiler.is_compiling()
                or size != tuple(x.shape[-2:])):
            return False
        if autocast_on(x.device.type):
            return False
        return (x.dtype in (torch.float32, torch.float64) and conv.weight.dtype == x.dtype
                and (conv.bias is None or conv.bias.dtype == x.dtype))


# ----------------------------------------------------------------------------
# Residual UNet block.


def _sum(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh + other``, written into ``fresh`` (an output no backward needs) when the sum has its
    dtype. Under autocast a DFU block sums float32 (conv + spectral) and bfloat16 (1x1 convolutions)
    terms: a bfloat16 ``fresh`` plus a float32 ``other`` is float32, and summing into ``fresh``
    would round it."""
    return fresh.add_(other) if torch.promote_types(fresh.dtype, other.dtype) == fresh.dtype else fresh + other


class DualUNetBlock(nn.Module):
    """DDPM++ residual block whose two 3x3 convs are ``DualConv``s.

    x -> GroupNorm -> SiLU -> conv0 (maybe resampling) -> + Linear(emb) -> GroupNorm
      -> SiLU -> dropout -> conv1 (init near zero) -> + skip(x) -> * skip_scale,
    then optionally single-layer self-attention with its own residual. The skip is
    a 1x1 spatial conv (with the same resampling) whenever channels or size change;
    the attention qkv/proj are 1x1 spatial convs too -- only conv0/conv1 are dual.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int,
                 modes1: int | None = None, modes2: int | None = None, mode: str = "spatial",
                 up: bool = False, down: bool = False, attention: bool = False, num_heads: int = 1,
                 dropout: float = 0.0, skip_scale: float = 1.0, eps: float = 1e-5,
                 resample_filter: Sequence[int] = (1, 1), resample_proj: bool = False,
                 init: dict | None = None, init_zero: dict | None = None, init_attn: dict | None = None,
                 fft_norm: str = "backward", spectral_product: str = "componentwise"):
        super().__init__()
        init = dict(init or {})
        init_zero = dict(init_zero if init_zero is not None else dict(init_weight=0))
        init_attn = dict(init_attn if init_attn is not None else init)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.num_heads = num_heads if attention else 0
        self.dropout = dropout
        self.skip_scale = skip_scale
        dual = dict(modes1=modes1, modes2=modes2, mode=mode, fft_norm=fft_norm, resample_filter=resample_filter,
                    spectral_product=spectral_product)

        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = DualConv(in_channels, out_channels, kernel=3, up=up, down=down, **dual, **init)
        self.affine = Linear(emb_channels, out_channels, **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = DualConv(out_channels, out_channels, kernel=3, **dual, **init_zero)

        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=kernel, up=up, down=down,
                               resample_filter=resample_filter, **init)

        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1, **init_attn)
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, out_size: Size | None = None) -> torch.Tensor:
        orig = x
        size = self.conv0.output_size(tuple(x.shape[-2:]), out_size)
        x = self.conv0(silu(self.norm0(x)), out_size=size)
        # Sums and scalings in place on fresh outputs that no backward needs, as in EDM and the
        # authors' code: the same bits without a new activation-sized tensor for each, which cost
        # 1-7% of a DFU training step on CPU (benchmarks/test_inplace.py, reports/perf/cpu.md).
        x = silu(self.norm1(x.add_(self.affine(emb)[:, :, None, None].to(x.dtype))))
        x = self.conv1(torch.nn.functional.dropout(x, p=self.dropout, training=self.training))
        x = _sum(x, self.skip(orig, out_size=size) if self.skip is not None else orig).mul_(self.skip_scale)

        if self.num_heads:
            b, c, h, w = x.shape
            # Channel layout (head, channel, q/k/v) matches EDM so qkv weights are interchangeable.
            q, k, v = self.qkv(self.norm2(x)).reshape(b * self.num_heads, c // self.num_heads, 3, h * w).unbind(2)
            # softmax(q^T k / sqrt(d)) in float32 for stability under reduced precision.
            logits = torch.einsum("ncq,nck->nqk", q.float(), k.float()) / math.sqrt(k.shape[1])
            attn = logits.softmax(dim=2)
            a = torch.einsum("nqk,nck->ncq", attn, v.float()).to(x.dtype)
            x = _sum(self.proj(a.reshape(b, c, h, w)), x).mul_(self.skip_scale)
        return x
