"""`bench sample CKPT`: a checkpoint's images at any resolutions, with EDM generate.py's conventions.

Seeds are given as EDM gives them (`0-63,100`: ranges and single seeds); image
`seed` is drawn from the latent seeded with that seed alone (models.adapters'
rule), so it does not depend on which other seeds are asked for, on the process
count or on resuming. Output, per resolution R:

* `--format png` (default): `OUTDIR/<R>/<seed>.png`, the seed zero-padded to six
  digits as EDM's generate.py names its files (`OUTDIR/64/000042.png`);
* `--format npz`: `OUTDIR/<R>.npz` holding `images` (NHWC uint8) and `seeds`, in
  ascending seed order, the input `bench metrics` and `bench fid` read (and a
  run's `samples/` hold). While it is made, each image waits as
  `OUTDIR/.in-progress/<R>/<seed>.npy`; the parts are merged and removed at the end.

Every file is written atomically, so an interrupted command leaves only whole
images; run it again and only the missing seeds are made (an existing `<R>.npz`
counts for the seeds it holds, which the new one keeps).

Work is split as bench.dist splits it: the requested seeds, in the order given,
are cut into batches of `--batch`, and batch k is made by rank k % world. A batch
always holds the same seeds, whatever the process count, so 1 process and N
write the same bytes; a batch of which some images exist is made whole and only
the missing ones are written. Rank 0 merges the .npz and prints the summary.

All input problems (seeds, resolutions, steps, the checkpoint, the output folder
and every existing output a resume would keep: PNGs, .npz files, parts) are found
before anything is sampled or written: one BenchError line each. A part in progress
that is not what `_write` leaves is refused, not remade: parts are written
atomically, so a damaged one was put there by something else, and the user decides.
"""
from __future__ import annotations

import os
import shutil
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from bench import dist
from bench.config import MAX_SAMPLER_STEPS
from bench.errors import BenchError
from bench.images import check_resolution
from bench.io import atomic_path, check_output_dir, rank_info
from bench.pretrained import load_model
from bench.progress import console, progress

FORMATS = ("png", "npz")
MAX_SEEDS = 10_000_000  # one command; a larger request is a typo (1-1000000000) more likely than a plan
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed's range (signed, as EDM's seeds are)
PARTS = ".in-progress"  # not a run directory's .parts: this folder is bench sample's own
REUSED = "remove it or choose another --outdir"  # the fix for an existing output that cannot be reused
PNG_MODES = {3: "RGB", 4: "RGBA"}  # image channels -> the PNG mode Image.fromarray writes them as


def parse_seeds(text: str) -> list[int]:
    """EDM's seed syntax: '0-63,100' -> [0, 1, ..., 63, 100], in the order given; BenchError
    for anything else (empty, negative, descending ranges, repeats, too many)."""
    seeds: list[int] = []
    fix = "give seeds like 0-63,100 (ranges and single seeds, each at most once)"
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise BenchError(f"--seeds {text!r}: {item!r} is not a seed or a range of seeds; {fix}") from None
        if lo.strip() != lo or hi.strip() != hi or lo.startswith("+") or hi.startswith(("+", "-")):
            raise BenchError(f"--seeds {text!r}: {item!r} is not a seed or a range of seeds; {fix}")
        if b < a:
            raise BenchError(f"--seeds {text!r}: range {item!r} runs backwards; write it as {b}-{a}")
        if b > MAX_SEED:
            raise BenchError(f"--seeds {text!r}: {b} is larger than the largest seed {MAX_SEED}")
        if len(seeds) + (b - a + 1) > MAX_SEEDS:
            raise BenchError(f"--seeds {text!r} asks for more than {MAX_SEEDS:,} images; split the command")
        seeds.extend(range(a, b + 1))
    if not seeds:
        raise BenchError(f"--seeds {text!r} names no seeds; {fix}")
    if len(set(seeds)) != len(seeds):
        seen, dup = set(), None
        for s in seeds:
            if s in seen:
                dup = s
                break
            seen.add(s)
        raise BenchError(f"--seeds {text!r} names seed {dup} more than once; {fix}")
    return seeds


# ------------------------------------------------------------------ the layout


def png_path(outdir: Path, resolution: int, seed: int) -> Path:
    return Path(outdir) / str(resolution) / f"{seed:06d}.png"


def npz_path(outdir: Path, resolution: int) -> Path:
    return Path(outdir) / f"{resolution}.npz"


def part_path(outdir: Path, resolution: int, seed: int) -> Path:
    return Path(outdir) / PARTS / str(resolution) / f"{seed:06d}.npy"


def _npz_seeds(path: Path, resolution: int, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(seeds, images) of an existing output .npz at `resolution`, or None when there is none;
    BenchError unless it is what bench sample writes there (a resume keeps every image it holds)."""
    if not os.path.lexists(path):
        return None
    if not path.is_file():
        raise BenchError(f"{path} is not a file but is where the {resolution} px .npz goes; {REUSED}")
    try:
        data = np.load(path)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("an .npy, not an .npz")
        with data as z:
            seeds, images = z["seeds"], z["images"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise BenchError(f"{path} exists but is not an output of bench sample ({type(exc).__name__}); "
                         f"{REUSED}") from None
    want = f"NHWC uint8 images of {resolution} x {resolution} x {channels}"
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (resolution, resolution, channels):
        raise BenchError(f"{path} holds {images.dtype} images of shape {images.shape}, not the {want} that "
                         f"bench sample writes at {resolution} px; {REUSED}")
    if seeds.ndim != 1 or seeds.dtype.kind not in "iu" or len(seeds) != len(images):
        raise BenchError(f"{path} holds seeds of dtype {seeds.dtype} and shape {seeds.shape} for "
                         f"{len(images)} images, not one integer seed per image; {REUSED}")
    if len(np.unique(seeds)) != len(seeds) or (len(seeds) and (seeds.min() < 0 or seeds.max() > MAX_SEED)):
        raise BenchError(f"{path} holds repeated or out-of-range seeds (each must be one of 0..{MAX_SEED} once); "
                         f"{REUSED}")
    return seeds.astype(np.int64), images


def _check_folder(path: Path, what: str) -> None:
    """BenchError when `path`, a folder the command writes into, is something else or cannot be written."""
    if os.path.lexists(path) and not path.is_dir():
        raise BenchError(f"{path} is a file but is where bench sample puts {what}; {REUSED}")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise BenchError(f"{path} ({what}) is not writable; make it writable or choose another --outdir")


def _check_part(path: Path, resolution: int, channels: int) -> None:
    """BenchError unless `path` is an image in progress as `_write` leaves it: an .npy of one HxWxC
    uint8 image. Parts are written atomically, so a bad one was put there by something else and is
    refused, not silently overwritten."""
    if not path.is_file():
        raise BenchError(f"{path} is not a file but is where an image in progress goes; delete it and run the "
                         "same command again")
    try:
        img = np.load(path, mmap_mode="r")  # reads the header; a short or pickled file raises
        ok = (isinstance(img, np.ndarray) and img.dtype == np.uint8
              and img.shape == (resolution, resolution, channels))
        del img
    except (OSError, ValueError, EOFError):
        ok = False
    if not ok:
        raise BenchError(f"{path} is not an image in progress of bench sample ({resolution} x {resolution} x "
                         f"{channels} uint8 .npy); delete it and run the same command again")


def _check_png(path: Path, resolution: int, mode: str) -> None:
    """BenchError unless `path` is a whole PNG of resolution x resolution in `mode`, as `_write` leaves one."""
    try:
        with Image.open(path) as img:
            ok = img.format == "PNG" and img.size == (resolution, resolution) and img.mode == mode
            if ok:
                img.verify()  # every chunk's checksum: a truncated or damaged file raises
    except Exception:  # PIL raises many types for bad data
        ok = False
    if not ok:
        raise BenchError(f"{path} is not a {resolution} x {resolution} {mode} PNG of bench sample; {REUSED}")


def check_outputs(outdir: Path, resolutions: Sequence[int], seeds: Sequence[int], format: str,
                  channels: int) -> dict[int, Optional[tuple[np.ndarray, np.ndarray]]]:
    """Check every existing output the command would reuse or write into, before anything is sampled:
    the per-resolution folders and PNGs (png), or the .npz files and the parts in progress (npz), for
    images of `channels` channels (the network's). Returns each resolution's existing .npz (seeds,
    images), or None (always None for png)."""
    if format == "png" and channels not in PNG_MODES:
        raise BenchError(f"the network makes {channels}-channel images, which a PNG cannot hold as they are; "
                         "use --format npz")
    existing: dict[int, Optional[tuple[np.ndarray, np.ndarray]]] = {}
    for r in resolutions:
        if format == "png":
            folder = outdir / str(r)
            _check_folder(folder, f"the {r} px images")
            names = {e.name for e in os.scandir(folder)} if folder.is_dir() else set()
            for s in seeds:
                path = png_path(outdir, r, s)
                if path.name in names:
                    if not path.is_file():
                        raise BenchError(f"{path} is not a file but is where the image of seed {s} goes; {REUSED}")
                    _check_png(path, r, PNG_MODES[channels])
            existing[r] = None
            continue
        _check_folder(outdir / PARTS, "the images in progress")
        existing[r] = npz = _npz_seeds(npz_path(outdir, r), r, channels)
        folder = outdir / PARTS / str(r)
        _check_folder(folder, f"the {r} px images in progress")
        names = {e.name for e in os.scandir(folder)} if folder.is_dir() else set()
        held = set(npz[0].tolist()) if npz is not None else set()
        for s in seeds:
            path = part_path(outdir, r, s)
            if s not in held and path.name in names:
                _check_part(path, r, channels)
    return existing


# ---------------------------------------------------------------------- sampling


@dataclass
class SampleSummary:
    """What one `bench sample` did, per resolution: images written and found already there."""

    outdir: Path
    format: str
    written: dict[int, int] = field(default_factory=dict)
    existing: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def paths(self, resolution: int) -> Path:
        """The folder (png) or file (npz) holding the images at `resolution`."""
        return (self.outdir / str(resolution)) if self.format == "png" else npz_path(self.outdir, resolution)


def sample_checkpoint(checkpoint: str | Path, resolutions: Sequence[int], seeds: Sequence[int], outdir: str | Path,
                      batch: int = 32, steps: int = 18, format: str = "png", device: str = "auto",
                      precision: str = "fp32") -> SampleSummary:
    """Write the images of `seeds` at each of `resolutions` under `outdir` (see the module docstring)."""
    outdir = Path(outdir)
    if format not in FORMATS:
        raise BenchError(f"--format {format!r} is not known; use one of: {', '.join(FORMATS)}")
    if batch < 1 or steps < 1:
        raise BenchError(f"--batch and --steps must be at least 1 (got {batch} and {steps})")
    if steps > MAX_SAMPLER_STEPS:
        raise BenchError(f"--steps {steps} is more than {MAX_SAMPLER_STEPS:,} (a suite's sample.steps bound); "
                         "the default is 18")
    outdir = check_output_dir(outdir, "--outdir")  # (with ~ expanded)
    resolutions = [check_resolution(r) for r in resolutions]
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise BenchError("seeds must be distinct non-negative integers; give them like 0-63,100")
    dev = dist.pick_device(device)
    model = load_model(checkpoint, dev, sample_steps=steps, precision=precision)
    problems = [f"--resolutions: {r} px: {p}" for r in resolutions for p in [model.resolution_problem(r)] if p]
    if problems:
        raise BenchError("\n".join(problems))
    existing_npz = check_outputs(outdir, resolutions, seeds, format, model.arch.img_channels)

    started = not dist.enabled()
    rank, world = dist.init(dev)
    summary = SampleSummary(outdir, format)
    t0 = time.perf_counter()
    for r in resolutions:
        made, found = _sample_resolution(model, r, seeds, outdir, batch, format, existing_npz.get(r), rank, world)
        summary.written[r] = int(dist.all_reduce_sum(made))
        summary.existing[r] = len(seeds) - summary.written[r] if format == "png" else found
    summary.seconds = time.perf_counter() - t0
    if rank == 0:
        _print_summary(summary, checkpoint, dev)
    dist.barrier()
    if started and world > 1:
        dist.shutdown()
    return summary


def _done(outdir: Path, r: int, seeds: Sequence[int], format: str,
          npz: Optional[tuple[np.ndarray, np.ndarray]]) -> set[int]:
    if format == "png":
        return {s for s in seeds if png_path(outdir, r, s).is_file()}
    held = set(npz[0].tolist()) if npz is not None else set()
    return {s for s in seeds if s in held or part_path(outdir, r, s).is_file()}


def _sample_resolution(model, r: int, seeds: list[int], outdir: Path, batch: int, format: str,
                       npz: Optional[tuple[np.ndarray, np.ndarray]], rank: int, world: int) -> tuple[int, int]:
    """(images this rank wrote, requested images that were there already) at resolution r."""
    done = _done(outdir, r, seeds, format, npz)
    batches = [seeds[lo:lo + batch] for lo in range(0, len(seeds), batch)]
    mine = [k for k in dist.my_batches(len(batches), rank, world) if any(s not in done for s in batches[k])]
    todo = sum(sum(s not in done for s in batches[k]) for k in mine)
    if world > 1:
        console.log(f"(rank {rank}/{world}) sample {r} px: batches {dist.describe_batches(mine) or 'none'} "
                    f"of {len(batches)} ({todo} images)")
    written = 0
    with progress() as p:
        task = p.add_task(f"sample {r} px", total=todo, unit="img")
        for k in mine:
            images = model.sample_seeds(batches[k], r, batch_size=len(batches[k]))
            for s, img in zip(batches[k], images):
                if s in done:
                    continue
                _write(img, png_path(outdir, r, s) if format == "png" else part_path(outdir, r, s), format)
                written += 1
                p.advance(task, 1)
    if format == "npz":
        dist.barrier()
        if rank == 0:
            _merge_npz(outdir, r, seeds, npz)
        dist.barrier()
    return written, len(done)


def _write(img: np.ndarray, path: Path, format: str) -> None:
    with atomic_path(path) as tmp:
        if format == "png":
            Image.fromarray(img).save(tmp, format="PNG")
        else:
            with open(tmp, "wb") as f:
                np.save(f, img)


def _merge_npz(outdir: Path, r: int, seeds: list[int], npz: Optional[tuple[np.ndarray, np.ndarray]]) -> None:
    """OUTDIR/<r>.npz: the images it held before and every requested seed's, by ascending seed."""
    images = dict(zip(npz[0].tolist(), npz[1])) if npz is not None else {}
    if npz is not None and set(seeds) <= set(images):
        return  # nothing new
    for s in seeds:
        if s not in images:
            images[s] = np.load(part_path(outdir, r, s))
    order = sorted(images)
    with atomic_path(npz_path(outdir, r)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=np.stack([images[s] for s in order]), seeds=np.array(order, dtype=np.int64))
    shutil.rmtree(outdir / PARTS / str(r), ignore_errors=True)
    try:
        (outdir / PARTS).rmdir()
    except OSError:
        pass  # other resolutions' parts are still there


def _print_summary(summary: SampleSummary, checkpoint, device) -> None:
    total = sum(summary.written.values())
    rate = f", {total / summary.seconds:.1f} img/s" if total and summary.seconds > 0 else ""
    for r in summary.written:
        console.log(f"{r} px: {summary.written[r]} written, {summary.existing[r]} already there -> "
                    f"{summary.paths(r)}")
    console.log(f"sampled {checkpoint} on {device}: {total} images written in {summary.seconds:.1f} s{rate}; "
                f"{sum(summary.existing.values())} were already there")
