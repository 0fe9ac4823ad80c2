"""EDM diffusion around the network (Karras et al. 2022), as DFU uses it unchanged.

* ``EDMPrecond``: the denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).
* ``edm_loss``: the weighted denoising loss with ln sigma ~ N(P_mean, P_std^2).
* ``edm_sigma_steps`` / ``heun_sample``: the deterministic 2nd-order Heun sampler
  (EDM Algorithm 1, no churn): 18 steps = 35 network evaluations.

Sampling at another resolution only needs latents of that size; the network
handles the rest.
"""

from __future__ import annotations

import torch
from torch import nn


class EDMPrecond(nn.Module):
    """Preconditioned denoiser D(x; sigma) wrapping a raw network F(x, c_noise, ...).

    ``sigma`` is anything broadcastable to the batch: a float, a 0-d tensor or (B,).
    The network runs in float32; the output is float32.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.model = net  # attribute name matches EDM/authors' state-dict keys ("model.enc...")
        self.sigma_data = sigma_data

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in, c_noise) for ``sigma`` (EDM Table 1)."""
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: torch.Tensor, sigma, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
        sigma = sigma.expand(x.shape[0], 1, 1, 1)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        F_x = self.model(c_in * x, c_noise.flatten(), class_labels=class_labels, augment_labels=augment_labels)
        return c_skip * x + c_out * F_x.to(torch.float32)


def edm_loss(denoiser: nn.Module, images: torch.Tensor, generator: torch.Generator | None = None,
             class_labels: torch.Tensor | None = None, augment_labels: torch.Tensor | None = None,
             P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float | None = None,
             rnd_normal: torch.Tensor | None = None, unit_noise: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample EDM loss, shape (B,): lambda(sigma) * ||D(y + n; sigma) - y||^2.

    The squared error is summed over channels and pixels, so ``loss.mean()`` equals
    EDM's ``loss.sum() / batch`` (the authors' training objective; note that it grows
    with pixel count, so a 96^2 batch weighs ~9x a 32^2 one). ``images`` are the
    (already augmented) clean images y; ``generator`` (on ``images.device``) makes sigma
    and noise reproducible. ``rnd_normal`` (B,1,1,1) and ``unit_noise`` (like images)
    may be drawn by the caller instead, so that a batch split into micro-batches sees
    exactly the draws of the whole batch.
    """
    sd = sigma_data if sigma_data is not None else getattr(denoiser, "sigma_data", 0.5)
    b = images.shape[0]
    if rnd_normal is None:
        rnd_normal = torch.randn([b, 1, 1, 1], generator=generator, device=images.device)
    sigma = (rnd_normal * P_std + P_mean).exp()
    weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    if unit_noise is None:
        unit_noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    n = unit_noise * sigma
    D_yn = denoiser(images + n, sigma.flatten(), class_labels=class_labels, augment_labels=augment_labels)
    return (weight * (D_yn - images) ** 2).flatten(1).sum(dim=1)


def edm_sigma_steps(num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Noise levels t_0 > ... > t_{N-1} = sigma_min, then t_N = 0 (float64, N+1 entries).

    t_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    frac = i / max(num_steps - 1, 1)
    t = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros_like(t[:1])])


@torch.no_grad()
def heun_sample(denoiser: nn.Module, latents: torch.Tensor, num_steps: int = 18, sigma_min: float = 0.002,
                sigma_max: float = 80.0, rho: float = 7.0, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Deterministic Heun sampler (EDM Alg. 1, S_churn = 0).

    ``latents`` ~ N(0, I) of the wanted size (the caller seeds them per sample).
    ``denoiser(x, sigma, class_labels=...)`` gets float32 x and sigma of shape (B,).
    Euler step from t_i to t_{i+1}, corrected by the trapezoid rule except on the
    last step (t_N = 0): 2N - 1 denoiser calls. Returns float32 images, nominally in
    [-1, 1], unclipped. The ODE state is kept in float64 as EDM does.
    """
    t_steps = edm_sigma_steps(num_steps, sigma_min, sigma_max, rho, device=latents.device)
    b = latents.shape[0]

    def D(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = t.to(torch.float32).expand(b)
        return denoiser(x.to(torch.float32), sigma, class_labels=class_labels).to(torch.float64)

    x_next = latents.to(torch.float64) * t_steps[0]
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        d_cur = (x_cur - D(x_cur, t_cur)) / t_cur
        x_next = x_cur + (t_next - t_cur) * d_cur
        if i < num_steps - 1:
            d_prime = (x_next - D(x_next, t_next)) / t_next
            x_next = x_cur + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next.to(torch.float32)
