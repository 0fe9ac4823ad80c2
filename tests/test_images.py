"""Image modes and decompression bombs (issue #13, items 5 and 6).

Every reader of user images -- `bench fid` and `bench metrics` (bench.metrics.ImageSet),
an `imagefolder` dataset and `bench data prepare` (bench.datasets.decode_rgb) -- must turn
each PNG mode into the same RGB pixels:

* 16-bit (I;16 greyscale, 48-bit RGB): the high byte, v >> 8 (exact for v = 257 * u8);
* palette (P), greyscale (L) and bilevel (1): their colours, as PIL's convert("RGB");
* alpha (RGBA, LA, P with a transparent index): **composited onto white**,
  out = (a * c + (255 - a) * 255) / 255 per channel, rounded.

Why white: a transparent pixel is what the page behind it shows, and on the pages and
viewers where people look at their images (and in this project's own `openmoji` dataset,
whose default background is [255, 255, 255]) that is white. Dropping alpha, as
convert("RGB") does, exposes whatever colour the encoder left under transparent pixels --
black for some tools, garbage for others -- so the FID of a folder would depend on the
program that saved it.

The decoded pixels are observed through the CLI: `bench data prepare` at the images' own
size (PIL's resize to the same size is a copy) gives the pixels of decode_rgb exactly, and
`bench metrics A B --metrics spectral` between a folder and its expected RGB conversion is
0 only when ImageSet decodes every pixel as expected.

A decompression bomb (a 14000 x 14000 PNG of 24 KB, over PIL's 178,956,970-pixel error
limit) gets one `error:` line naming the file in all four places, and nothing written.
"""
from __future__ import annotations

import json
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from _hostile import DATA_ONLY, Workspace, assert_refused, assert_unchanged, faces, guarded, png_bytes, tree

pytestmark = pytest.mark.filterwarnings("ignore")
RES = 16
N = 4


@pytest.fixture
def ws(tmp_path, monkeypatch, one_thread):
    return Workspace(tmp_path / "ws").env(monkeypatch)


def xf(reason):
    return pytest.mark.xfail(strict=True, reason=f"#13 phase 2: {reason}")


def png_rgb16(arr: np.ndarray) -> bytes:
    """A 48-bit RGB PNG (16 bits per channel) of an HxWx3 uint16 array; PIL cannot write one."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = arr.shape
    rows = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def white_composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255
    return np.rint(a * rgb + (1 - a) * 255).astype(np.uint8)


def mask(k: int) -> np.ndarray:
    """Alpha 0 or 255: a transparent band and corner that differ per image."""
    m = np.full((RES, RES), 255, np.uint8)
    m[: 4 + k, :] = 0
    m[-3:, -3 - k:] = 0
    return m


def garbage(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# each mode: (PIL images or PNG bytes to save, the RGB arrays they must decode to)
def mode_case(name: str):
    rgb = faces(N, RES)
    grey = [np.asarray(Image.fromarray(x).convert("L")) for x in rgb]
    if name == "L":
        return [Image.fromarray(g, "L") for g in grey], [np.stack([g] * 3, -1) for g in grey]
    if name == "1":
        bits = [(g > 128).astype(np.uint8) * 255 for g in grey]
        return [Image.fromarray(b, "L").convert("1") for b in bits], [np.stack([b] * 3, -1) for b in bits]
    if name == "I;16":
        return [Image.fromarray(g.astype(np.uint16) * 257) for g in grey], [np.stack([g] * 3, -1) for g in grey]
    if name == "RGB;16":
        return [png_rgb16(x.astype(np.uint16) * 257) for x in rgb], list(rgb)
    if name == "P":
        pal = [Image.fromarray(x).quantize(16) for x in rgb]
        return pal, [np.asarray(p.convert("RGB")) for p in pal]
    if name == "P+transparency":
        out, want = [], []
        for k, x in enumerate(rgb):
            p = Image.fromarray(x).quantize(15)  # index 15 is free: make it the transparent one
            idx = np.asarray(p).copy()
            idx[mask(k) == 0] = 15
            palette = p.getpalette()[:45] + [0, 0, 0]  # black under the transparent index
            q = Image.fromarray(idx, "P")
            q.putpalette(palette)
            q.info["transparency"] = 15
            out.append(q)
            opaque = np.asarray(q.convert("RGB"))
            want.append(white_composite(opaque, mask(k)))
        return out, want
    if name == "LA":
        out = [Image.fromarray(np.stack([g, mask(k)], -1), "LA") for k, g in enumerate(grey)]
        return out, [white_composite(np.stack([g] * 3, -1), mask(k)) for k, g in enumerate(grey)]
    if name == "RGBA":
        out, want = [], []
        for k, x in enumerate(rgb):
            hidden = np.where(mask(k)[..., None] == 0, garbage(x.shape, k), x)  # garbage under alpha 0
            out.append(Image.fromarray(np.concatenate([hidden, mask(k)[..., None]], -1), "RGBA"))
            want.append(white_composite(x, mask(k)))
        return out, want
    raise KeyError(name)


def save(folder, items) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for k, item in enumerate(items):
        path = folder / f"{k:04d}.png"
        if isinstance(item, bytes):
            path.write_bytes(item)
        else:
            item.save(path)
    return str(folder)


MODES = [
    pytest.param("L", id="L"),
    pytest.param("1", id="1-bit"),
    pytest.param("P", id="P"),
    pytest.param("RGB;16", id="RGB-16bit"),
    pytest.param("I;16", id="I16"),
    pytest.param("LA", id="LA"),
    pytest.param("RGBA", id="RGBA"),
    pytest.param("P+transparency", id="P-transparent"),
]


@pytest.mark.parametrize("mode", MODES)
def test_prepare_decodes_each_mode_as_stated(ws, run_cli, mode):
    """decode_rgb (imagefolder and data prepare), observed exactly through a prepared shard."""
    images, want = mode_case(mode)
    src = save(ws.root / "src", images)
    code, _, err = run_cli("data", "prepare", "m", "--source", src, "--resolutions", str(RES),
                           "--out", str(ws.data))
    assert code == 0, err[-2000:]
    with zipfile.ZipFile(ws.data / "m" / f"r{RES:03d}" / "shard-00000.zip") as z:
        got = [np.asarray(Image.open(z.open(n)).convert("RGB")) for n in sorted(z.namelist())]
    for k, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), f"image {k}: {np.abs(g.astype(int) - w).max()} grey levels off"


@pytest.mark.parametrize("mode", MODES)
def test_fid_and_metrics_decode_each_mode_as_stated(ws, run_cli, mode):
    """ImageSet (bench fid, bench metrics): the spectral distance to the expected RGB is 0."""
    images, want = mode_case(mode)
    a = save(ws.root / "a", images)
    b = ws.pngs("b", want)
    code, out, err = run_cli("metrics", a, b, "--metrics", "spectral", "--json", "--device", "cpu")
    assert code == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["spectral_lsd"] < 1e-9


def test_fid_of_16bit_pngs_equals_fid_of_their_8bit_conversion(ws, run_cli):
    """The acceptance test of #13: a folder of 16-bit PNGs scores the FID of its 8-bit conversion."""
    grey = [np.asarray(Image.fromarray(x).convert("L")) for x in faces(8, 32)]
    g16 = save(ws.root / "g16", [Image.fromarray(g.astype(np.uint16) * 257) for g in grey])
    g8 = save(ws.root / "g8", [Image.fromarray(g, "L") for g in grey])
    ref = ws.pngs("ref", faces(8, 32, first=100))
    fids = []
    for folder in (g16, g8):
        code, out, err = run_cli("fid", folder, ref, "--json", "--device", "cpu")
        assert code == 0, err[-2000:]
        fids.append(json.loads(out.strip().splitlines()[-1])["fid"])
    assert abs(fids[0] - fids[1]) < 1e-3, fids


def test_partial_alpha_is_composited_onto_white(ws, run_cli):
    """Half-transparent pixels: (a * c + (255 - a) * 255) / 255, within one grey level."""
    rgb = faces(2, RES)
    alpha = np.tile(np.linspace(0, 255, RES).astype(np.uint8), (RES, 1))
    src = save(ws.root / "src", [Image.fromarray(np.concatenate([x, alpha[..., None]], -1), "RGBA") for x in rgb])
    code, _, err = run_cli("data", "prepare", "m", "--source", src, "--resolutions", str(RES), "--out", str(ws.data))
    assert code == 0, err[-2000:]
    with zipfile.ZipFile(ws.data / "m" / f"r{RES:03d}" / "shard-00000.zip") as z:
        got = [np.asarray(Image.open(z.open(n)).convert("RGB")).astype(int) for n in sorted(z.namelist())]
    for g, x in zip(got, rgb):
        assert np.abs(g - white_composite(x, alpha)).max() <= 1


# ---------------------------------------------------------------------------- decompression bomb

BOMB = png_bytes(14000, 14000)


def bomb_folder(w: Workspace) -> str:
    folder = w.root / "bomb"
    w.pngs("bomb", faces(3, RES))
    (folder / "big.png").write_bytes(BOMB)
    return str(folder)


@pytest.mark.parametrize("build", [
    pytest.param(lambda w: ["fid", bomb_folder(w), w.pngs("ref", faces(3, RES))], id="fid"),
    pytest.param(lambda w: ["metrics", bomb_folder(w), w.pngs("ref", faces(3, RES))], id="metrics"),
    pytest.param(lambda w: ["run", w.suite(lambda d: d.update(dataset={"kind": "imagefolder", "path": bomb_folder(w)}),
                                           base=DATA_ONLY), "--results", str(w.results)], id="imagefolder-suite"),
    pytest.param(lambda w: ["data", "prepare", "bomb", "--source", bomb_folder(w), "--resolutions", "16",
                            "--out", str(w.data)], id="data-prepare"),
])
def test_decompression_bomb_is_one_line_everywhere(ws, run_cli, build):
    assert len(BOMB) < 100_000
    args = build(ws)
    before = tree(ws.root)
    with guarded(30):
        result = run_cli(*args)
    assert_refused(result, ("big.png", "decompression bomb"))
    assert_unchanged(before, tree(ws.root))
