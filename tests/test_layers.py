"""Tests for models/layers.py: resampling convs, the spectral conv and its
discretisation invariance, DualConv modes and the UNet block."""

import contextlib
import math

import pytest
import torch

from models.layers import (
    SPECTRAL_PRODUCTS,
    Conv2d,
    DualConv,
    DualUNetBlock,
    GroupNorm,
    Linear,
    PositionalEmbedding,
    SpectralConv2d,
    weight_init,
)


pytestmark = pytest.mark.usefixtures("one_thread")
PRODUCTS = SPECTRAL_PRODUCTS  # the authors' component-wise product first, the complex ablation second


def band_limited(n: int, m1: int, m2: int, channels: int = 2, seed: int = 0) -> torch.Tensor:
    """Random real function with row frequencies |k1| < m1 and column frequencies k2 < m2,
    sampled on an n x n grid over [0, 1)^2 (float64, batch 1)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.arange(n, dtype=torch.float64) / n
    x = torch.zeros(1, channels, n, n, dtype=torch.float64)
    for c in range(channels):
        for k1 in range(-m1 + 1, m1):
            for k2 in range(m2):
                a, b = torch.randn(2, generator=g, dtype=torch.float64)
                phase = 2 * math.pi * (k1 * s[:, None] + k2 * s[None, :])
                x[0, c] += a * phase.cos() + b * phase.sin()
    return x


def fourier_resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample a band-limited grid function by truncating / zero-padding its spectrum."""
    h, w = x.shape[-2:]
    H, W = size
    x_ft = torch.fft.rfft2(x, norm="forward")
    out = torch.zeros(*x.shape[:-2], H, W // 2 + 1, dtype=x_ft.dtype)
    r, c = min(h, H) // 2, min(w // 2 + 1, W // 2 + 1)
    out[..., :r, :c] = x_ft[..., :r, :c]
    out[..., -r:, :c] = x_ft[..., -r:, :c]
    return torch.fft.irfft2(out, s=size, norm="forward")


# --- EDM building blocks -------------------------------------------------------


def test_weight_init_scales_and_rejects_unknown_mode():
    torch.manual_seed(0)
    w = weight_init([2000, 50], "xavier_uniform", fan_in=50, fan_out=2000)
    bound = math.sqrt(6 / 2050)
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    w = weight_init([4000, 100], "kaiming_normal", fan_in=100, fan_out=4000)
    assert abs(w.std().item() - 0.1) < 0.005
    with pytest.raises(ValueError, match="unknown init mode"):
        weight_init([2], "he", 1, 1)


def test_linear_and_groupnorm_shapes():
    lin = Linear(8, 4, bias=False)
    assert lin.bias is None and lin(torch.randn(3, 8)).shape == (3, 4)
    assert GroupNorm(256).num_groups == 32 and GroupNorm(16).num_groups == 4 and GroupNorm(3).num_groups == 1


def test_positional_embedding_endpoint_frequencies():
    emb = PositionalEmbedding(8, endpoint=True)(torch.tensor([1.0]))
    # cos half first; with endpoint the last frequency is exactly 1/max_positions.
    assert torch.allclose(emb[0, :4], torch.cos(torch.tensor([1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3), 1e-4])))
    assert torch.allclose(emb[0, 4:], torch.sin(torch.tensor([1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3), 1e-4])))


@pytest.mark.parametrize("h,w", [(10, 10), (25, 13), (5, 6)])
def test_conv2d_box_filter_down_is_average_pool(h, w):
    x = torch.randn(2, 3, h, w)
    down = Conv2d(3, 3, kernel=0, down=True)
    assert torch.allclose(down(x), torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)
    assert down.output_size((h, w)) == (h // 2, w // 2)


@pytest.mark.parametrize("size,target", [((5, 5), (10, 10)), ((12, 6), (25, 13)), ((2, 3), (5, 6))])
def test_conv2d_box_filter_up_is_nearest_to_exact_size(size, target):
    x = torch.randn(1, 2, *size)
    y = Conv2d(2, 2, kernel=0, up=True)(x, out_size=target)
    assert y.shape[-2:] == target
    nearest = x.repeat_interleave(2, -2).repeat_interleave(2, -1)
    assert torch.equal(y[..., : 2 * size[0], : 2 * size[1]], nearest)


def test_conv2d_up_rejects_impossible_target():
    with pytest.raises(ValueError, match="cannot upsample"):
        Conv2d(2, 2, kernel=3, up=True)(torch.randn(1, 2, 5, 5), out_size=(12, 12))


# --- spectral conv -------------------------------------------------------------


def test_spectral_weights_layout_and_authors_init_scale():
    torch.manual_seed(0)
    layer = SpectralConv2d(4, 8, modes1=6, modes2=3)
    assert dict(layer.named_parameters()).keys() == {"weights1", "weights2"}
    for w in (layer.weights1, layer.weights2):
        assert w.shape == (4, 8, 6, 3, 2)
        # U[0,1) * 1/(in*out): non-negative, below 1/32, and filling that range.
        assert w.min() >= 0 and w.max() < 1 / 32 and w.max() > 0.9 / 32
    assert not torch.equal(layer.weights1, layer.weights2)


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("k1", [0, 3, -1, -5])
def test_spectral_single_mode_matches_hand_computation(k1, product):
    """A pure wave at (k1, k2) has the normalised coefficient X = 1 (cos) or -i (sin); the
    layer returns Re(z e^{i theta}) with z = X (.) w, w from weights1 for k1 >= 0 and
    weights2[m1 + k1] for k1 < 0. Component-wise (the authors'): z = Re X Re w + i Im X Im w;
    complex: z = X w. So cos -> w_re cos (componentwise) or w_re cos - w_im sin (complex),
    sin -> w_im sin (componentwise) or w_im cos + w_re sin (complex)."""
    m1, m2, k2, n = 6, 4, 2, 16
    layer = SpectralConv2d(1, 1, m1, m2, product=product).double()
    s = torch.arange(n, dtype=torch.float64) / n
    theta = 2 * math.pi * (k1 * s[:, None] + k2 * s[None, :])
    wr, wi = (layer.weights1 if k1 >= 0 else layer.weights2)[0, 0, k1 if k1 >= 0 else m1 + k1, k2].detach()
    with torch.no_grad():
        y_cos = layer(theta.cos()[None, None])[0, 0]
        y_sin = layer(theta.sin()[None, None])[0, 0]
    if product == "componentwise":
        want_cos, want_sin = wr * theta.cos(), wi * theta.sin()
    else:
        want_cos, want_sin = wr * theta.cos() - wi * theta.sin(), wi * theta.cos() + wr * theta.sin()
    assert torch.allclose(y_cos, want_cos, atol=1e-12)
    assert torch.allclose(y_sin, want_sin, atol=1e-12)


def test_spectral_discards_modes_above_the_kept_band():
    layer = SpectralConv2d(1, 1, 4, 3).double()
    n = 32
    s = torch.arange(n, dtype=torch.float64) / n
    high = torch.cos(2 * math.pi * (5 * s[:, None] + 1 * s[None, :])) + torch.cos(2 * math.pi * 7 * s[None, :])
    with torch.no_grad():
        assert layer(high[None, None]).abs().max() < 1e-12


def test_only_the_complex_product_is_translation_equivariant():
    """A shift multiplies each coefficient by e^{i phi}: the complex product commutes with
    that, the authors' component-wise product does not."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 20, 18)
    shifted = lambda t: t.roll((3, -2), (-2, -1))
    complex_layer = SpectralConv2d(3, 2, 5, 4, product="complex")
    authors = SpectralConv2d(3, 2, 5, 4)
    authors.load_state_dict(complex_layer.state_dict())
    with torch.no_grad():
        assert torch.allclose(complex_layer(shifted(x)), shifted(complex_layer(x)), atol=1e-6)
        assert (authors(shifted(x)) - shifted(authors(x))).abs().max() > 1e-2


@pytest.mark.parametrize("product", PRODUCTS)
def test_spectral_discretisation_invariance_same_size(product):
    """Same band-limited function sampled at 32 and at 64: outputs agree after resampling."""
    torch.manual_seed(0)
    m1, m2 = 6, 4
    layer = SpectralConv2d(2, 3, m1, m2, product=product).double()  # authors' norm='backward'
    x32, x64 = band_limited(32, m1, m2), band_limited(64, m1, m2)
    assert torch.allclose(fourier_resample(x64, (32, 32)), x32, atol=1e-10)  # sanity of the helper
    with torch.no_grad():
        y32, y64 = layer(x32), layer(x64)
    assert y64.shape[-2:] == (64, 64)
    assert y32.abs().max() > 1e-2  # not trivially zero
    assert (fourier_resample(y64, (32, 32)) - y32).abs().max() < 1e-5
    assert (fourier_resample(y32, (64, 64)) - y64).abs().max() < 1e-5
    assert (y64[..., ::2, ::2] - y32).abs().max() < 1e-5


@pytest.mark.parametrize("product", PRODUCTS)
def test_spectral_resampling_scale_with_authors_norm_and_forward_norm(product):
    """norm='backward' (authors): a resampling layer scales by in_area/out_area.
    norm='forward': resampling is exactly invariant."""
    torch.manual_seed(0)
    m1, m2 = 6, 4
    x32, x64 = band_limited(32, m1, m2), band_limited(64, m1, m2)
    back = SpectralConv2d(2, 3, m1, m2, product=product).double()
    fwd = SpectralConv2d(2, 3, m1, m2, norm="forward", product=product).double()
    fwd.load_state_dict(back.state_dict())
    with torch.no_grad():
        ref = back(x32)  # 32 -> 32 is the same under both norms
        assert (fwd(x32) - ref).abs().max() < 1e-10
        assert (fwd(x64, out_size=(32, 32)) - ref).abs().max() < 1e-5
        assert (fwd(x32, out_size=(64, 64)) - fourier_resample(ref, (64, 64))).abs().max() < 1e-5
        assert (back(x64, out_size=(32, 32)) - 4 * ref).abs().max() < 1e-5
        assert (back(x32, out_size=(64, 64)) - fourier_resample(ref, (64, 64)) / 4).abs().max() < 1e-5


@pytest.mark.parametrize("size,out", [((10, 10), (5, 5)), ((5, 5), (10, 10)), ((25, 25), (12, 12)),
                                      ((12, 12), (25, 25)), ((25, 14), (12, 7)), ((9, 9), None)])
def test_spectral_output_sizes_including_odd(size, out):
    layer = SpectralConv2d(2, 3, 2, 2)
    x = torch.randn(2, 2, *size, requires_grad=True)
    y = layer(x, out_size=out)
    assert y.shape == (2, 3, *(out or size))
    y.square().sum().backward()
    assert layer.weights1.grad.abs().sum() > 0 and layer.weights2.grad.abs().sum() > 0


@pytest.mark.parametrize("size,out", [((7, 16), None), ((16, 4), None), ((16, 16), (6, 16))])
def test_spectral_rejects_grids_too_small_for_modes(size, out):
    layer = SpectralConv2d(1, 1, 4, 4)
    with pytest.raises(ValueError, match="too small for modes"):
        layer(torch.randn(1, 1, *size), out_size=out)


def test_spectral_keeps_low_precision_dtype():
    layer = SpectralConv2d(2, 2, 3, 3)
    y = layer(torch.randn(1, 2, 12, 12, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


# --- dual conv and block -------------------------------------------------------


def test_dualconv_modes_pick_branches_and_sum():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 16, 16)
    dual = DualConv(4, 5, 3, modes1=4, modes2=3, mode="dual")
    assert dual.spatial_conv is not None and dual.spectral_conv is not None
    with torch.no_grad():
        assert torch.allclose(dual(x), dual.spatial_conv(x) + dual.spectral_conv(x), atol=1e-6)
    assert DualConv(4, 5, 3, mode="spatial").spectral_conv is None
    spec = DualConv(4, 5, 3, modes1=4, modes2=3, mode="spectral")
    assert spec.spatial_conv is None and spec(x).shape == (2, 5, 16, 16)
    with pytest.raises(ValueError, match="needs modes1"):
        DualConv(4, 5, 3, mode="dual")


@pytest.mark.parametrize("mode", ["spatial", "spectral", "dual"])
def test_dualconv_resampling_sizes_agree_between_branches(mode):
    down = DualConv(2, 3, 3, modes1=2, modes2=2, mode=mode, down=True)
    up = DualConv(3, 2, 3, modes1=2, modes2=2, mode=mode, up=True)
    x = torch.randn(1, 2, 25, 10)
    h = down(x)
    assert h.shape[-2:] == (12, 5)
    assert up(h, out_size=(25, 10)).shape[-2:] == (25, 10)
    assert up(h).shape[-2:] == (24, 10)


def test_block_skip_attention_and_odd_resampling():
    torch.manual_seed(0)
    kw = dict(emb_channels=8, modes1=2, modes2=2, mode="dual", resample_proj=True)
    emb = torch.randn(2, 8)
    same = DualUNetBlock(8, 8, **kw)
    assert same.skip is None and not hasattr(same, "qkv")
    wider = DualUNetBlock(8, 16, attention=True, **kw)
    assert wider.skip.weight.shape == (16, 8, 1, 1) and wider.qkv.weight.shape == (48, 16, 1, 1)
    down = DualUNetBlock(8, 8, down=True, **kw)
    up = DualUNetBlock(8, 8, up=True, **kw)
    x = torch.randn(2, 8, 10, 10)
    h = down(x, emb)
    assert h.shape == (2, 8, 5, 5)
    assert up(h, emb, out_size=(10, 10)).shape == (2, 8, 10, 10)
    assert up(down(torch.randn(2, 8, 11, 11), emb), emb, out_size=(11, 11)).shape == (2, 8, 11, 11)
    y = wider(x, emb)
    assert y.shape == (2, 16, 10, 10) and torch.isfinite(y).all()


class _OutOfPlace(torch.overrides.TorchFunctionMode):
    """Runs ``Tensor.add_`` / ``mul_`` as ``torch.add`` / ``torch.mul``: the layers' sums as they were
    before they went in place (a new tensor each, with type promotion)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        func = {torch.Tensor.add_: torch.add, torch.Tensor.mul_: torch.mul}.get(func, func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("mode", ["spatial", "dual"])
def test_block_in_place_sums_change_nothing(mode, autocast):
    """The block's sums are in place (as EDM's): outputs, dtypes and gradients equal those of the
    same code with a new tensor per sum -- under bf16 autocast too, where a dual block mixes float32
    (conv + spectral) and bfloat16 (1x1 skip, attention projection) terms, and a sum into a bfloat16
    tensor would round what the out-of-place sum keeps in float32."""
    torch.manual_seed(0)
    block = DualUNetBlock(8, 16, emb_channels=8, modes1=2, modes2=2, mode=mode, attention=True,
                          init_zero=dict(init_weight=0.5))  # non-zero conv1/proj: every term counts
    x, emb = torch.randn(2, 8, 10, 10), torch.randn(2, 8)
    results = []
    for replay in (contextlib.nullcontext(), _OutOfPlace()):
        block.zero_grad(set_to_none=True)
        with replay, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = block(x, emb)
        y.float().square().sum().backward()
        results.append((y.detach(), [p.grad.clone() for p in block.parameters()]))
    (y_in, g_in), (y_out, g_out) = results
    assert y_in.dtype == y_out.dtype and torch.equal(y_in, y_out)
    assert all(torch.equal(a, b) for a, b in zip(g_in, g_out))


# --- the two computations of the spectral layer ---------------------------------


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("norm", ["backward", "forward", "ortho"])
@pytest.mark.parametrize("size,out", [((16, 16), None), ((32, 32), (16, 16)), ((12, 12), (25, 25)),
                                      ((25, 14), (12, 7)), ((16, 12), (16, 14)), ((14, 15), (28, 30))])
def test_dft_path_equals_the_reference_path(product, norm, size, out):
    """Matrix-product DFT over the kept modes == rfft2 / zero-filled spectrum / irfft2,
    forward and gradients, including the Nyquist column (modes2 = W//2 + 1 at 12 and 14 px)."""
    torch.manual_seed(0)
    layer = SpectralConv2d(3, 2, 4, 7 if size[1] >= 12 and (out or size)[1] >= 12 else 2,
                           norm=norm, product=product).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for impl in ("reference", "dft"):
        layer.impl = impl
        y = layer(x, out_size=out)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
        outs.append(y.detach())
        grads.append([t.grad.clone() for t in (x, layer.weights1, layer.weights2)])
        x.grad = layer.weights1.grad = layer.weights2.grad = None
    assert (outs[0] - outs[1]).abs().max() < 1e-12
    for a, b in zip(*grads):
        assert (a - b).abs().max() < 1e-12


def test_dft_path_in_float32_is_within_1e_6_of_the_reference():
    torch.manual_seed(1)
    layer = SpectralConv2d(16, 16, 8, 5)
    x = torch.randn(4, 16, 32, 32)
    with torch.no_grad():
        layer.impl = "reference"
        ref = layer(x)
        layer.impl = "dft"
        assert (layer(x) - ref).abs().max() < 1e-6 * max(1.0, ref.abs().max().item())


def test_spectral_layer_compiles_without_graph_breaks():
    """No complex tensors on the default path, so dynamo captures the layer in one graph."""
    import torch._dynamo

    layer = SpectralConv2d(3, 2, 4, 3)
    explanation = torch._dynamo.explain(layer)(torch.randn(2, 3, 16, 16))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("up,down", [(False, False), (True, False), (False, True)])
def test_dualconv_fused_sum_equals_the_reference(product, up, down):
    """DualConv hands the spatial output to the spectral layer, which adds it inside its last
    matrix product: outputs and every gradient equal to the plain sum with the reference layer."""
    torch.manual_seed(0)
    conv = DualConv(3, 4, 3, modes1=3, modes2=3, up=up, down=down, spectral_product=product).double()
    x = torch.randn(2, 3, 13, 12, dtype=torch.float64, requires_grad=True)
    size = (26, 24) if up else None
    results = []
    for impl in ("reference", "dft"):
        conv.spectral_conv.impl = impl
        y = conv(x, out_size=size)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
        results.append([y.detach()] + [t.grad.clone() for t in (x, *conv.parameters())])
        x.grad = None
        conv.zero_grad(set_to_none=True)
    for a, b in zip(*results):
        assert (a - b).abs().max() < 1e-12


def test_spectral_weights_are_stored_mode_major_and_their_gradients_too():
    """The authors' shape (I, O, m1, m2, 2), laid out (2, m1, m2, I, O) in memory so that the
    per-mode GEMM reads a view; gradients come back in the same layout (no copy by autograd)
    and a weight in the ordinary layout (load_state_dict(assign=True)) gives the same result."""
    torch.manual_seed(0)
    layer = SpectralConv2d(4, 6, 3, 2)
    for w in (layer.weights1, layer.weights2):
        assert w.shape == (4, 6, 3, 2, 2) and w.permute(4, 2, 3, 0, 1).is_contiguous()
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    y = layer(x)
    y.square().sum().backward()
    assert layer.weights1.grad.stride() == layer.weights1.stride()
    grads = [layer.weights1.grad.clone(), layer.weights2.grad.clone(), x.grad.clone()]
    plain = SpectralConv2d(4, 6, 3, 2)
    plain.load_state_dict({k: v.contiguous() for k, v in layer.state_dict().items()}, assign=True)
    assert plain.weights1.is_contiguous()
    x.grad = None
    y2 = plain(x)
    y2.square().sum().backward()
    assert torch.allclose(y, y2, atol=1e-6)
    for a, b in zip(grads, [plain.weights1.grad, plain.weights2.grad, x.grad]):
        assert torch.allclose(a, b, atol=1e-5)


def test_dualconv_without_resampling_is_one_autograd_node_and_falls_back_otherwise():
    torch.manual_seed(0)
    conv = DualConv(3, 4, 3, modes1=3, modes2=2)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert type(conv(x).grad_fn).__name__ == "_DualConvDFTBackward"
    conv.spectral_conv.impl = "reference"
    assert type(conv(x).grad_fn).__name__ == "AddBackward0"
    conv.spectral_conv.impl = "dft"
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the spatial conv runs in bf16: two nodes, summed
        y = conv(x)
    assert y.dtype == torch.float32 and type(y.grad_fn).__name__ == "AddBackward0"


def test_whole_dfu_default_path_equals_the_reference_layer():
    """DualUNet in float64 (EDMPrecond would cast to float32), training mode: output and every
    parameter's gradient with the fast spectral path equal those with the reference layer
    (fused DualConvs, resampling blocks, an odd size)."""
    from models.networks import DualUNet, get_arch

    torch.manual_seed(0)
    net = DualUNet(get_arch("cpu-tiny")).double().train()
    x = torch.randn(2, 3, 20, 20, dtype=torch.float64)
    sigma = torch.tensor([-0.3, 0.5], dtype=torch.float64)
    results = []
    for impl in ("reference", "dft"):
        for m in net.modules():
            if isinstance(m, SpectralConv2d):
                m.impl = impl
        net.zero_grad(set_to_none=True)
        y = net(x, sigma)
        y.square().mean().backward()
        results.append((y.detach(), {n: p.grad for n, p in net.named_parameters() if p.grad is not None}))
    (y_ref, g_ref), (y_fast, g_fast) = results
    assert (y_ref - y_fast).abs().max() < 1e-12
    assert g_ref.keys() == g_fast.keys() and any("spectral" in n for n in g_ref)
    for name in g_ref:
        assert (g_ref[name] - g_fast[name]).abs().max() < 1e-10, name
