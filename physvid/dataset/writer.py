"""Writing datasets, the public entry points: any source of sequences -> sharded HDF5 files + manifest.json (the
format is docs/FORMAT.md). `generate` renders (generation.RenderSource); `write_dataset` takes any other source
(e.g. real-video clips for stmoe); `estimate` plans a run; `finalize_dataset` writes the manifest.

Where the rest lives (docs/layout.md): one shard file in shard.py, the worker processes in pool.py, the dataset
folder's state (resume, free space, clean-up) in folder.py, the render source and its noise policy in generation.py,
what a run prints in summary.py.

Why the data never depends on --workers or --shard-size: the source is a pure function of the global index, and each
shard is written by exactly one process, in index order, with a fixed batch size, so even the bytes of a shard only
depend on (source, shard size, compression).

Crash safety: a shard is built in memory, written under a temporary name, fsynced and renamed into place; its sha256
is then recorded in DIR/.physvid/. A re-run keeps every shard whose file matches its record and regenerates the rest;
the manifest is written last, once every shard exists and verifies. Workers whose parent dies (kill -9) stop at their
next batch and remove their temporary file.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..checks import Checks
from ..config import RenderConfig
from ..errors import ConfigError, DatasetError, NotADatasetError
from .budget import check_memory, check_size
from .card import receiver_files_missing, write_receiver_files
from .folder import (DISK_SAMPLE, attrs_identity, check_disk, clean_failed, complete, existing_plan, known_records,
                     plan_frames, prepare_folder, shard_attrs, verified, write_plan)
from .generation import NOISE_TOLERANCE, RenderSource, check_noise_reachable, render_config
from .layout import COMPRESSIONS, MANIFEST, STATE_DIR, ShardSpec, atomic_write_text, dumps, read_json, shard_specs
from .lock import lock_folder
from .manifest import differences, identity, make_manifest, make_plan
from .pool import STOP_GRACE, check_main_guard, run_tasks, stop_pool
from .shard import BATCH, Source, io_error, remove_temp_files, write_h5, write_shard
from .splits import parse_splits, split_ranges, splits_problem
from .summary import Estimate, Summary, human_bytes

Progress = Callable[[int, int], None]  # (sequences just finished, total sequences of this run's shard range)

SHARD_SIZE = 1000  # the largest default shard (see default_shard_size)
_check = Checks(ConfigError)

# Names this module had before it was split by concern (issue 22), for callers that still import them from here:
# the imports above re-export them (listed so that pyflakes sees them used), two under their old private names.
_OLD_NAMES = (DISK_SAMPLE, attrs_identity, shard_attrs, NOISE_TOLERANCE, check_noise_reachable, STOP_GRACE,
              remove_temp_files)
_stop_pool = stop_pool
_write_h5 = write_h5


# --------------------------------------------------------------------------- argument checks
def _layout(n, shard_size, workers, compression, shard_range):
    """Validate the run's size options and cut it into shards: (n, shard_size, workers, specs, (first, stop) shard)."""
    n = _check_int("n", n, 1)
    shard_size = _check_int("shard_size", shard_size, 1)
    workers = resolve_workers(workers)
    _check.choice("compression", compression, COMPRESSIONS)
    check_size(n, shard_size)
    specs = shard_specs(n, shard_size)
    return n, shard_size, workers, specs, resolve_shard_range(shard_range, len(specs))


def _check_int(name: str, value: Any, low: int) -> int:
    return _check.int(name, value, low=low)


def resolve_shard_range(shard_range: Any, shards: int) -> tuple[int, int]:
    """None -> every shard; (a, b) or "a:b" -> shards a..b-1 (half-open, like a Python slice); "a" -> shard a only."""
    if shard_range is None:
        return 0, shards
    if isinstance(shard_range, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d*)\s*)?", shard_range)
        if not m:
            raise ConfigError(f"--shard-range must look like A:B (shards A..B-1), A: or A, got {shard_range!r}")
        a = int(m.group(1))
        b = a + 1 if m.group(2) is None else (int(m.group(2)) if m.group(2) else shards)
    else:
        a, b = (int(v) for v in shard_range)
    if not 0 <= a < b <= shards:
        raise ConfigError(f"--shard-range {a}:{b} is outside this dataset's {shards} shard(s) "
                          f"(valid: 0 <= A < B <= {shards})")
    return a, b


def default_shard_size(n: int) -> int:
    """One shard up to SHARD_SIZE sequences (written in-process: no worker start-up, so small jobs are fast); beyond,
    up to 16 shards of at least 250 so that mid-size jobs spread over up to 16 cores; SHARD_SIZE from 16,000 on.
    From n alone, never from the worker count: every machine, every -j and every job of an array cuts the same shards,
    so the files are the same bytes everywhere."""
    n = _check_int("n", n, 1)
    return SHARD_SIZE if n <= SHARD_SIZE else min(SHARD_SIZE, max(250, -(-n // 16)))


def resolve_shard_size(shard_size: int | None, n: int, out: Path, overwrite: bool) -> int:
    """The given shard size; else the one of the dataset already in `out` (resuming); else default_shard_size(n)."""
    if shard_size is not None:
        return shard_size
    old = None if overwrite or not out.is_dir() else existing_plan(out)
    if old is not None and old.get("total_sequences") == n and isinstance(old.get("shard_size"), int):
        return old["shard_size"]
    return default_shard_size(n)


ESTIMATE_REPEATS = 3  # timings of the dry run's sample


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: a container or `taskset` may allow fewer than exist)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    return _check_int("workers", workers, 1)


def write_dataset(out: str | os.PathLike, source: Source, n: int, config: dict[str, Any], *, seed: int | None = None,
                  source_name: str | None = None, shard_size: int | None = None, workers: int | None = None,
                  compression: str = "gzip", shard_range: Any = None, overwrite: bool = False,
                  progress: Progress | None = None, finalize: bool | None = None,
                  notice: Callable[[str], None] | None = None, splits: str | dict | None = None) -> Summary:
    """Write sequences 0..n-1 of `source` into DIR `out` as shards + manifest (docs/FORMAT.md).

    `config` is any JSON-able dict describing the source (stored verbatim in the manifest and in every shard);
    `shard_range` (a, b) writes only shards a..b-1, for job arrays; `finalize` (default: when the whole range was
    asked for) writes the manifest once every shard exists and verifies. Re-running resumes; `overwrite` starts fresh.
    `shard_size` None: see resolve_shard_size. A source with a `warm_up(notice)` method is warmed up before the clock
    starts (`notice` gets a line when it compiles kernels, and one with the time it took). `splits` (see
    finalize_dataset) are recorded in the manifest; asking for other splits on a finished dataset rewrites only the
    manifest and the card.
    """
    if splits is not None:
        parse_splits(splits)  # a usage error now, before any folder is touched
    shard_size = resolve_shard_size(shard_size, n, Path(out), overwrite)
    n, shard_size, workers, specs, (a, b) = _layout(n, shard_size, workers, compression, shard_range)
    if finalize is None:
        finalize = (a, b) == (0, len(specs))
    name = source_name or getattr(source, "name", None) or type(source).__name__
    plan = make_plan(source=name, config=config, seed=seed, n=n, shard_size=shard_size, compression=compression)
    out = Path(out)
    # One writer per folder (lock.py): taken before --overwrite may delete anything, otherwise once DIR is known to
    # hold this dataset -- unless it is already complete: then nothing is written and concurrent callers that only
    # want its path (stmoe reproduce's workers) must not refuse each other.
    lock = lock_folder(out, exclusive=finalize) if overwrite and out.is_dir() else None
    try:
        created = prepare_folder(out, plan, overwrite)
        if lock is None and not complete(out, specs[a:b], finalize):
            lock = lock_folder(out, exclusive=finalize)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    summary = Summary(out=out, total_sequences=n, shard_range=(a, b))
    try:
        write_plan(out, plan)
        records = known_records(out)
        todo = [s for s in specs[a:b] if not verified(out, s, records.get(s.shard))]
        if min(workers, len(todo)) > 1:
            check_main_guard()
        if todo and hasattr(source, "warm_up"):
            summary.compile_seconds = source.warm_up(notice)
        if todo:
            check_disk(out, todo, source, plan)
        start = time.perf_counter()
        kept = [s for s in specs[a:b] if s not in todo]
        total = sum(s.count for s in specs[a:b])
        summary.shards_kept = len(kept)
        summary.sequences_kept = sum(s.count for s in kept)
        if progress is not None:
            progress(summary.sequences_kept, total)
        report = (lambda k: progress(k, total)) if progress is not None else None
        run_tasks(out, todo, source, plan, workers, report or (lambda k: None))
        summary.shards_written = len(todo)
        summary.sequences_written = sum(s.count for s in todo)
        summary.frames_written = summary.sequences_written * plan_frames(out, specs[a:b])
        summary.seconds = time.perf_counter() - start
        summary.bytes = sum((out / s.file).stat().st_size for s in specs[a:b])
        if finalize and (todo or not (out / MANIFEST).is_file() or receiver_files_missing(out)
                         or _splits_change(out, n, splits)):
            finalize_dataset(out, splits=splits)
        summary.finalized = (out / MANIFEST).is_file() and finalize
    except BaseException as exc:
        clean_failed(out, created, specs[a:b])
        if isinstance(exc, OSError):
            raise io_error(exc, Path(exc.filename) if getattr(exc, "filename", None) else out) from None
        raise
    finally:
        if lock is not None:
            lock.release()
    return summary


def finalize_dataset(out: str | os.PathLike, expect: dict[str, Any] | None = None,
                     splits: str | dict | None = None) -> dict[str, Any]:
    """Check that every shard of DIR exists and matches its recorded sha256, then write the receivers' files
    (SHA256SUMS, README.md, croissant.json, preview.png: dataset/card.py) and, last, DIR/manifest.json.

    `expect` (a plan from `render_plan`) makes it refuse a folder that holds a different dataset. `splits`
    ("train=0.8,val=0.1,test=0.1" or {name: fraction}) records named index ranges in the manifest; None keeps the
    splits an earlier finalize recorded.
    """
    fractions = parse_splits(splits) if splits is not None else None
    out = Path(out)
    plan = existing_plan(out) if out.is_dir() else None
    if plan is None:
        raise NotADatasetError(f"{out} holds no physvid dataset to finalize; run `physvid generate ... --out {out}` "
                               "first")
    if expect is not None and identity(expect) != plan:
        diff = differences(plan, identity(expect))
        raise ConfigError(f"{out} holds a different dataset ({'; '.join(diff[:3])}); finalize it without those options "
                          "or fix them")
    specs = shard_specs(plan["total_sequences"], plan["shard_size"])
    records = known_records(out)
    missing = [s.file for s in specs if not (out / s.file).is_file()]
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"cannot finalize {out}: {len(missing)} of {len(specs)} shard(s) missing ({listed}); run "
                           "the remaining --shard-range jobs (or the same generate command without it) first")
    bad = [s.file for s in specs if not verified(out, s, records.get(s.shard))]
    if bad:
        raise DatasetError(f"cannot finalize {out}: {', '.join(bad[:5])} do(es) not match the recorded checksum or "
                           "were never recorded as finished; re-run the generate command (same options) to redo them")
    schemas = {json_key(records[s.shard]["datasets"]) for s in specs}
    if len(schemas) != 1:
        raise DatasetError(f"cannot finalize {out}: shards disagree on dataset shapes or dtypes; use --overwrite")
    manifest = make_manifest(plan, records[specs[0].shard]["datasets"], [records[s.shard]["shard"] for s in specs])
    ranges = (split_ranges(plan["total_sequences"], fractions) if fractions is not None
              else _recorded_splits(out, plan["total_sequences"]))
    if ranges is not None:  # only when asked for: a manifest without splits keeps the bytes it always had
        manifest["splits"] = ranges
    text = dumps(manifest)
    write_receiver_files(out, manifest, text)
    atomic_write_text(out / MANIFEST, text)
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    for tmp in out.glob("shard-*.h5.tmp"):
        tmp.unlink(missing_ok=True)
    return manifest


def _splits_change(out: Path, n: int, splits: str | dict | None) -> bool:
    return splits is not None and _recorded_splits(out, n) != split_ranges(n, parse_splits(splits))


def _recorded_splits(out: Path, n: int) -> dict[str, list[int]] | None:
    try:
        splits = read_json(out / MANIFEST).get("splits")
    except (OSError, ValueError, AttributeError):
        return None
    return splits if splits is not None and splits_problem(splits, n) is None else None


def json_key(obj: Any) -> str:
    return dumps(obj)


def render_plan(config: RenderConfig | dict, n: int, *, shard_size: int | None = None, compression: str = "gzip",
                out: str | os.PathLike | None = None) -> dict:
    """The identity of the dataset `generate` would write into `out` (compared with what a folder already holds)."""
    config = config if isinstance(config, RenderConfig) else RenderConfig.from_dict(config)
    shard_size = resolve_shard_size(shard_size, n, Path(out), False) if out is not None else shard_size
    shard_size = default_shard_size(n) if shard_size is None else shard_size
    return make_plan(source=RenderSource.name, config=config.to_dict(), seed=config.seed, n=_check_int("n", n, 1),
                     shard_size=_check_int("shard_size", shard_size, 1), compression=compression)


def _check_memory(config: RenderConfig, n, shard_size, workers, shard_range) -> None:
    n, shard_size, workers, _specs, (a, b) = _layout(n, shard_size, workers, "none", shard_range)
    check_memory(config, shard_size, workers, BATCH, b - a)


def generate(config: RenderConfig | dict, n: int, out: str | os.PathLike, *, shard_size: int | None = None,
             workers: int | None = None, compression: str = "gzip", shard_range: Any = None, overwrite: bool = False,
             progress: Progress | None = None, finalize: bool | None = None,
             notice: Callable[[str], None] | None = None, splits: str | dict | None = None) -> Summary:
    """Render sequences 0..n-1 of `config` into the dataset folder `out` (see `write_dataset`)."""
    config = render_config(config)
    if shard_size is None and isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1:
        shard_size = resolve_shard_size(None, int(n), Path(out), overwrite)  # the size write_dataset will use
    _check_memory(config, n, shard_size, workers, shard_range)
    return write_dataset(out, RenderSource(config), n, config.to_dict(), seed=config.seed,
                         source_name=RenderSource.name,
                         shard_size=shard_size, workers=workers, compression=compression, shard_range=shard_range,
                         overwrite=overwrite, progress=progress, finalize=finalize, notice=notice, splits=splits)


def estimate(config: RenderConfig | dict, n: int, out: str | os.PathLike, *, shard_size: int | None = None,
             workers: int | None = None, compression: str = "gzip", shard_range: Any = None, overwrite: bool = False,
             sample: int = 64, notice: Callable[[str], None] | None = None) -> Estimate:
    """Plan a `generate` run without touching `out`: shards, bytes and time, measured on `sample` sequences."""
    import h5py

    config = render_config(config)
    out = Path(out)
    shard_size = resolve_shard_size(shard_size, n, out, overwrite)
    n, shard_size, workers, specs, (a, b) = _layout(n, shard_size, workers, compression, shard_range)
    check_memory(config, shard_size, workers, BATCH, b - a)
    notes: list[str] = []
    todo = specs[a:b]
    plan = make_plan(source=RenderSource.name, config=config.to_dict(), seed=config.seed, n=n, shard_size=shard_size,
                     compression=compression)
    if out.is_dir() and not overwrite:
        old = existing_plan(out)
        if old is not None and old != identity(plan):
            notes.append(f"{out} holds a different dataset: the run would be refused without --overwrite")
        elif old is not None:
            records = known_records(out)
            todo = [s for s in todo if not verified(out, s, records.get(s.shard))]
            notes.append(f"resuming: {len(specs[a:b]) - len(todo)} finished shard(s) would be kept")
    source = RenderSource(config)
    k = min(n, sample)
    source.warm_up(notice)  # compiles or loads the kernels and noise banks, which every run does once
    timings = []  # one timing varied by a third between identical dry runs: the median of a few, and their range
    for _ in range(ESTIMATE_REPEATS):
        t0 = time.perf_counter()
        with h5py.File(f"physvid-estimate-{os.getpid()}", "w", driver="core", backing_store=False) as f:
            write_h5(f, ShardSpec(0, 0, k), source, plan, None, None)
            f.flush()
            stored: list[int] = []
            f.visititems(lambda _, obj: stored.append(obj.id.get_storage_size())
                         if isinstance(obj, h5py.Dataset) else None)
            overhead = max(0, f.id.get_filesize() - sum(stored))  # headers and chunk indexes: paid once per shard
            per_seq_bytes = sum(stored) / k
        timings.append((time.perf_counter() - t0) / k)
    per_seq = float(np.median(timings))
    todo_seqs = sum(s.count for s in todo)
    procs = max(1, min(workers, len(todo)))
    cores = usable_cores()
    if procs > cores:  # more processes than cores share them: no faster than one per core
        notes.append(f"{procs} worker processes on {cores} core(s): they share the cores, so the run is at most "
                     f"{cores}x faster than one process (the time above counts {cores}); --workers {cores} is enough")
    if len(todo) < workers and todo_seqs > SHARD_SIZE:  # below that, starting workers costs more than it saves
        notes.append(f"only {len(todo)} shard(s) to write for {workers} workers: a smaller --shard-size uses more cores")
    frame_bytes = config.frames * config.channels * config.height * config.width
    return Estimate(out=out, total_sequences=n, shard_size=shard_size, shards=len(specs), shard_range=(a, b),
                    sequences_todo=todo_seqs, shards_todo=len(todo), workers=procs, compression=compression,
                    frames_per_sequence=config.frames, raw_bytes=todo_seqs * frame_bytes,
                    estimated_bytes=int(per_seq_bytes * todo_seqs + overhead * len(todo)),
                    estimated_seconds=per_seq * todo_seqs / min(procs, cores),
                    sample=k, notes=notes, timings=timings)


__all__ = ["RenderSource", "Summary", "Estimate", "write_dataset", "generate", "estimate", "finalize_dataset",
           "render_plan", "write_shard", "human_bytes"]
