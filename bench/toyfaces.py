"""`toyfaces`: procedural faces, a resolution-free picture rendered exactly at any resolution.

Face i is a set of shapes on the continuous unit square, drawn with parameters
from `default_rng([seed, i])` and rendered analytically with a one-pixel box
filter, so image i at 32 and at 160 are the same picture sampled at two
densities.  Fine details (pupils, highlights, eyelid and mouth lines, glasses)
only resolve at high resolution, which is where zero-shot upscaling shows its
failures (duplicated eyes, broken heads). bench.datasets registers it as a
dataset kind.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.errors import BenchError
from bench.images import MAX_RESOLUTION, MIN_RESOLUTION, check_index, check_resolution

# Pixels rendered per vectorised step: large enough to amortise numpy's per-call
# overhead, small enough that the temporaries stay in cache.
_RENDER_CHUNK_PIXELS = 1 << 15


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
