"""Tests for models/networks.py: exact parameter counts against the authors' logs,
which convs are spectral, the config API, the resolution rule, and forward/backward
over a sweep of resolutions."""

import json

import pytest
import torch

from models.layers import SpectralConv2d
from models.networks import (
    ARCHS,
    ArchConfig,
    DualUNet,
    count_parameters,
    get_arch,
    level_sizes,
    min_resolution,
    parameter_breakdown,
    resolution_problem,
    valid_resolutions,
)

def meta_net(name, **overrides) -> DualUNet:
    with torch.device("meta"):  # a 630M-parameter model allocates nothing here
        return DualUNet(get_arch(name, **overrides))


pytestmark = pytest.mark.usefixtures("one_thread")


# --- exact parameter counts ----------------------------------------------------

# Totals printed by the authors' training logs (Dahoas/edm ffhq-training-runs/00066 and
# 00084, both trained with augment_dim=9) and the spatial-only UNet of the same shape.
@pytest.mark.parametrize("name,mode,augment_dim,expected", [
    ("paper-small", "dual", 0, 630_574_979),
    ("paper-small", "spatial", 0, 61_804_419),
    ("paper-small", "dual", 9, 630_576_131),
    ("paper-small", "spatial", 9, 61_805_571),
    ("paper-large", "dual", 9, 2_248_364_035),
])
def test_paper_parameter_counts_are_exact(name, mode, augment_dim, expected):
    assert count_parameters(meta_net(name, mode=mode, augment_dim=augment_dim)) == expected


def test_paper_small_per_module_counts_match_authors_log():
    # A few rows of the authors' module summary (run 00066): they pin which convs are
    # dual and which modes each block uses, not just the total.
    net = meta_net("paper-small")
    expected = {
        ("enc", "0_conv"): 224_768, ("enc", "1_down"): 5_620_736, ("enc", "1_block0"): 16_779_008,
        ("enc", "2_block0"): 7_867_648, ("enc", "3_down"): 1_378_304, ("dec", "3_in0"): 1_576_192,
        ("dec", "2_up"): 1_378_304, ("dec", "2_block4"): 11_735_040, ("dec", "1_up"): 7_669_760,
        ("dec", "1_block4"): 27_920_640, ("dec", "0_up"): 22_349_824, ("dec", "0_block0"): 38_454_784,
        ("dec", "0_aux_conv"): 224_643,
    }
    for (part, key), n in expected.items():
        assert count_parameters(getattr(net, part)[key]) == n, key


def test_spectral_placement_and_modes_per_level():
    net = meta_net("paper-small")
    sd = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sd["enc.0_conv.spectral_conv.weights1"] == (3, 128, 16, 9, 2)
    assert sd["enc.2_down.conv0.spectral_conv.weights2"] == (256, 256, 4, 3, 2)
    # Decoder up blocks carry the modes of the level they come from.
    assert sd["dec.0_up.conv0.spectral_conv.weights1"] == (256, 256, 8, 5, 2)
    assert sd["dec.1_up.conv1.spectral_conv.weights1"] == (256, 256, 4, 3, 2)
    assert not any(k.startswith(("dec.2_up.", "enc.3_", "dec.3_")) and "spectral" in k for k in sd)
    assert sd["dec.0_aux_conv.spectral_conv.weights1"] == (128, 3, 16, 9, 2)
    # Skip projections and attention stay spatial.
    assert not any(("skip" in k or "qkv" in k or "proj" in k) and "spectral" in k for k in sd)


def test_parameter_breakdown_splits_spectral_from_spatial():
    dfu = parameter_breakdown(meta_net("paper-small", augment_dim=0))
    unet = count_parameters(meta_net("paper-small", augment_dim=0, mode="spatial"))
    assert dfu["total"] == dfu["spectral"] + dfu["spatial"]
    assert dfu["spatial"] == unet and dfu["spectral"] == 630_574_979 - 61_804_419


def test_spectral_mode_is_spectral_only_everywhere():
    net = DualUNet(get_arch("cpu-tiny", mode="spectral"))
    convs = [m for m in net.modules() if hasattr(m, "spectral_conv")]
    assert convs and all(m.spatial_conv is None and m.spectral_conv is not None for m in convs)
    assert not any(isinstance(m, SpectralConv2d) for m in DualUNet(get_arch("cpu-tiny", mode="spatial")).modules())


# --- config API ----------------------------------------------------------------


def test_arch_config_json_roundtrip_replace_and_unknown_keys():
    cfg = ARCHS["paper-small"]
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["modes1"] == [16, 8, 4, None]
    assert ArchConfig.from_dict(data) == cfg and hash(ArchConfig.from_dict(data)) == hash(cfg)
    assert cfg.replace(mode="spatial").mode == "spatial" and cfg.mode == "dual"
    with pytest.raises(ValueError, match="bogus"):
        ArchConfig.from_dict({**data, "bogus": 1})
    with pytest.raises(ValueError, match="bogus"):
        cfg.replace(bogus=1)
    with pytest.raises(Exception):
        cfg.mode = "spatial"  # frozen


@pytest.mark.parametrize("changes,match", [
    (dict(mode="fourier"), "mode"),
    (dict(modes1=(16, 8, 4)), "one entry per level"),
    (dict(dual_block_thresh=3), "level 3 is spectral"),
    (dict(mode="spectral"), "level 3 is spectral"),
    (dict(attn_levels=(4,)), "attn_levels"),
    (dict(fft_norm="none"), "fft_norm"),
])
def test_arch_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        ARCHS["paper-small"].replace(**changes)


def test_get_arch():
    assert get_arch("cpu-tiny") is ARCHS["cpu-tiny"]
    assert get_arch(ARCHS["cpu-tiny"], num_blocks=2).num_blocks == 2
    with pytest.raises(ValueError, match="cpu-tiny"):
        get_arch("nope")


# --- resolution rule -----------------------------------------------------------


def test_resolution_problem_rejects_and_accepts():
    assert min_resolution("paper-small") == 32 and min_resolution("paper-large") == 64
    assert min_resolution("cpu-tiny") == 16
    for ok in (32, 48, 96, 160, 196):  # 196: the authors' LSUN grid (196 -> 98 -> 49 -> 24)
        assert resolution_problem("paper-small", ok) is None
    for ok in (96, 112, 144, 160):  # paper-large's training set includes 112 and 144
        assert resolution_problem("paper-large", ok) is None
    small = resolution_problem("paper-small", 24)
    assert "too small" in small and "32" in small and "level 0" in small
    tiny = resolution_problem("cpu-tiny", 12)
    assert "too small" in tiny and "16" in tiny
    # Strict: a clean 2x pyramid, no row dropped by an odd downsampling step.
    strict = resolution_problem("cpu-tiny", 30, strict=True)
    assert "not divisible by 8" in strict and "32" in strict and "cpu-tiny" in strict
    assert resolution_problem("cpu-tiny", 32, strict=True) is None
    assert resolution_problem("paper-small", 196, strict=True) is not None
    assert resolution_problem("cpu-tiny", 0) is not None and resolution_problem("cpu-tiny", 16.0) is not None
    # A spatial-only network has no mode constraint, only the pyramid depth.
    assert resolution_problem(get_arch("cpu-tiny", mode="spatial"), 8) is None
    assert resolution_problem(get_arch("cpu-tiny", mode="spatial"), 7) is not None
    # The coarsest level binds when it is spectral: 3 row modes need 6 rows at R/8.
    assert min_resolution(get_arch("cpu-tiny", mode="spectral", modes1=(2, 2, 2, 3))) == 48


def test_valid_resolutions_and_level_sizes():
    assert valid_resolutions("cpu-tiny", 10, 20) == list(range(16, 21))
    assert valid_resolutions("cpu-tiny", 10, 40, strict=True) == [16, 24, 32, 40]
    assert level_sizes(ARCHS["paper-small"], (196, 196)) == [(196, 196), (98, 98), (49, 49), (24, 24)]


def test_forward_rejects_a_too_small_input():
    net = DualUNet("cpu-tiny")
    with pytest.raises(ValueError, match="too coarse"):
        net(torch.randn(1, 3, 12, 12), torch.zeros(1))


# --- forward / backward over resolutions ----------------------------------------

SWEEP = [r for r in range(16, 193, 8) if resolution_problem("cpu-tiny", r) is None]


def test_sweep_covers_the_grid():
    assert SWEEP == list(range(16, 193, 8))


def _check_forward_backward(net, resolution, batch=1):
    x = torch.randn(batch, 3, resolution, resolution, requires_grad=True)
    y = net(x, torch.randn(batch))
    assert y.shape == x.shape
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_dual_forward_backward_every_admitted_resolution():
    torch.manual_seed(0)
    net = DualUNet("cpu-tiny")
    # The sweep has odd grids (40 -> 20 -> 10 -> 5 and back, 56 -> ... -> 7); 50 -> 25 -> 12 -> 6
    # and 33 -> 16 -> 8 -> 4 floor on the way down and are restored exactly on the way up.
    assert any(r // 8 % 2 for r in SWEEP)
    for resolution in [*SWEEP, 50, 33]:
        net.zero_grad()
        _check_forward_backward(net, resolution)
    # Gradients reach the spectral weights at every spectral level.
    for m in net.modules():
        if isinstance(m, SpectralConv2d):
            assert m.weights1.grad is not None and m.weights1.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["spatial", "spectral"])
def test_other_modes_forward_backward(mode):
    torch.manual_seed(0)
    net = DualUNet(get_arch("cpu-tiny", mode=mode))
    for resolution in (16, 40, 50):
        _check_forward_backward(net, resolution, batch=2)


def test_class_and_augment_conditioning():
    torch.manual_seed(0)
    arch = get_arch("cpu-tiny", label_dim=4, augment_dim=9)
    net = DualUNet(arch)
    x = torch.randn(2, 3, 40, 40)
    labels = torch.nn.functional.one_hot(torch.tensor([0, 3]), 4).float()
    y = net(x, torch.randn(2), class_labels=labels, augment_labels=torch.randn(2, 9))
    assert y.shape == x.shape
    y.mean().backward()
    assert net.map_augment.weight.grad.abs().sum() > 0 and net.map_label.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="class_labels"):
        net(x, torch.randn(2))
