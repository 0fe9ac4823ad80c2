"""Tests for models/edm.py: preconditioning coefficients, the loss, the noise
schedule and the Heun sampler (evaluation count and accuracy on Gaussian data)."""

import math

import pytest
import torch
from torch import nn

from models.edm import EDMPrecond, edm_loss, edm_sigma_steps, heun_sample
from models.networks import DualUNet


pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(nn.Module):
    """Raw network F that records its inputs and returns a constant."""

    def __init__(self, value: float = 0.0):
        super().__init__()
        self.value = value
        self.calls = []

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        self.calls.append((x.clone(), noise_labels.clone()))
        return torch.full_like(x, self.value)


def test_precond_coefficients_follow_edm_formulas():
    sd = 0.5
    sigma = torch.tensor([0.002, 0.5, 3.0, 80.0])
    x = torch.randn(4, 3, 8, 8)
    raw = Recorder(value=1.0)
    D = EDMPrecond(raw, sigma_data=sd)(x, sigma)
    s = sigma.double().reshape(-1, 1, 1, 1)
    c_skip = sd ** 2 / (s ** 2 + sd ** 2)
    c_out = s * sd / (s ** 2 + sd ** 2).sqrt()
    c_in = 1 / (sd ** 2 + s ** 2).sqrt()
    # F == 1, so D = c_skip x + c_out.
    assert torch.allclose(D.double(), c_skip * x.double() + c_out, rtol=1e-5, atol=1e-6)
    net_x, net_noise = raw.calls[0]
    assert torch.allclose(net_x.double(), c_in * x.double(), rtol=1e-5)
    assert torch.allclose(net_noise.double(), sigma.double().log() / 4, rtol=1e-5)
    assert D.dtype == torch.float32


def test_precond_limits_and_broadcast_sigma():
    x = torch.randn(2, 3, 4, 4)
    precond = EDMPrecond(Recorder(value=0.0))
    # F == 0: D = c_skip x, which is ~x for tiny sigma and ~0 for huge sigma.
    assert torch.allclose(precond(x, 1e-4), x, atol=1e-6)
    assert precond(x, 1e4).abs().max() < 1e-6
    # A Python float, a 0-d tensor and a (B,) tensor give the same result.
    a, b, c = precond(x, 0.7), precond(x, torch.tensor(0.7)), precond(x, torch.full((2,), 0.7))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert precond.model.calls[-1][1].shape == (2,)


def test_coefficients_satisfy_edm_design_conditions():
    # EDM derives c_in from unit input variance, c_in^2 (sd^2 + sigma^2) = 1, and c_skip,
    # c_out from unit target variance, which implies c_skip + c_out^2 / sd^2 = 1.
    precond = EDMPrecond(Recorder())
    sigma = torch.logspace(-3, 2, 11)
    c_skip, c_out, c_in, _ = precond.coefficients(sigma)
    sd = precond.sigma_data
    assert torch.allclose(c_in ** 2 * (sd ** 2 + sigma ** 2), torch.ones_like(sigma))
    assert torch.allclose(c_skip + c_out ** 2 / sd ** 2, torch.ones_like(sigma))


def test_loss_matches_hand_computation_and_is_seeded():
    images = torch.randn(4, 3, 8, 8) * 0.5
    precond = EDMPrecond(Recorder(value=0.0))
    loss = edm_loss(precond, images, generator=torch.Generator().manual_seed(1))
    assert loss.shape == (4,)
    # Redraw the same sigma and noise to compute the expected value by hand.
    g = torch.Generator().manual_seed(1)
    sigma = (torch.randn([4, 1, 1, 1], generator=g) * 1.2 - 1.2).exp()
    n = torch.randn(images.shape, generator=g) * sigma
    weight = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    D = 0.25 / (sigma ** 2 + 0.25) * (images + n)  # c_skip * y_noisy since F == 0
    expected = (weight * (D - images) ** 2).sum(dim=(1, 2, 3))
    assert torch.allclose(loss, expected, rtol=1e-5)
    again = edm_loss(precond, images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loss, again)


def test_loss_sigma_distribution():
    seen = []

    def denoiser(x, sigma, class_labels=None, augment_labels=None):
        seen.append(sigma)
        return x

    edm_loss(denoiser, torch.zeros(20000, 1, 1, 1), generator=torch.Generator().manual_seed(0), sigma_data=0.5)
    log_sigma = seen[0].log()
    assert abs(log_sigma.mean().item() + 1.2) < 0.05 and abs(log_sigma.std().item() - 1.2) < 0.05


def test_sigma_steps():
    t = edm_sigma_steps()
    assert t.shape == (19,) and t.dtype == torch.float64
    assert t[0].item() == pytest.approx(80.0) and t[17].item() == pytest.approx(0.002) and t[18] == 0
    assert (t[:-1] > t[1:]).all()
    i = 9
    expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert t[i].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("num_steps,evals", [(18, 35), (5, 9), (1, 1)])
def test_heun_evaluation_count(num_steps, evals):
    sigmas = []

    def denoiser(x, sigma, class_labels=None):
        sigmas.append(sigma[0].item())
        return torch.zeros_like(x)

    heun_sample(denoiser, torch.randn(2, 3, 4, 4), num_steps=num_steps)
    assert len(sigmas) == evals
    assert sigmas[0] == pytest.approx(80.0)
    assert min(sigmas) > 0  # never evaluated at sigma = 0


def test_heun_solves_the_gaussian_probability_flow_ode_at_second_order():
    """For data ~ N(0, s^2 I) the ideal denoiser is x s^2/(s^2+sigma^2) and the ODE maps
    x(sigma_max) to x(0) = x(sigma_max) s / sqrt(s^2 + sigma_max^2). Heun must get close,
    and doubling the steps must cut the error ~4x (Euler alone would only halve it)."""
    s = 0.5

    def denoiser(x, sigma, class_labels=None):
        sigma = sigma.reshape(-1, 1, 1, 1)
        return x * s ** 2 / (s ** 2 + sigma ** 2)

    latents = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    exact = latents * 80 * s / math.sqrt(s ** 2 + 80 ** 2)

    def rel_error(num_steps):
        out = heun_sample(denoiser, latents, num_steps=num_steps)
        assert out.dtype == torch.float32 and not out.requires_grad
        return ((out - exact).abs().max() / exact.abs().max()).item()

    e18, e36, e72 = rel_error(18), rel_error(36), rel_error(72)
    assert e18 < 0.08
    assert e18 / e36 > 3.5 and e36 / e72 > 3.5


def test_heun_end_to_end_with_dual_unet_is_deterministic():
    torch.manual_seed(0)
    denoiser = EDMPrecond(DualUNet("cpu-tiny")).eval()
    latents = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    a = heun_sample(denoiser, latents, num_steps=2)
    b = heun_sample(denoiser, latents, num_steps=2)
    assert a.shape == latents.shape and torch.isfinite(a).all() and torch.equal(a, b)
