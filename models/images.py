"""Pixels in and out of the networks: EDM's uint8 rounding rule and the bilinear resize.

Light on purpose (torch and numpy, no network code), so data code that needs
the rounding rule -- `bench data prepare`, the datasets -- imports this module
without loading the networks. Both functions take and return NHWC uint8 images
as the harness stores them, except `to_uint8`, which takes the networks' NCHW floats.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_uint8(images_float_nchw: torch.Tensor | np.ndarray) -> np.ndarray:
    """Nx3xHxW floats in [-1, 1] -> NxHxWx3 uint8, rounding exactly as EDM's generate.py."""
    x = torch.as_tensor(images_float_nchw)
    if x.ndim != 4:
        raise ValueError(f"expected an Nx3xHxW tensor, got shape {tuple(x.shape)}")
    return (x * 127.5 + 128).clip(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def resize_bilinear(images: np.ndarray, resolution: int) -> np.ndarray:
    """NxHxWx3 uint8 -> NxRxRx3 uint8, bilinear (Fig. 5's baseline and mixed fine-tuning's data)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    # antialias only matters when shrinking; upsampling is plain bilinear
    y = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                      antialias=resolution < images.shape[1])
    return y.round().clip(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
