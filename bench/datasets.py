"""Image datasets for the benchmark: the procedural `toyfaces` and real `imagefolder`s.

Every dataset answers the same question -- "image i at resolution r" -- so the
stages can train at 32-96 and compare samples against references at up to ~2x
that, from one definition of the data.

* `toyfaces` is a resolution-free picture: face i is a set of shapes on the
  continuous unit square, drawn with parameters from `default_rng([seed, i])`
  and rendered analytically with a one-pixel box filter, so image i at 32 and
  at 160 are the same picture sampled at two densities.  Fine details (pupils,
  highlights, eyelid and mouth lines, glasses) only resolve at high resolution,
  which is where zero-shot upscaling shows its failures (duplicated eyes,
  broken heads).
* `imagefolder` reads a folder or a .zip of images; each is converted to RGB,
  centre-cropped to a square (the shorter side is kept) and resized with one
  filter of RESIZE_FILTERS: `lanczos` (default; PIL's LANCZOS, as EDM's dataset
  tool made the FFHQ sets) or `bilinear-aa` (antialiased bilinear, as the
  authors' datasets/resize.py made their LSUN-Church sets).
* `prepared` reads what `bench data prepare` (bench/prepare.py) made from such a
  folder: the same pixels, resized once ahead of time and stored as PNG shards
  per resolution, so a 70,000-image dataset is not decoded and resized on
  every run.

`DATASETS` maps a kind to its constructor; `build_dataset(kind, **options)` is
the entry point the config uses.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import shlex
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from bench.errors import BenchError
from bench.grf import GRF
from bench.images import (IMAGE_EXTENSIONS, MAX_RESOLUTION, MIN_RESOLUTION, ImageFiles, check_index,
                          check_resolution, verify_image)
from bench.io import data_root
from bench.openmoji import OpenMoji

RESIZE_FILTER = "lanczos"  # the default filter

# Pixels rendered per vectorised step: large enough to amortise numpy's per-call
# overhead, small enough that the temporaries stay in cache.
_RENDER_CHUNK_PIXELS = 1 << 15


@runtime_checkable
class ImageDataset(Protocol):
    """What the stages need from a dataset: indexed square RGB images at any resolution."""

    name: str

    def __len__(self) -> int: ...

    def image(self, i: int, resolution: int) -> np.ndarray: ...  # HxWx3 uint8

    def images(self, indices: Sequence[int], resolution: int) -> np.ndarray: ...  # NxHxWx3 uint8

    def describe(self) -> dict: ...  # JSON-safe provenance


# ----------------------------------------------------------------------------
# toyfaces: analytic rendering
#
# Coverage is the one-pixel box filter applied across each edge: for a solid
# shape with signed distance d it is clip(0.5 - d/px, 0, 1); for a stroke it is
# the overlap of the pixel with the stroke's band.  Both conserve ink across
# resolutions, which is what makes a 160 render box-downsampled to 32 match the
# 32 render.  Only +, -, *, /, sqrt, min, max and clip touch pixels: these are
# correctly rounded in IEEE float64, so the bytes are the same on every machine
# and whatever the batch size.


def _fill(sdf, px):
    return np.clip(0.5 - sdf / px, 0.0, 1.0)


def _stroke(dist, half_width, px):
    # Overlap of [dist - px/2, dist + px/2] with [-hw, hw]: a sub-pixel line
    # fades instead of widening, so its total ink does not depend on px.
    lo = np.maximum(dist - 0.5 * px, -half_width)
    hi = np.minimum(dist + 0.5 * px, half_width)
    return np.clip((hi - lo) / px, 0.0, 1.0)


def _dot(dist_to_centre, radius, px):
    # A disk smaller than a pixel is drawn as a half-pixel disk with its ink
    # scaled down, so a highlight keeps its energy instead of growing to a pixel.
    r_eff = np.maximum(radius, 0.5 * px)
    return _fill(dist_to_centre - r_eff, px) * (radius / r_eff) ** 2


def _length(x, y):
    return np.sqrt(x * x + y * y)


def _ellipse_sdf(x, y, a, b):
    # First-order distance (|f| / |grad f| on the normalised radius), exact on the
    # boundary where the anti-aliasing needs it.  The tiny terms make the centre
    # read as -min(a, b) instead of 0/0.
    k0 = _length(x / a, y / b)
    k1 = _length(x / (a * a), y / (b * b))
    return (k0 - 1.0) * (k0 + 1e-12 * np.minimum(a, b)) / (k1 + 1e-12)


def _box_sdf(x, y, half_w, half_h):
    qx = np.abs(x) - half_w
    qy = np.abs(y) - half_h
    outside = _length(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _arc_dist(x, y, half_w, sag):
    """Unsigned distance to the circular arc through (+-half_w, 0) and (0, sag).

    sag > 0 bends the middle down (y grows downwards: a smile), sag < 0 up.
    """
    flip = np.where(sag < 0, -1.0, 1.0)
    s = np.maximum(np.abs(sag), 1e-4)
    radius = (half_w * half_w + s * s) / (2.0 * s)
    ax = np.abs(x)
    ay = y * flip
    qy = ay - (s - radius)  # relative to the circle's centre, above the arc
    on_arc = ax * (radius - s) <= qy * half_w  # inside the arc's wedge
    to_circle = np.abs(_length(ax, qy) - radius)
    to_end = _length(ax - half_w, ay)
    return np.where(on_arc, to_circle, to_end)


def _rotation(t):
    # Rational parametrisation of (cos, sin) of roughly 2t radians: an exact
    # rotation with no libm call, keeping rendering bit-reproducible.
    d = 1.0 + t * t
    return (1.0 - t * t) / d, 2.0 * t / d


def _over(img, alpha, colour):
    img += alpha[..., None] * (colour[:, None, None, :] - img)


def _palette(rows: list[list[float]]) -> np.ndarray:
    table = np.array(rows, dtype=np.float64)
    table.flags.writeable = False  # module constants stay constant
    return table


_SKIN = _palette([[0.98, 0.86, 0.76], [0.95, 0.78, 0.64], [0.87, 0.66, 0.50],
                  [0.74, 0.52, 0.37], [0.57, 0.39, 0.27], [0.42, 0.28, 0.20]])
_HAIR = _palette([[0.09, 0.07, 0.06], [0.28, 0.17, 0.10], [0.50, 0.32, 0.17], [0.86, 0.72, 0.42],
                  [0.68, 0.28, 0.11], [0.78, 0.78, 0.80], [0.30, 0.22, 0.55], [0.85, 0.40, 0.60]])
_IRIS = _palette([[0.38, 0.22, 0.09], [0.22, 0.46, 0.78], [0.27, 0.56, 0.32],
                  [0.48, 0.54, 0.60], [0.55, 0.43, 0.18]])
# Uniforms drawn per face: fixed, with room to spare, so that adding a feature
# at the end of the layout leaves every earlier parameter of every face as it was.
_N_UNIFORMS = 96


class _Params:
    """Hands out columns of the per-face uniforms in a fixed order."""

    def __init__(self, u: np.ndarray):
        self._u = u
        self._next = 0

    def uniform(self, lo: float, hi: float) -> np.ndarray:
        col = self._u[:, self._next]
        self._next += 1
        return (lo + (hi - lo) * col)[:, None, None]

    def choice(self, palette: np.ndarray, jitter: float = 0.0) -> np.ndarray:
        pick = np.minimum(self.uniform(0, len(palette))[:, 0, 0].astype(int), len(palette) - 1)
        return np.clip(palette[pick] + jitter * (2.0 * self.colour(0.0, 1.0) - 1.0), 0.0, 1.0)

    def colour(self, lo: float, hi: float) -> np.ndarray:
        cols = lo + (hi - lo) * self._u[:, self._next:self._next + 3]
        self._next += 3
        return cols

    @property
    def used(self) -> int:
        return self._next


def _face_uniforms(seed: int, indices: Sequence[int]) -> np.ndarray:
    return np.stack([np.random.default_rng([seed, int(i)]).random(_N_UNIFORMS) for i in indices])


def _render_faces(u: np.ndarray, resolution: int) -> np.ndarray:
    """Render faces from their uniforms (N x _N_UNIFORMS) to N x H x W x 3 floats in [0, 1]."""
    n = u.shape[0]
    p = _Params(u)
    px = 1.0 / resolution
    grid = (np.arange(resolution, dtype=np.float64) + 0.5) * px  # pixel centres
    x = grid[None, None, :]
    y = grid[None, :, None]
    white_rgb, black_rgb = np.full((n, 3), 0.97), np.full((n, 3), 0.04)

    # --- background: vertical-ish gradient or a two-tone split --------------
    bg0, bg1 = p.colour(0.25, 0.95), p.colour(0.25, 0.95)
    gx, gy = _rotation(p.uniform(-0.6, 0.6))
    split = p.uniform(0.0, 1.0) < 0.35
    offset = p.uniform(-0.15, 0.15)
    along = gy * (y - 0.5) - gx * (x - 0.5)  # a line through the centre, mostly horizontal
    ramp = np.where(split, _fill(along - offset, px), np.clip(0.5 + along, 0.0, 1.0))
    img = bg0[:, None, None, :] + ramp[..., None] * (bg1 - bg0)[:, None, None, :]

    # --- pose: face frame (u, v) centred on the head, rotated ---------------
    a = p.uniform(0.21, 0.255)  # head half-width
    b = a * p.uniform(1.12, 1.28)  # head half-height
    cx, cy = p.uniform(0.46, 0.54), p.uniform(0.46, 0.52)
    c, s = _rotation(p.uniform(-0.1, 0.1))  # about +-11 degrees
    fu = c * (x - cx) + s * (y - cy)
    fv = c * (y - cy) - s * (x - cx)

    def region(v0, hw, hh):
        """Views of the frame over the box (0 +- hw, v0 +- hh) in face coordinates, for every face.

        Small features are evaluated only there.  The box is padded so that
        coverage outside it is exactly zero, and compositing zero coverage is
        an exact no-op, so the window never changes a pixel's value.
        """
        hw, hh = hw * 1.1 + 2 * px, hh * 1.1 + 2 * px
        x0, y0 = cx - s * v0, cy + c * v0
        ex, ey = np.abs(c) * hw + np.abs(s) * hh, np.abs(s) * hw + np.abs(c) * hh
        xl, yl = (max(0, int(np.floor(np.min(lo) * resolution)) - 1) for lo in (x0 - ex, y0 - ey))
        xh, yh = (min(resolution, int(np.ceil(np.max(hi) * resolution)) + 1) for hi in (x0 + ex, y0 + ey))
        w = (slice(None), slice(yl, yh), slice(xl, xh))
        fu_w, fv_w = fu[w], fv[w]
        return img[w], fu_w, fv_w, np.abs(fu_w), np.sign(fu_w)  # |u| mirrors paired features

    skin = p.choice(_SKIN, 0.03)
    hair = p.choice(_HAIR, 0.04)
    clothes = p.colour(0.1, 0.9)

    # --- body, hair behind the head, neck, ears, head -----------------------
    _over(img, _fill(_ellipse_sdf(fu, fv - 2.25 * b, 2.3 * a, 1.0 * b), px), clothes)
    back = p.uniform(0.0, 1.0)  # < 0.35 long hair, < 0.5 afro, else short
    long_hair = np.minimum(_ellipse_sdf(fu, fv + 0.08 * b, 1.22 * a, 1.08 * b),
                           _box_sdf(fu, fv - 0.55 * b, 1.18 * a, 0.7 * b))
    afro = _length(fu, fv + 0.18 * b) - 1.45 * a
    _over(img, _fill(np.where(back < 0.35, long_hair, np.where(back < 0.5, afro, 1.0)), px), hair)
    _over(img, _fill(_box_sdf(fu, fv - 1.0 * b, 0.4 * a, 0.45 * b), px), skin * 0.86)
    eye_v = b * p.uniform(-0.04, 0.12)
    im, U, V, MU, _ = region(eye_v + 0.12 * b, 1.14 * a, 0.21 * b)
    _over(im, _fill(_ellipse_sdf(MU - 0.97 * a, V - eye_v - 0.12 * b, 0.17 * a, 0.21 * b), px), skin * 0.93)
    im, U, V, MU, _ = region(0.0, a, b)
    _over(im, _fill(_ellipse_sdf(U, V, a, b), px), skin)

    # Soft cheeks: a smooth bump is already band-limited, no edge to filter.
    im, U, V, MU, _ = region(0.35 * b, 0.77 * a, 0.22 * a)
    cheek = np.clip(1.0 - ((MU - 0.55 * a) ** 2 + (V - 0.35 * b) ** 2) / (0.22 * a) ** 2, 0.0, 1.0)
    _over(im, p.uniform(0.0, 0.45) * cheek * cheek, np.broadcast_to([0.93, 0.45, 0.45], (n, 3)))

    # --- hair on top: a cap cut by a tilted hairline, or a fringe framing ---
    top = 1.08 * b + 0.36 * a  # the bun's top
    im, U, V, MU, _ = region((1.03 * b - 0.07 * b - top) / 2, 1.08 * a, (0.96 * b + top) / 2)
    cap = _ellipse_sdf(U, V + 0.07 * b, 1.08 * a, 1.03 * b)
    hc, hs = _rotation(p.uniform(-0.2, 0.2))
    hairline = (hc * V - hs * U) - b * p.uniform(-0.55, -0.3)
    opening = 0.88 * a - _length(U, V - b * p.uniform(0.25, 0.4))
    front = np.maximum(cap, np.where(p.uniform(0.0, 1.0) < 0.5, hairline, opening))
    bun = _length(U, V + 1.08 * b) - 0.36 * a
    front = np.where(p.uniform(0.0, 1.0) < 0.2, np.minimum(front, bun), front)
    _over(im, _fill(front, px), hair)

    # --- eyes, eyebrows and glasses -----------------------------------------
    eye_du = a * p.uniform(0.36, 0.48)
    ew = a * p.uniform(0.19, 0.25)
    eh = ew * p.uniform(0.5, 0.72)
    brow_v = eye_v - eh - a * p.uniform(0.1, 0.2)
    ring_r = ew * p.uniform(1.3, 1.5)
    reach = np.maximum(1.4 * ew, ring_r) + 0.06 * a  # brow or glasses, whichever is wider
    upper, lower = brow_v - 0.5 * ew, eye_v + ring_r + 0.03 * a
    im, U, V, MU, SIDE = region((upper + lower) / 2, eye_du + reach, (lower - upper) / 2)

    tc, ts = _rotation(p.uniform(-0.08, 0.08))
    ex0, ey0 = MU - eye_du, V - eye_v
    ex, ey = tc * ex0 + ts * ey0, tc * ey0 - ts * ex0
    white = _ellipse_sdf(ex, ey, ew, eh)
    _over(im, _fill(white, px), white_rgb)
    iris_r = eh * p.uniform(0.75, 0.95)
    ix = ex - SIDE * ew * p.uniform(-0.3, 0.3)  # both eyes look the same way
    iy = ey - eh * p.uniform(-0.15, 0.15)
    to_iris = _length(ix, iy)
    _over(im, _fill(np.maximum(to_iris - iris_r, white), px), p.choice(_IRIS, 0.05))
    _over(im, _fill(np.maximum(to_iris - iris_r * p.uniform(0.38, 0.55), white), px), black_rgb)
    glint = _length(ix + SIDE * 0.35 * iris_r, iy + 0.4 * iris_r)  # one light for both eyes
    _over(im, _dot(glint, iris_r * p.uniform(0.2, 0.3), px), np.ones((n, 3)))
    _over(im, _stroke(np.abs(white), a * 0.012, px), skin * 0.35)

    bc, bs = _rotation(p.uniform(-0.12, 0.12))
    bx0, by0 = MU - eye_du, V - brow_v
    brow = _arc_dist(bc * bx0 + bs * by0, bc * by0 - bs * bx0, ew * p.uniform(1.0, 1.3), -a * p.uniform(0.02, 0.08))
    _over(im, _stroke(brow, a * p.uniform(0.02, 0.045), px), hair * 0.8)

    # Glasses: thin rings and a bridge, the finest global structure.
    frame_hw = a * p.uniform(0.01, 0.02)
    rings = np.abs(_length(ex0, ey0) - ring_r)
    bridge = _length(np.maximum(MU - (eye_du - ring_r), 0.0), V - eye_v + 0.3 * ring_r)
    glasses = _stroke(np.minimum(rings, bridge), frame_hw, px)
    _over(im, np.where(p.uniform(0.0, 1.0) < 0.25, glasses, 0.0), p.colour(0.0, 0.35))

    # --- nose and mouth -----------------------------------------------------
    nose_v = eye_v + b * p.uniform(0.28, 0.38)
    im, U, V, MU, _ = region(nose_v + 0.035 * a, 0.17 * a, 0.07 * a)
    nose = _arc_dist(U, V - nose_v, a * p.uniform(0.08, 0.14), a * p.uniform(0.03, 0.07))
    _over(im, _stroke(nose, a * 0.018, px), skin * 0.7)

    mouth_v = b * p.uniform(0.5, 0.62)
    mouth_w = a * p.uniform(0.22, 0.4)
    mouth_h = mouth_w * p.uniform(0.3, 0.5)
    im, U, V, MU, _ = region(mouth_v, mouth_w + 0.03 * a, mouth_h + 0.15 * a)
    lips = p.colour(0.0, 1.0) * np.array([0.25, 0.15, 0.15]) + np.array([0.62, 0.22, 0.25])
    open_mouth = p.uniform(0.0, 1.0) < 0.3
    smile = _arc_dist(U, V - mouth_v, mouth_w, a * p.uniform(-0.04, 0.12))
    lip_line = _stroke(smile, a * p.uniform(0.012, 0.025), px)
    lips_alpha = _fill(_ellipse_sdf(U, V - mouth_v, mouth_w, mouth_h), px)
    _over(im, np.where(open_mouth, lips_alpha, lip_line), np.where(open_mouth[:, 0], lips, skin * 0.45))
    inner = _fill(_ellipse_sdf(U, V - mouth_v - 0.1 * mouth_h, 0.75 * mouth_w, 0.55 * mouth_h), px)
    _over(im, np.where(open_mouth, inner, 0.0), np.broadcast_to([0.25, 0.05, 0.06], (n, 3)))

    assert p.used <= _N_UNIFORMS, "the face layout uses more uniforms than are drawn"
    return img


class ToyFaces:
    """Procedural faces, resolution-free: image i is a fixed continuous picture."""

    name = "toyfaces"
    renderer = "analytic-sdf-boxfilter-v1"  # bump when the picture changes: it keys caches

    def __init__(self, size: int = 10000, seed: int = 0):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise BenchError(f"toyfaces size must be a positive integer, got {size!r}; set size to e.g. 10000")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise BenchError(f"toyfaces seed must be a non-negative integer, got {seed!r}; set seed to e.g. 0")
        self.size = int(size)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.size

    def image(self, i: int, resolution: int) -> np.ndarray:
        return self.images([i], resolution)[0]

    def images(self, indices: Sequence[int], resolution: int) -> np.ndarray:
        resolution = check_resolution(resolution)
        indices = [check_index(i, self.size, self.name) for i in indices]
        out = np.empty((len(indices), resolution, resolution, 3), dtype=np.uint8)
        step = max(1, _RENDER_CHUNK_PIXELS // (resolution * resolution))
        for start in range(0, len(indices), step):
            chunk = indices[start:start + step]
            img = _render_faces(_face_uniforms(self.seed, chunk), resolution)
            out[start:start + len(chunk)] = np.rint(np.clip(img, 0.0, 1.0) * 255.0)
        return out

    def describe(self) -> dict:
        return {"kind": self.name, "size": self.size, "seed": self.seed, "renderer": self.renderer,
                "antialias": "box filter, one pixel wide", "resolutions": [MIN_RESOLUTION, MAX_RESOLUTION]}


# ----------------------------------------------------------------------------
# imagefolder


# One decode -> crop -> resize path for every real image: ImageFolder and
# `bench data prepare` (bench/prepare.py) both call these, so prepared shards
# hold exactly the pixels an imagefolder dataset would produce.

CROP_RULE = ("centre square on the shorter side: left = (w - side) // 2, top = (h - side) // 2, "
             "side = min(w, h)")
# name -> (PIL filter, description for manifests). Both are PIL's resampling, which
# widens the kernel with the downscale factor (antialiased). `bilinear-aa` is PIL's
# BILINEAR without reducing_gap, which is what torchvision's Resize(size) calls on a
# PIL image (tests/test_datasets.py checks the two are equal byte for byte); with a
# reducing_gap PIL first box-reduces and the bytes differ at >= 4x downscales.
RESIZE_FILTERS = {
    "lanczos": (Image.LANCZOS, "lanczos: PIL Image.resize with Image.LANCZOS (antialiased: the kernel widens "
                               "with the downscale factor), once from the centre square to each resolution, as "
                               "EDM's dataset_tool"),
    "bilinear-aa": (Image.BILINEAR, "bilinear-aa: PIL Image.resize with Image.BILINEAR and no reducing_gap "
                                    "(antialiased: the kernel widens with the downscale factor), once from the "
                                    "centre square to each resolution; equal to torchvision Resize(size) on a PIL "
                                    "image, as the authors' datasets/resize.py"),
}


def check_filter(name: str) -> str:
    """A resize filter's name, or BenchError listing the known ones."""
    if name not in RESIZE_FILTERS:
        raise BenchError(f"resize filter {name!r} is not known; use one of: {', '.join(RESIZE_FILTERS)}")
    return name


def centre_square(img: Image.Image) -> Image.Image:
    """Crop to a centred square whose side is the shorter side (see CROP_RULE)."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def resize_square(square: Image.Image, resolution: int, filter: str = RESIZE_FILTER) -> np.ndarray:
    """A square RGB image resized with a filter of RESIZE_FILTERS -> resolution x resolution x 3 uint8."""
    resample = RESIZE_FILTERS[check_filter(filter)][0]
    return np.asarray(square.resize((resolution, resolution), resample), dtype=np.uint8).copy()


class ImageFolder(ImageFiles):
    """A folder or .zip of images (bench.images.ImageFiles), as a dataset at any resolution.

    Each image is converted to RGB (alpha is dropped), centre-cropped to a square
    on its shorter side, and resized to the requested resolution with `filter`
    (RESIZE_FILTERS; default PIL's LANCZOS).  Decoded arrays are cached in memory
    per resolution.  Hidden files and __MACOSX/ entries are ignored.
    """

    name = "imagefolder"

    def __init__(self, path: str | Path, filter: str = RESIZE_FILTER):
        self.filter = check_filter(filter)
        super().__init__(path)
        self._cache: dict[int, dict[int, np.ndarray]] = {}

    def validate(self, resolutions: Sequence[int] | None = None) -> dict:
        """Open and fully decode every image; raise BenchError naming the first bad one.

        Any resolution can be made from a folder, so `resolutions` is accepted
        (plan_suite passes what the suite needs) and not checked.  Returns a
        summary (count, smallest and largest side) so a caller can tell whether
        references at a resolution will be upsampled.
        """
        sides = []
        for rel in self.files:
            try:
                sides.append(verify_image(self.read_bytes(rel)))
            except Exception as err:
                raise self.bad_image(rel, err) from err
        return {"count": len(self.files), "min_side": min(sides), "max_side": max(sides)}

    def image(self, i: int, resolution: int) -> np.ndarray:
        resolution = check_resolution(resolution)
        i = check_index(i, len(self.files), self.name)
        cache = self._cache.setdefault(resolution, {})
        if i not in cache:
            arr = resize_square(centre_square(self.decode(i)), resolution, self.filter)
            arr.flags.writeable = False  # shared by every caller through the cache
            cache[i] = arr
        return cache[i]

    def images(self, indices: Sequence[int], resolution: int) -> np.ndarray:
        resolution = check_resolution(resolution)
        out = np.empty((len(indices), resolution, resolution, 3), dtype=np.uint8)
        for k, i in enumerate(indices):
            out[k] = self.image(i, resolution)
        return out

    def describe(self) -> dict:
        return {"kind": self.name, "path": str(self.path.resolve()), "container": self.container,
                "size": len(self.files), "filter": self.filter, "crop": "centre square",
                "mode": "RGB", "extensions": list(IMAGE_EXTENSIONS)}


# ----------------------------------------------------------------------------
# prepared: the read side of `bench data prepare` (the write side is bench/prepare.py)

PREPARED_FORMAT = "dfu-bench-prepared-v1"
MANIFEST_NAME = "manifest.json"
DEFAULT_SHARD_SIZE = 4096  # ~18 shards for FFHQ's 70,000; 110 MB per shard at 96 px
_DATASET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_dataset_name(name: str) -> str:
    """A prepared dataset's name becomes a folder name: letters, digits, _ . - only."""
    if not isinstance(name, str) or not _DATASET_NAME.match(name):
        raise BenchError(f"dataset name {name!r} is not a plain folder name; "
                         "use letters, digits, '_', '.' and '-' (e.g. ffhq)")
    return name


def resolution_dir(resolution: int) -> str:
    return f"r{resolution:03d}"


def shard_path(resolution: int, shard: int) -> str:
    """An archive's path relative to the dataset folder: image i lives in shard i // shard_size."""
    return f"{resolution_dir(resolution)}/shard-{shard:05d}.zip"


def entry_name(index: int) -> str:
    return f"{index:08d}.png"


def shown_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (shorter messages)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (OSError, ValueError):
        return str(path)


def prepare_command(name: str, source: str | None, resolutions: Sequence[int], root: Path | None = None,
                    skip_bad: bool = False, shard_size: int = DEFAULT_SHARD_SIZE,
                    filter: str = RESIZE_FILTER) -> str:
    """The exact `bench data prepare` line that makes (or completes) a prepared dataset."""
    words = ["bench", "data", "prepare", name, "--source", shlex.quote(str(source)) if source else "PATH/TO/IMAGES",
             "--resolutions", ",".join(str(r) for r in sorted(set(resolutions))) or "32,64,..."]
    if root is not None and Path(root).expanduser().resolve() != data_root().resolve():
        words += ["--out", shlex.quote(str(root))]
    if skip_bad:
        words.append("--skip-bad")
    if shard_size != DEFAULT_SHARD_SIZE:
        words += ["--shard-size", str(shard_size)]
    if filter != RESIZE_FILTER:
        words += ["--filter", filter]
    return " ".join(words)


class PreparedDataset:
    """Images made by `bench data prepare NAME`: ROOT/NAME/manifest.json and rNNN/shard-KKKKK.zip.

    Construction reads nothing, so that `validate(resolutions)` can say exactly
    which command makes the missing data; every other method reads the manifest.
    Image i at resolution r is entry 0000000i.png of shard i // shard_size.
    `filter`: the resize filter the suite expects; validate() refuses data
    prepared with another one (None: whatever the manifest says).
    """

    kind = "prepared"

    def __init__(self, name: str, root: str | Path | None = None, source: str | None = None,
                 filter: str | None = None):
        self.name = check_dataset_name(name)
        self.root = Path(root).expanduser() if root else data_root()
        self.dir = self.root / self.name
        self.source_hint = source  # only for the message that says how to prepare
        self.filter = check_filter(filter) if filter is not None else None
        self._manifest: dict | None = None
        self._zips: dict[tuple[int, int], zipfile.ZipFile] = {}

    def __getstate__(self) -> dict:
        # Open zip handles cannot cross a process boundary; they reopen lazily.
        return {**self.__dict__, "_zips": {}}

    # -- manifest -------------------------------------------------------------
    def _command(self, resolutions: Sequence[int], filter: str | None = None) -> str:
        m = self._manifest
        if m is None:
            return prepare_command(self.name, self.source_hint, resolutions, self.root,
                                   filter=self.filter or RESIZE_FILTER)
        return prepare_command(self.name, m["source"], resolutions, self.root, m["skip_bad"], m["shard_size"],
                               filter or m.get("filter", RESIZE_FILTER))

    def manifest(self) -> dict:
        if self._manifest is None:
            path = self.dir / MANIFEST_NAME
            if not path.is_file():
                raise BenchError(f"dataset {self.name} is not prepared in {shown_path(self.dir)} (no {MANIFEST_NAME}); "
                                 f"run: {self._command([])}")
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise BenchError(f"{shown_path(path)} is unreadable ({exc}); delete {shown_path(self.dir)} "
                                 "and prepare it again") from None
            if not isinstance(manifest, dict) or manifest.get("format") != PREPARED_FORMAT:
                raise BenchError(f"{shown_path(path)} is not a {PREPARED_FORMAT} manifest; delete "
                                 f"{shown_path(self.dir)} and prepare it again")
            self._manifest = manifest
        return self._manifest

    def resolutions(self) -> list[int]:
        return sorted(int(r) for r in self.manifest()["resolutions"])

    def validate(self, resolutions: Sequence[int] | None = None) -> dict:
        """Raise BenchError, with the command that fixes it, unless every needed resolution is prepared.

        `resolutions`: what the suite reads from data (None: whatever is prepared).
        Only file presence and sizes are checked here (milliseconds, before any
        run directory exists); checksums are `bench data prepare`'s job.
        """
        needed = sorted({check_resolution(r) for r in resolutions or []})
        if not (self.dir / MANIFEST_NAME).is_file():
            raise BenchError(f"dataset {self.name} is not prepared in {shown_path(self.dir)} (no {MANIFEST_NAME}); "
                             f"run: {self._command(needed)}")
        m = self.manifest()
        made_with = m.get("filter", RESIZE_FILTER)
        if self.filter is not None and made_with != self.filter:
            raise BenchError(f"dataset {self.name} in {shown_path(self.dir)} was prepared with --filter {made_with}, "
                             f"but the suite's dataset says filter: {self.filter}; delete {shown_path(self.dir)} "
                             f"and run: {self._command(needed or self.resolutions(), self.filter)}")
        have = self.resolutions()
        missing = [r for r in needed if r not in have]
        if missing:
            raise BenchError(f"dataset {self.name} in {shown_path(self.dir)} is not prepared at "
                             f"{', '.join(map(str, missing))} px (has {', '.join(map(str, have))}); "
                             f"run: {self._command(missing)}")
        for r in needed or have:
            for shard in m["resolutions"][str(r)]["shards"]:
                path = self.dir / shard["file"]
                if not path.is_file() or path.stat().st_size != shard["bytes"]:
                    raise BenchError(f"dataset {self.name}: {shown_path(path)} is missing or changed size; "
                                     f"run: {self._command([r])}")
        return {"count": m["kept_count"], "min_side": m["min_side"], "max_side": m["max_side"], "resolutions": have}

    # -- images ---------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.manifest()["kept_count"])

    def _zip(self, resolution: int, shard: int) -> zipfile.ZipFile:
        key = (resolution, shard)
        if key not in self._zips:
            path = self.dir / shard_path(resolution, shard)
            try:
                self._zips[key] = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise BenchError(f"cannot open {shown_path(path)} ({exc}); run: {self._command([resolution])}") from None
        return self._zips[key]

    def image(self, i: int, resolution: int) -> np.ndarray:
        return self.images([i], resolution)[0]

    def images(self, indices: Sequence[int], resolution: int) -> np.ndarray:
        resolution = check_resolution(resolution)
        m = self.manifest()
        if str(resolution) not in m["resolutions"]:
            raise BenchError(f"dataset {self.name} is not prepared at {resolution} px; "
                             f"run: {self._command([resolution])}")
        size, shard_size = len(self), int(m["shard_size"])
        out = np.empty((len(indices), resolution, resolution, 3), dtype=np.uint8)
        for k, i in enumerate(indices):
            i = check_index(i, size, self.name)
            zf = self._zip(resolution, i // shard_size)
            try:
                with Image.open(io.BytesIO(zf.read(entry_name(i)))) as img:
                    arr = np.asarray(img.convert("RGB"))
            except Exception as exc:  # a missing entry (KeyError) or a damaged PNG
                raise BenchError(f"dataset {self.name}: image {i} at {resolution} px is unreadable ({exc}); "
                                 f"delete {shown_path(self.dir / resolution_dir(resolution))} and run: "
                                 f"{self._command([resolution])}") from None
            if arr.shape != out.shape[1:]:
                raise BenchError(f"dataset {self.name}: image {i} in {resolution_dir(resolution)} is "
                                 f"{arr.shape[1]}x{arr.shape[0]}, not {resolution}x{resolution}; delete "
                                 f"{shown_path(self.dir)} and prepare it again")
            out[k] = arr
        return out

    def describe(self) -> dict:
        m = self.manifest()
        return {"kind": self.kind, "name": self.name, "path": str(self.dir.resolve()), "size": m["kept_count"],
                "source": m["source"], "source_count": m["source_count"], "skipped": len(m["skipped"]),
                "filter": m["filter"], "crop": "centre square", "mode": m["mode"], "shard_size": m["shard_size"],
                "resolutions": self.resolutions(), "created": m["created"],
                "dfu_bench_version": m["dfu_bench_version"], "pillow_version": m["pillow_version"]}


# ----------------------------------------------------------------------------
# registry and tensor conversion

# grf (bench/grf.py) and openmoji (bench/openmoji.py) live in their own modules.
DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "toyfaces": ToyFaces,
    "imagefolder": ImageFolder,
    "prepared": PreparedDataset,
    "grf": GRF,
    "openmoji": OpenMoji,
}


def build_dataset(kind: str, **kwargs) -> ImageDataset:
    """Construct the dataset registered as `kind` from its options."""
    if kind not in DATASETS:
        raise BenchError(f"unknown dataset kind '{kind}'; use one of: {', '.join(sorted(DATASETS))}")
    factory = DATASETS[kind]
    params = inspect.signature(factory).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise BenchError(f"dataset '{kind}' has no option(s) {', '.join(unknown)}; "
                         f"valid options: {', '.join(params)}")
    missing = [k for k, v in params.items() if v.default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise BenchError(f"dataset '{kind}' needs option(s) {', '.join(missing)}; add them to the dataset config")
    return factory(**kwargs)


def to_float_tensor(batch_uint8: np.ndarray) -> torch.Tensor:
    """NxHxWx3 uint8 -> Nx3xHxW float32 in [-1, 1], as EDM feeds its networks."""
    batch = np.asarray(batch_uint8)
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected an NxHxWx3 uint8 array, got {batch.dtype} {batch.shape}")
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
