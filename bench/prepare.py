"""`bench data prepare`: a folder or .zip of images -> PNG shards per resolution and a manifest.

ROOT/NAME/ (ROOT: --out, else $DFU_BENCH_DATA, else data/) ends up holding

    manifest.json            what was made from what; written last, by rank 0
    r064/shard-00000.zip     images 0 .. shard_size-1 at 64 px, as 00000000.png, 00000001.png, ...
    r064/shard-00000.json    sidecar: count, bytes and sha256 of that archive
    prepare.json             only while unfinished: what the verify pass found

and `kind: prepared` (bench.datasets.PreparedDataset) reads it.

Every image goes through bench.images.decode_rgb -> bench.datasets' centre_square ->
resize_square, the path ImageFolder uses, so prepared data equals imagefolder
data with the same filter (--filter: lanczos or bilinear-aa) pixel for pixel.  PNGs are stored uncompressed (compress_level 0) in
ZIP_STORED archives, as EDM's dataset_tool stores them: reading an image costs a
copy, not an inflate.  Entries carry a fixed timestamp, so the same source and
Pillow give byte-identical archives and checksums.

The work, in order:
1. list the source and decode every file once (the verify pass).  A bad file
   stops everything before a byte is written, unless --skip-bad leaves it out;
2. shard k (images k*shard_size ..) is done by rank k % world: each source
   image is decoded once and written at every resolution its shard still lacks.
   A shard is finished when its archive matches its sidecar's sha256, so a
   killed run, started again, redoes only what is missing;
3. rank 0 writes manifest.json once every shard exists.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import itertools
import re
import time
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import PIL
from PIL import Image

import bench
from bench.datasets import (CROP_RULE, DEFAULT_SHARD_SIZE, MANIFEST_NAME, PREPARED_FORMAT, RESIZE_FILTER,
                            RESIZE_FILTERS, centre_square, check_dataset_name, check_filter, entry_name,
                            manifest_problem, resize_square, resolution_dir, shard_path, shown_path)
from bench.errors import BenchError
from bench.images import ImageFiles, check_resolution, decode_rgb, verify_image
from bench.io import atomic_path, data_root, rank_info, read_json_object, sha256_file, write_json
from bench.progress import console, progress

PROGRESS_NAME = "prepare.json"
PNG_COMPRESS_LEVEL = 0
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: entries do not depend on the clock
_BAD_SHOWN = 3  # bad files named in the error; the rest are counted
_POLL_SECONDS = 1.0  # how often ranks look for each other's files


def _reason(err: Exception) -> str:
    # PIL names the in-memory buffer ("<_io.BytesIO object at 0x...>"): noise that changes every run
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(err))
    return " ".join(text.split()) or type(err).__name__


def _listing_digest(folder: ImageFiles) -> str:
    """sha256 over every listed file's relative path and size: a cheap 'same source?' test."""
    if folder.container == "zip":
        with zipfile.ZipFile(folder.path) as zf:
            sizes = {info.filename: info.file_size for info in zf.infolist()}
    else:
        sizes = {rel: (folder.path / rel).stat().st_size for rel in folder.files}
    h = hashlib.sha256()
    for rel in folder.files:
        h.update(f"{rel}\0{sizes[rel]}\n".encode())
    return h.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> Optional[dict]:
    try:
        return read_json_object(path)
    except ValueError:
        return None


# ----------------------------------------------------------------------------
# step 1: what is there, and is it the same dataset as last time


def _check_same(prior: dict, request: dict, dest: Path) -> None:
    """Refuse to mix two datasets under one NAME: the arguments and the source listing must match."""
    def args(d: dict) -> list[str]:
        # a dataset prepared before --filter existed was made with the default
        return [f"--source {d.get('source')}", "--skip-bad" if d.get("skip_bad") else "no --skip-bad",
                f"--shard-size {d.get('shard_size')}", f"--filter {d.get('filter', RESIZE_FILTER)}"]

    then, now = args(prior), args(request)
    if then != now:
        changed = [(a, b) for a, b in zip(then, now) if a != b]
        raise BenchError(f"dataset {request['name']} in {shown_path(dest)} was prepared with other arguments "
                         f"(then: {', '.join(a for a, _ in changed)}; now: {', '.join(b for _, b in changed)}); "
                         f"use another NAME or delete {shown_path(dest)}")
    if prior.get("source_listing_sha256") != request["source_listing_sha256"]:
        raise BenchError(f"the files in {request['source']} changed since dataset {request['name']} was prepared "
                         f"({prior.get('source_count')} then, {request['source_count']} now, or other names or "
                         f"sizes); use another NAME or delete {shown_path(dest)}")


def _verify(folder: ImageFiles, skip_bad: bool) -> dict:
    """Decode every source file once; the bad ones either stop everything or are left out."""
    bad, sides = [], []
    with progress() as p:
        task = p.add_task(f"verify {len(folder)} images", total=len(folder), unit="img")
        for rel in folder.files:
            try:
                sides.append(verify_image(folder.read_bytes(rel)))
            except Exception as err:  # PIL raises many types for bad data
                bad.append({"file": rel, "reason": _reason(err)})
            p.advance(task)
    if bad and not skip_bad:
        shown = ", ".join(f"{b['file']} ({b['reason']})" for b in bad[:_BAD_SHOWN])
        more = f" and {len(bad) - _BAD_SHOWN} more" if len(bad) > _BAD_SHOWN else ""
        raise BenchError(f"{len(bad)} of {len(folder)} images in {folder.path} cannot be decoded: {shown}{more}; "
                         "fix or remove them, or pass --skip-bad to leave them out")
    if not sides:
        raise BenchError(f"none of the {len(folder)} images in {folder.path} can be decoded "
                         f"(first: {bad[0]['file']}: {bad[0]['reason']}); check the source")
    return {"skipped": bad, "kept_count": len(sides), "min_side": min(sides), "max_side": max(sides)}


def _wait_for(paths: Sequence[Path], what: str) -> Path:
    """Other ranks wait for rank 0's verify pass; torchrun stops them if rank 0 fails."""
    console.log(f"waiting for rank 0: {what}")
    while True:
        for path in paths:
            if path.is_file():
                return path
        time.sleep(_POLL_SECONDS)


# ----------------------------------------------------------------------------
# step 2: shards


def _sidecar_path(dest: Path, resolution: int, shard: int) -> Path:
    return dest / shard_path(resolution, shard).replace(".zip", ".json")


def _finished(dest: Path, resolution: int, shard: int, count: int, checksum: bool = True) -> Optional[dict]:
    """The shard's sidecar if its archive is complete (sha256 checked unless checksum=False), else None."""
    archive, side = dest / shard_path(resolution, shard), _sidecar_path(dest, resolution, shard)
    if not archive.is_file():
        return None
    meta = _read_json(side)
    if meta is None or meta.get("count") != count or meta.get("bytes") != archive.stat().st_size:
        return None
    if checksum and sha256_file(archive) != meta.get("sha256"):
        return None
    return meta


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _write_shard(folder: ImageFiles, kept: list[str], shard: int, shard_size: int, resolutions: list[int],
                 dest: Path, filter: str, advance) -> None:
    """Write shard `shard` at each of `resolutions`, decoding every source image once, then its sidecars."""
    lo, hi = shard * shard_size, min(len(kept), (shard + 1) * shard_size)
    for r in resolutions:  # temp files of a killed run (SIGKILL skips atomic_path's clean-up)
        for stale in (dest / resolution_dir(r)).glob(f".{Path(shard_path(r, shard)).name}.*.tmp"):
            stale.unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        archives = {r: stack.enter_context(zipfile.ZipFile(stack.enter_context(atomic_path(dest / shard_path(r, shard))),
                                                           "w", zipfile.ZIP_STORED))
                    for r in resolutions}
        for i in range(lo, hi):
            rel = kept[i]
            try:
                square = centre_square(decode_rgb(folder.read_bytes(rel)))
            except Exception as err:
                raise BenchError(f"cannot decode '{rel}' in {folder.path} ({_reason(err)}), though it passed the "
                                 "verify pass; the source changed while preparing: run the command again") from err
            for r, zf in archives.items():
                info = zipfile.ZipInfo(entry_name(i), date_time=_ZIP_DATE)
                info.external_attr = 0o644 << 16  # ordinary file permissions when unzipped
                zf.writestr(info, _png(resize_square(square, r, filter)))
            advance()
    # Archives are in place now; a sidecar is written only after its archive, so
    # a kill between the two leaves an archive that the next run redoes.
    for r in resolutions:
        archive = dest / shard_path(r, shard)
        write_json(_sidecar_path(dest, r, shard),
                   {"file": shard_path(r, shard), "resolution": r, "shard": shard, "first": lo, "count": hi - lo,
                    "bytes": archive.stat().st_size, "sha256": sha256_file(archive)})


# ----------------------------------------------------------------------------
# the command


def prepare(name: str, source: str | Path, resolutions: Sequence[int], out: str | Path | None = None,
            skip_bad: bool = False, shard_size: int = DEFAULT_SHARD_SIZE, filter: str = RESIZE_FILTER) -> dict:
    """Make (or complete) ROOT/NAME from the images in `source`; returns a summary.

    Re-running with the same arguments resumes an interrupted run, adds new
    resolutions, or does nothing when everything is there.
    """
    start = time.perf_counter()
    name = check_dataset_name(name)
    filter = check_filter(filter)
    resolutions = sorted({check_resolution(r) for r in resolutions})
    if not resolutions:
        raise BenchError("no resolutions given; pass --resolutions such as 32,48,64")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise BenchError(f"--shard-size must be a positive integer, got {shard_size!r}")
    rank, world = rank_info()
    root = Path(out).expanduser() if out else data_root()
    dest = root / name
    folder = ImageFiles(source)  # lists the files; BenchError if missing or empty
    request = {"name": name, "source": str(folder.path.resolve()), "source_container": folder.container,
               "source_count": len(folder), "source_listing_sha256": _listing_digest(folder),
               "skip_bad": bool(skip_bad), "shard_size": shard_size, "filter": filter}

    manifest_file, progress_file = dest / MANIFEST_NAME, dest / PROGRESS_NAME
    manifest = _read_json(manifest_file) if manifest_file.is_file() else None
    if manifest_file.is_file() and (manifest is None or manifest.get("format") != PREPARED_FORMAT):
        raise BenchError(f"{shown_path(manifest_file)} is not a {PREPARED_FORMAT} manifest; "
                         f"use another NAME or delete {shown_path(dest)}")
    problem = manifest_problem(manifest) if manifest is not None else None
    if problem:
        raise BenchError(f"{shown_path(manifest_file)} is damaged: {problem}; delete {shown_path(dest)} and "
                         "prepare it again")
    state = manifest
    if manifest is None and progress_file.is_file():
        state = _read_json(progress_file)
        if state is None:  # written atomically, so only a hand edit gets here
            raise BenchError(f"{shown_path(progress_file)} is unreadable; delete {shown_path(dest)} and "
                             "prepare it again")
    if state is None and dest.is_dir() and any(not p.name.startswith(".") for p in dest.iterdir()):
        raise BenchError(f"{shown_path(dest)} exists but holds no {MANIFEST_NAME} or {PROGRESS_NAME}, so it is "
                         "not a dataset this command made; use another NAME or delete it")
    if state is not None:
        _check_same(state, request, dest)

    # Nothing to do when the manifest lists every resolution and its archives are there.
    if manifest is not None and all(str(r) in manifest["resolutions"] for r in resolutions) and all(
            (dest / s["file"]).is_file() and (dest / s["file"]).stat().st_size == s["bytes"]
            for r in resolutions for s in manifest["resolutions"][str(r)]["shards"]):
        console.log(f"{name}: already prepared in {shown_path(dest)} at {', '.join(map(str, resolutions))} px "
                    f"({manifest['kept_count']} images); nothing to do")
        return {"name": name, "path": str(dest), "kept": manifest["kept_count"],
                "skipped": len(manifest["skipped"]), "written": [], "reused": 0, "nothing_to_do": True}

    if state is None:
        if rank == 0:
            state = {"format": PREPARED_FORMAT, **request, **_verify(folder, skip_bad), "created": _now()}
            write_json(progress_file, state)
        else:
            state = _read_json(_wait_for([progress_file, manifest_file], "verify pass"))
            _check_same(state, request, dest)
    bad = {b["file"] for b in state["skipped"]}
    kept = [f for f in folder.files if f not in bad]
    if len(kept) != state["kept_count"]:  # the listing digest matched, so this is a damaged state file
        raise BenchError(f"{shown_path(progress_file)} does not match the source; delete {shown_path(dest)} "
                         "and prepare it again")

    n_shards = -(-len(kept) // shard_size)
    mine = [k for k in range(n_shards) if k % world == rank]

    def count(k: int) -> int:  # images in shard k: shard_size, except in the last one
        return min(len(kept), (k + 1) * shard_size) - k * shard_size

    pending: dict[int, list[int]] = {}
    with progress() as p:
        # checksums of a resumed run's archives: seconds per GB, worth a bar
        task = p.add_task(f"check finished shards of {name}", total=len(mine) * len(resolutions), unit="shard",
                          visible=any((dest / resolution_dir(r)).is_dir() for r in resolutions))
        for k in mine:
            for r in resolutions:
                if _finished(dest, r, k, count(k)) is None:
                    pending.setdefault(k, []).append(r)
                p.advance(task)
    reused = len(mine) * len(resolutions) - sum(len(rs) for rs in pending.values())

    todo = sum(count(k) for k in pending)
    with progress() as p:
        task = p.add_task(f"prepare {name} at {','.join(map(str, resolutions))} px", total=todo, unit="img")
        for k, rs in pending.items():
            _write_shard(folder, kept, k, shard_size, rs, dest, filter, lambda: p.advance(task))
    written = [shard_path(r, k) for k, rs in pending.items() for r in rs]

    summary = {"name": name, "path": str(dest), "kept": len(kept), "skipped": len(state["skipped"]),
               "written": written, "reused": reused, "nothing_to_do": False}
    if rank != 0:
        console.log(f"rank {rank}: {len(written)} shard archives written, {reused} reused")
        return summary

    # Rank 0 lists every shard, its own and the other ranks', once all exist.
    entries: dict[int, list[dict]] = {r: [None] * n_shards for r in resolutions}
    for attempt in itertools.count():
        missing = 0
        for r in resolutions:
            for k in range(n_shards):
                if entries[r][k] is None:
                    entries[r][k] = _finished(dest, r, k, count(k), checksum=False)
                    missing += entries[r][k] is None
        if not missing:
            break
        if attempt == 0:
            console.log(f"waiting for the other ranks' {missing} shard archives")
        time.sleep(_POLL_SECONDS)
    previous = (manifest or {}).get("resolutions", {})
    per_resolution = {int(r): v for r, v in previous.items()}
    for r in resolutions:
        per_resolution[r] = {"dir": resolution_dir(r), "count": len(kept),
                             "shards": [{key: e[key] for key in ("file", "first", "count", "bytes", "sha256")}
                                        for e in entries[r]]}
    final = {**{k: state[k] for k in ("format", "name", "source", "source_container", "source_count",
                                     "source_listing_sha256", "skip_bad", "kept_count", "skipped",
                                     "min_side", "max_side", "created")},
             "mode": "RGB", "crop": CROP_RULE, "filter": filter, "filter_description": RESIZE_FILTERS[filter][1],
             "image_format": f"PNG (compress_level {PNG_COMPRESS_LEVEL}) in ZIP_STORED archives, "
                             "entry i = f'{i:08d}.png' in shard i // shard_size",
             "shard_size": shard_size,
             "resolutions": {str(r): per_resolution[r] for r in sorted(per_resolution)},
             "updated": _now(), "dfu_bench_version": bench.__version__, "pillow_version": PIL.__version__}
    write_json(manifest_file, final)
    progress_file.unlink(missing_ok=True)

    skipped = state["skipped"]
    console.log(f"{name}: {len(kept)} of {state['source_count']} images kept"
                + (f", {len(skipped)} skipped ({', '.join(b['file'] for b in skipped[:_BAD_SHOWN])}"
                   f"{' ...' if len(skipped) > _BAD_SHOWN else ''}; listed in the manifest)" if skipped else ""))
    console.log(f"{name}: {len(written)} shard archives written, {reused} reused, at "
                f"{', '.join(map(str, resolutions))} px in {time.perf_counter() - start:.1f} s; "
                f"{shown_path(manifest_file)}")
    small = [r for r in resolutions if r > state["min_side"]]
    if small:
        console.log(f"{name}: note: some sources are only {state['min_side']} px, so images at "
                    f"{', '.join(map(str, small))} px are upsampled")
    return summary
