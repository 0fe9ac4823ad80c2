"""EDM's geometric augmentation with conditioning labels (Karras et al. 2022, App. F.2).

With probability p per transform and image, the training image is x/y-flipped,
isotropically scaled, rotated, anisotropically scaled and translated; the random
parameters go to the network as a 9-dim `augment_labels` vector, so it learns to
undo nothing and generates un-augmented images when the labels are zero (as at
sampling time). The authors trained DFU with p = 0.12 and this set of transforms.

Same distributions and label encoding as EDM's pipe: xflip and yflip as 0/1,
the scale draw w (s = 2^(0.2 w)), cos(theta) - 1 and sin(theta) of the rotation,
w cos(r) and w sin(r) of the anisotropic scaling, and the two translation draws
(in units of 0.125 x the image size). One difference, documented: the image is
resampled with bilinear `grid_sample` on a reflection-padded grid, where EDM
resamples a 2x-upsampled (sym6 wavelet) image; the transforms and labels are the
same, the interpolation filter is not.

Sign conventions follow EDM's output, not just its labels: a label
(cos theta - 1, sin theta) rotates the image by -theta in (x right, y down)
coordinates, and the anisotropic axis turns the same way; both are checked
against images made by EDM's own pipe (tests/test_augment_oracle.py). EDM's
anisotropy label (w cos phi, w sin phi) does not fix the sign of w: (w, phi) and
(-w, phi + pi) give the same label and different images. We draw and apply as
EDM does, so the ambiguity is EDM's, reproduced, not resolved.

Parameters are drawn for a whole global batch from one generator (`draw`) and
applied to any slice of it (`apply`), so micro-batches and DDP ranks see exactly
the augmentation of the full batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LABEL_DIM = 9


@dataclass(frozen=True)
class AugmentPipe:
    p: float = 0.12
    scale_std: float = 0.2  # log2
    aniso_std: float = 0.2  # log2
    aniso_rotate_prob: float = 0.5
    translate_std: float = 0.125  # fraction of the image size

    def draw(self, n: int, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
        """Random parameters for n images (each transform applied with probability p)."""
        def rand(*shape):
            return torch.rand(shape, generator=generator, device=device)

        def randn(*shape):
            return torch.randn(shape, generator=generator, device=device)

        def gate(w):
            on = rand(*w.shape[-1:]) < self.p
            return torch.where(on, w, torch.zeros_like(w))

        xflip = torch.where(rand(n) < 0.5, 1.0, 0.0)  # EDM's xflip multiplier is 1e8: always a coin flip
        yflip = gate(torch.where(rand(n) < 0.5, 1.0, 0.0))
        scale = gate(randn(n))
        theta = gate((rand(n) * 2 - 1) * math.pi)
        aniso = gate(randn(n))
        phi = (rand(n) * 2 - 1) * math.pi
        phi = torch.where(rand(n) < self.aniso_rotate_prob, phi, torch.zeros_like(phi))
        shift = randn(2, n)
        shift = torch.where(rand(n) < self.p, shift, torch.zeros_like(shift))
        return {"xflip": xflip, "yflip": yflip, "scale": scale, "theta": theta, "aniso": aniso, "phi": phi,
                "tx": shift[0], "ty": shift[1]}

    @staticmethod
    def labels(par: dict[str, torch.Tensor]) -> torch.Tensor:
        """The 9-dim conditioning vector, in EDM's order."""
        return torch.stack([par["xflip"], par["yflip"], par["scale"], par["theta"].cos() - 1, par["theta"].sin(),
                            par["aniso"] * par["phi"].cos(), par["aniso"] * par["phi"].sin(),
                            par["tx"], par["ty"]], dim=1)

    def apply(self, images: torch.Tensor, par: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented images (N, C, H, W) and their labels (N, 9)."""
        n, _, h, w = images.shape
        par = {k: v.to(images.device, images.dtype) for k, v in par.items()}
        x = torch.where(par["xflip"].view(n, 1, 1, 1) > 0, images.flip(3), images)
        x = torch.where(par["yflip"].view(n, 1, 1, 1) > 0, x.flip(2), x)
        # forward map in normalised coordinates (image centre at 0, half-size 1, y down):
        # scale, rotate by -theta, anisotropic scale along the axis at angle -phi, translate.
        # The signs are EDM's: its pipe builds the inverse map from rotate2d_inv(-theta)
        # and rotate2d_inv(phi) @ scale2d_inv(a, 1/a) @ rotate2d_inv(-phi), so the forward
        # rotation is by -theta (checked against EDM's own output, tests/test_augment_oracle.py)
        s = torch.exp2(par["scale"] * self.scale_std)
        a = torch.exp2(par["aniso"] * self.aniso_std)

        def rot(t):
            c, si = t.cos(), t.sin()
            return torch.stack([torch.stack([c, -si], -1), torch.stack([si, c], -1)], -2)

        def diag(u, v):
            z = torch.zeros_like(u)
            return torch.stack([torch.stack([u, z], -1), torch.stack([z, v], -1)], -2)

        m = rot(-par["phi"]) @ diag(a, 1 / a) @ rot(par["phi"]) @ rot(-par["theta"]) @ diag(s, s)
        t = torch.stack([par["tx"] * self.translate_std * 2, par["ty"] * self.translate_std * 2], -1)
        # grid_sample wants the inverse map: output coordinate -> input coordinate
        inv = torch.linalg.inv(m)
        theta_mat = torch.cat([inv, -(inv @ t.unsqueeze(-1))], dim=-1)
        identity = (par["scale"] == 0) & (par["theta"] == 0) & (par["aniso"] == 0) & (par["tx"] == 0) & (par["ty"] == 0)
        if bool(identity.all()):
            return x, self.labels(par)
        grid = F.affine_grid(theta_mat, [n, x.shape[1], h, w], align_corners=False)
        y = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        y = torch.where(identity.view(n, 1, 1, 1), x, y)  # untouched images stay bit-exact
        return y, self.labels(par)
