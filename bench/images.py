"""What an image is to the harness, and the one reader of image files.

Images travel as HxWx3 (one) or NxHxWx3 (a batch) uint8 RGB arrays. A dataset's
images are square, at a resolution between MIN_RESOLUTION and MAX_RESOLUTION px
(`check_resolution`), and indexed from 0 (`check_index`).

`ImageFiles` reads image files: a folder (searched recursively) or a .zip, the
files whose names end in IMAGE_EXTENSIONS, hidden files and macOS's __MACOSX/
left out, sorted by relative path, each decoded to RGB (`to_rgb`: 16-bit to its high byte, alpha composited onto
white) at its native size. What happens next is the caller's: an `imagefolder` dataset
(bench.datasets) centre-crops and resizes, `bench data prepare` writes shards,
`bench fid` and `bench metrics` (bench.features) take the pixels as they are.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from bench.errors import BenchError

MIN_RESOLUTION = 8
MAX_RESOLUTION = 512
# what clean-fid reads too (it adds grayscale .pgm), so `bench fid` sees the files it sees
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")


def check_resolution(resolution: int) -> int:
    """Return `resolution` as an int, or raise BenchError if it is outside 8-512."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise BenchError(f"resolution must be an integer, got {resolution!r}; "
                         f"use a whole number of pixels between {MIN_RESOLUTION} and {MAX_RESOLUTION}")
    resolution = int(resolution)
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise BenchError(f"resolution {resolution} is out of range; "
                         f"use a value between {MIN_RESOLUTION} and {MAX_RESOLUTION}")
    return resolution


def parse_resolutions(text: str, *, keep_order: bool = False, check: Callable[[int], int] = check_resolution,
                      example: str = "32,64,96") -> list[int]:
    """A ``--resolutions`` comma list ('32,64,96') as ints, each passed through ``check`` (BenchError
    for a bad one); sorted with repeats merged, or with ``keep_order`` in the order given and a repeat
    refused. Every refusal is one BenchError naming the option, the text and the bad item."""
    out: list[int] = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = int(item)
        except ValueError:
            raise BenchError(f"--resolutions {text!r}: {item!r} is not an integer; "
                             f"give a comma list such as {example}") from None
        try:
            value = check(value)
        except BenchError as exc:
            raise BenchError(f"--resolutions {text!r}: {exc}") from None
        if value in out and keep_order:
            raise BenchError(f"--resolutions {text!r} names {value} twice; list each resolution once")
        out.append(value)
    if not out:
        raise BenchError(f"--resolutions is empty; give a comma list such as {example}")
    return out if keep_order else sorted(set(out))


def check_index(i: int, size: int, name: str) -> int:
    """Return image index `i` of dataset `name` (of `size` images) as an int, or raise BenchError."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) < size:
        raise BenchError(f"image index {i!r} is out of range for dataset '{name}' of {size} images; "
                         f"use an index between 0 and {size - 1}")
    return int(i)


class CachedImages:
    """``image`` and ``images`` for a dataset that makes image i at a resolution once and keeps it:
    a per-resolution cache of read-only arrays. The class gives ``name``, ``__len__`` and
    ``_make(i, resolution) -> HxWx3 uint8``, and sets ``self._cache = {}``."""

    name: str
    _cache: dict

    def _make(self, i: int, resolution: int) -> np.ndarray:
        raise NotImplementedError

    def image(self, i: int, resolution: int) -> np.ndarray:
        resolution = check_resolution(resolution)
        i = check_index(i, len(self), self.name)
        cache = self._cache.setdefault(resolution, {})
        if i not in cache:
            arr = self._make(i, resolution)
            arr.flags.writeable = False  # shared by every caller through the cache
            cache[i] = arr
        return cache[i]

    def images(self, indices: Sequence[int], resolution: int) -> np.ndarray:
        resolution = check_resolution(resolution)
        out = np.empty((len(indices), resolution, resolution, 3), dtype=np.uint8)
        for k, i in enumerate(indices):
            out[k] = self.image(i, resolution)
        return out


HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit greyscale as PIL opens it
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as RGB, by the harness's one rule:

    * 16-bit greyscale: the high byte (v >> 8, exact for v = 257 * u8); PIL's own
      convert("RGB") clips every value above 255 to white. (48-bit RGB PNGs open as
      8-bit RGB already: PIL keeps the high byte.)
    * palette, greyscale, bilevel: their colours (convert("RGB"));
    * alpha (RGBA, LA, a palette or greyscale with a transparent colour): composited onto
      white, out = a/255 * c + (1 - a/255) * 255, rounded -- what a page or viewer shows
      behind a transparent pixel. Dropping alpha would expose whatever colour the encoder
      left under transparent pixels, so the pixels would depend on the program that saved
      the file.
    """
    if img.mode in HIGH_BIT_MODES:
        grey = (np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"))
        a = rgba[..., 3:].astype(np.float64) / 255
        return Image.fromarray(np.rint(a * rgba[..., :3] + (1 - a) * 255).astype(np.uint8))
    return img.convert("RGB")


def decode_rgb(data: bytes) -> Image.Image:
    """Fully decode image bytes and convert to RGB (`to_rgb`); PIL's exception on bad data (an image
    over PIL's pixel limit raises Image.DecompressionBombError, as everywhere)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return to_rgb(img)


def verify_image(data: bytes) -> int:
    """Check an image's structure and checksums, then decode it fully; return its shorter side.

    Raises PIL's exception for corrupt or truncated data.  `verify()` catches bad
    chunk checksums that `load()` lets through; `load()` catches truncation.
    """
    with Image.open(io.BytesIO(data)) as img:
        img.verify()  # leaves the image unusable, hence the second open
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return min(img.size)


def _is_hidden(rel: str) -> bool:
    # macOS zips carry __MACOSX/ and ._name resource forks that are not images.
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.split("/"))


class ImageFiles:
    """The image files of a folder (recursive) or a .zip, sorted by relative path.

    Listing reads no image; `read(i)` decodes file i to an HxWx3 uint8 RGB array
    at its native size. A missing path, an empty listing or an undecodable file
    is a one-line BenchError naming it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise BenchError(f"image folder '{self.path}' does not exist; check the path")
        if self.path.is_dir():
            self.container = "folder"
            files = [f.relative_to(self.path).as_posix() for f in self.path.rglob("*") if f.is_file()]
        elif zipfile.is_zipfile(self.path):
            self.container = "zip"
            with zipfile.ZipFile(self.path) as zf:
                files = [info.filename for info in zf.infolist() if not info.is_dir()]
        elif self.path.suffix.lower() == ".zip":
            raise BenchError(f"'{self.path}' is not a readable zip (damaged, or not a zip at all); re-create it "
                             "or point at a folder of images")
        else:
            raise BenchError(f"path '{self.path}' is neither a folder nor a .zip; "
                             "point it at a folder or a .zip of images")
        self.files = sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS) and not _is_hidden(f))
        if not self.files:
            raise BenchError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in '{self.path}'; "
                             "point the path at a folder or .zip that contains images")
        self._zip: zipfile.ZipFile | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self) -> dict:
        # An open zip handle cannot cross a process boundary; it reopens lazily.
        return {**self.__dict__, "_zip": None}

    def read_bytes(self, rel: str) -> bytes:
        """The undecoded bytes of image `rel` (a path relative to the folder or zip)."""
        if self.container == "folder":
            return (self.path / rel).read_bytes()
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
        return self._zip.read(rel)

    def bad_image(self, rel: str, err: Exception) -> BenchError:
        reason = " ".join(str(err).split()) or type(err).__name__
        return BenchError(f"cannot read image '{rel}' in '{self.path}' ({reason}); "
                          "remove or replace that file")

    def decode(self, i: int) -> Image.Image:
        """File i decoded to an RGB PIL image, or BenchError naming the file."""
        rel = self.files[i]
        try:
            return decode_rgb(self.read_bytes(rel))
        except Exception as err:  # PIL raises many types for bad data
            raise self.bad_image(rel, err) from err

    def read(self, i: int) -> np.ndarray:
        """File i as an HxWx3 uint8 RGB array at its native size."""
        return np.array(self.decode(i), dtype=np.uint8)

    def __iter__(self):
        return (self.read(i) for i in range(len(self)))


def image_grid(images: Sequence[np.ndarray] | np.ndarray, cols: int) -> np.ndarray:
    """Tile equally sized HxWx3 uint8 images into one grid image (2 px gaps)."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    rows = -(-n // cols)
    grid = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, c), 255, np.uint8)
    for k, img in enumerate(images):
        r, q = divmod(k, cols)
        grid[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + q * (w + 2): 2 + q * (w + 2) + w] = img
    return grid
