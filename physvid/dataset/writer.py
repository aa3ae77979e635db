"""Writing datasets: any source of sequences -> sharded HDF5 files + manifest.json (the format is docs/FORMAT.md).

A *source* is a picklable callable `source(indices) -> (video uint8 [n, T, C, H, W], params)` where `params` maps a
name to an array whose first axis is n; `masks` and `property_map` are stored at the top level, everything else under `params/`.
`generate` wraps the renderer as such a source; `write_dataset` takes any other (e.g. real-video clips for stmoe).

Why the data never depends on --workers or --shard-size: the source is a pure function of the global index, and each
shard is written by exactly one process, in index order, with a fixed batch size, so even the bytes of a shard only
depend on (source, shard size, compression).

Crash safety: a shard is built in memory, written under a temporary name, fsynced and renamed into place; its sha256
is then recorded in DIR/.physvid/. A re-run keeps every shard whose file matches its record and regenerates the rest;
the manifest is written last, once every shard exists and verifies. Workers whose parent dies (kill -9) stop at their
next batch and remove their temporary file.
"""
from __future__ import annotations

import errno as errno_mod
import hashlib
import multiprocessing as mp
import os
import queue as queue_mod
import re
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import RenderConfig
from ..errors import ConfigError, DatasetError, NotADatasetError
from .budget import check_memory, check_size
from .chunks import ChunkWriter
from .layout import (COMPRESSIONS, MANIFEST, PLAN, STATE_DIR, ShardSpec, atomic_write_text, dumps, filter_options,
                     fsync_path, is_dataset_file, read_json, record_path, sha256_file, shard_specs, tmp_name)
from .card import receiver_files_missing, write_receiver_files
from .lock import lock_folder
from .manifest import check_format, differences, identity, make_manifest, make_plan
from .schema import TOP_LEVEL, describe, h5_attributes  # TOP_LEVEL: stored beside `video`, one sequence per chunk
from .splits import parse_splits, split_ranges, splits_problem

Source = Callable[[np.ndarray], "tuple[np.ndarray, dict[str, np.ndarray]]"]
Progress = Callable[[int, int], None]  # (sequences just finished, total sequences of this run's shard range)

# Sequences per source call. Fixed (never derived from the worker count) so that the write order, hence every byte of
# a shard, is the same in every run.
BATCH = 16
SHARD_SIZE = 1000  # the largest default shard (see default_shard_size)
PARAM_CHUNK_BYTES = 1 << 20
CORE_BLOCK = 1 << 22  # growth step of the in-memory shard image


class RenderSource:
    """The physvid renderer as a dataset source (picklable, so spawned workers can call it)."""

    name = "physvid.render"

    def __init__(self, config: RenderConfig):
        self.config = config

    def __call__(self, indices: np.ndarray):
        from ..render import render

        return render(self.config, indices)

    def check_shard(self, params: dict[str, np.ndarray], spec: ShardSpec) -> None:
        """Refuse (ConfigError) a shard whose sequences systematically miss the requested noise ratio: the median
        achieved ratio of the sequences that got noise lies outside NOISE_TOLERANCE of the request. (Single sequences
        may miss it, e.g. bright scenes where the noise is clipped; each one's achieved ratio is stored.)"""
        ratio = self.config.noise.ratio
        if ratio <= 0 or "noise_ratio" not in params:
            return
        got = params["noise_ratio"][params["noise_scale"] > 0]  # scale 0: an empty clean signal gets no noise
        median = float(np.median(got)) if got.size else 0.0
        if got.size and abs(median / ratio - 1) > NOISE_TOLERANCE:
            raise ConfigError(f"sequences {spec.first_index}..{spec.first_index + spec.count - 1} reach a median noise "
                              f"ratio of {median:.3g}, {ratio:g} requested (tolerance {NOISE_TOLERANCE:.0%}): these "
                              "noise settings cannot deliver it on these scenes; lower --noise-ratio or change the "
                              "noise types")


    def warm_up(self, notice: Callable[[str], None] | None = None) -> float:
        """Compile (first run of an install) or load the kernels this config needs, before any timing starts and
        before workers are spawned (they then load the cache instead of each compiling it); returns the seconds spent
        compiling (0.0: all loaded from the cache)."""
        from ..render import compile_kernels

        return compile_kernels(self.config, notice)


# Relative tolerance of the achieved noise ratio (docs/noise.md): the solver stops within 1 %.
NOISE_TOLERANCE = 0.10


def check_noise_reachable(config: RenderConfig) -> None:
    """physvid.render.check_noise_reachable (kept here for callers of the writer; the renderer checks it too)."""
    from ..render import check_noise_reachable as check

    check(config)


@dataclass
class Summary:
    """What a `write_dataset` / `generate` call did."""

    out: Path
    total_sequences: int
    shard_range: tuple[int, int]
    sequences_written: int = 0
    sequences_kept: int = 0
    shards_written: int = 0
    shards_kept: int = 0
    frames_written: int = 0
    bytes: int = 0  # on disk, every shard of the range
    seconds: float = 0.0  # rendering and writing, without compile_seconds
    compile_seconds: float = 0.0  # compiling (first run) or loading the numba kernels
    finalized: bool = False

    @property
    def frames_per_second(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        kept = f", kept {self.sequences_kept} from an earlier run" if self.sequences_kept else ""
        state = ("manifest written" if self.finalized else
                 f"shards {self.shard_range[0]}:{self.shard_range[1]} done; run `physvid generate --finalize --out "
                 f"{self.out}` once every shard exists")
        compiled = f" (+ {self.compile_seconds:.1f} s compiling numba kernels)" if self.compile_seconds > 0 else ""
        return (f"{self.sequences_written} sequences ({self.frames_written} frames) written{kept} to {self.out}: "
                f"{human_bytes(self.bytes)}, {self.seconds:.1f} s, {self.frames_per_second:,.0f} frames/s{compiled}; "
                f"{state}")


@dataclass
class Estimate:
    """The plan of a run (`--dry-run`), measured on a few sequences."""

    out: Path
    total_sequences: int
    shard_size: int
    shards: int
    shard_range: tuple[int, int]
    sequences_todo: int
    shards_todo: int
    workers: int
    compression: str
    frames_per_sequence: int
    raw_bytes: int
    estimated_bytes: int
    estimated_seconds: float
    sample: int
    notes: list[str] = field(default_factory=list)
    timings: list[float] = field(default_factory=list)  # seconds per sequence, one per timing of the sample

    def describe(self) -> str:
        lines = [
            f"output:      {self.out}",
            f"sequences:   {self.total_sequences} in {self.shards} shard(s) of {self.shard_size}"
            + (f", shards {self.shard_range[0]}:{self.shard_range[1]} requested"
               if self.shard_range != (0, self.shards) else ""),
            f"to write:    {self.sequences_todo} sequences in {self.shards_todo} shard(s), "
            f"{self.sequences_todo * self.frames_per_sequence} frames, {self.workers} worker process(es)",
            f"bytes:       ~{human_bytes(self.estimated_bytes)} on disk with {self.compression} "
            f"({human_bytes(self.raw_bytes)} uncompressed)",
            f"time:        ~{self.estimated_seconds:.1f} s (median of {len(self.timings)} timings of {self.sample} "
            f"sequence(s); {self._spread()})",
        ]
        return "\n".join(lines + [f"note:        {n}" for n in self.notes])

    def _spread(self) -> str:
        """The estimate each timing alone would give: how much a busy machine moves it."""
        mid = sorted(self.timings)[len(self.timings) // 2] if self.timings else 0.0
        if mid <= 0:
            return "no spread measured"
        lo, hi = (self.estimated_seconds * t / mid for t in (min(self.timings), max(self.timings)))
        return f"each alone: {lo:.1f}–{hi:.1f} s"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


# --------------------------------------------------------------------------- argument checks
def _layout(n, shard_size, workers, compression, shard_range):
    """Validate the run's size options and cut it into shards: (n, shard_size, workers, specs, (first, stop) shard)."""
    n = _check_int("n", n, 1)
    shard_size = _check_int("shard_size", shard_size, 1)
    workers = resolve_workers(workers)
    if compression not in COMPRESSIONS:
        raise ConfigError(f"unknown compression {compression!r}; allowed: {', '.join(COMPRESSIONS)}")
    check_size(n, shard_size)
    specs = shard_specs(n, shard_size)
    return n, shard_size, workers, specs, resolve_shard_range(shard_range, len(specs))


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


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


# --------------------------------------------------------------------------- errors
def io_error(exc: OSError, path: Path) -> DatasetError:
    """A one-line, actionable message for an operating-system failure while writing `path` (exit code 1)."""
    code = exc.errno
    if code is None:  # HDF5 reports the errno inside its message text
        m = re.search(r"errno = (\d+)", str(exc))
        code = int(m.group(1)) if m else None
    resume = "finished shards are kept; re-run the same command to resume"
    if code == errno_mod.ENOSPC:
        msg = f"no space left on device while writing {path}; free some space or choose another --out ({resume})"
    elif code == errno_mod.EFBIG:
        msg = (f"file too large while writing {path} (a file-size limit was hit); lower --shard-size or lift the limit "
               f"({resume})")
    elif code == errno_mod.EDQUOT:
        msg = f"disk quota exceeded while writing {path}; free some space or choose another --out ({resume})"
    elif code in (errno_mod.EACCES, errno_mod.EPERM):
        msg = f"permission denied while writing {path}; choose a writable --out"
    elif code == errno_mod.EROFS:
        msg = f"read-only file system while writing {path}; choose a writable --out"
    else:
        reason = exc.strerror or str(exc).splitlines()[0]
        msg = f"cannot write {path}: {reason}"
    return DatasetError(msg)


# --------------------------------------------------------------------------- one shard
def _schema_of(video: np.ndarray, params: dict[str, np.ndarray], rendered: bool) -> dict[str, Any]:
    """Per-sequence dtype and shape of every dataset (the leading sequence axis left out), as stored in the manifest,
    with its axes (and labels, units, columns where known: schema.describe)."""
    out: dict[str, Any] = {"video": {"dtype": str(video.dtype), "shape": list(video.shape[1:]),
                                     **describe("video", video.ndim, rendered)},
                           "index": {"dtype": "int64", "shape": [], **describe("index", 1, rendered)}}
    for name in sorted(params):
        arr = params[name]
        key = name if name in TOP_LEVEL else f"params/{name}"
        entry: dict[str, Any] = {"dtype": str(arr.dtype), "shape": list(arr.shape[1:])}
        entry.update(describe(name, arr.ndim, rendered))
        if key.startswith("params/"):
            entry["fill_value"] = _fill_value(arr.dtype)
        out[key] = entry
    return out


def _fill_value(dtype: np.dtype) -> Any:
    """What pads per-object arrays past num_objects: NaN for floats (stored as the string "NaN" in JSON), -1 for ints."""
    if np.issubdtype(dtype, np.floating):
        return "NaN"
    if np.issubdtype(dtype, np.signedinteger):
        return -1
    return None


def _as_arrays(result: Any, count: int, where: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
        raise DatasetError(f"the source must return (video, params dict), got {type(result).__name__} {where}")
    video = np.asarray(result[0])
    if video.dtype != np.uint8 or video.ndim != 5 or video.shape[0] != count:
        raise DatasetError(f"the source must return video uint8 of shape ({count}, T, C, H, W), got {video.dtype} "
                           f"{video.shape} {where}")
    params = {}
    for name, value in result[1].items():
        arr = np.asarray(value)
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)) or name in ("video", "index"):
            raise DatasetError(f"parameter name {name!r} is not allowed (letters, digits and _; not video or index)")
        if arr.ndim == 0 or arr.shape[0] != count or arr.dtype.kind not in "biuf":
            raise DatasetError(f"parameter {name!r} must be a numeric array with {count} rows, got {arr.dtype} "
                               f"{arr.shape} {where}")
        params[name] = arr.astype(np.int8) if arr.dtype == np.bool_ else arr
    return video, params


def _create_datasets(f, count: int, video: np.ndarray, params: dict[str, np.ndarray], opts: dict,
                     rendered: bool) -> dict[str, Any]:
    dsets = {"video": f.create_dataset("video", (count,) + video.shape[1:], np.uint8, chunks=(1,) + video.shape[1:],
                                       **opts)}
    dsets["video"].attrs.update(h5_attributes(describe("video", video.ndim, rendered)))
    group = f.create_group("params")
    for name in sorted(params):
        arr = params[name]
        shape = (count,) + arr.shape[1:]
        if name in TOP_LEVEL:  # per-frame images: one sequence per chunk like the video
            d = f.create_dataset(name, shape, arr.dtype, chunks=(1,) + arr.shape[1:], **opts)
        else:
            row = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
            rows = int(min(count, max(1, PARAM_CHUNK_BYTES // row)))
            d = group.create_dataset(name, shape, arr.dtype, chunks=(rows,) + arr.shape[1:], **opts)
            fill = _fill_value(arr.dtype)
            if fill is not None:
                d.attrs["fill_value"] = np.nan if fill == "NaN" else fill
        d.attrs.update(h5_attributes(describe(name, arr.ndim, rendered)))
        dsets[name] = d
    return dsets


def _write_h5(f, spec: ShardSpec, source: Source, plan: dict[str, Any], report: Callable[[int], None] | None,
              parent: int | None) -> dict[str, Any]:
    """Fill an open h5py File with shard `spec`; returns the schema. Batches are written in index order."""
    opts = filter_options(plan["compression"])
    attrs = {"format": plan["format"], "format_version": plan["format_version"],
             "physvid_version": plan["physvid_version"], "source": plan["source"],
             "config": dumps(plan["config"]).strip(), "total_sequences": plan["total_sequences"],
             "shard_size": plan["shard_size"], "compression": plan["compression"], "shard": spec.shard,
             "first_index": spec.first_index, "count": spec.count}
    if plan["seed"] is not None:
        attrs["seed"] = plan["seed"]
    for k, v in attrs.items():
        f.attrs[k] = v
    dsets, schema, table, direct = None, None, {}, {}
    rendered = plan["source"] == RenderSource.name
    stop = spec.first_index + spec.count
    for a in range(spec.first_index, stop, BATCH):
        if parent is not None and os.getppid() != parent:
            raise SystemExit(3)  # the parent was killed (e.g. kill -9): stop, and let the caller remove the temp file
        b = min(a + BATCH, stop)
        where = f"(sequences {a}..{b - 1})"
        try:
            result = source(np.arange(a, b, dtype=np.int64))
        except OSError as exc:
            raise DatasetError(f"the source failed on sequences {a}..{b - 1}: {exc}") from None
        video, params = _as_arrays(result, b - a, where)
        if dsets is None:
            schema = _schema_of(video, params, rendered)
            dsets = _create_datasets(f, spec.count, video, params, opts, rendered)
            # Every chunk of every dataset is encoded here (zlib deflate or numba LZF, numba fletcher32) and stored
            # with write_direct_chunk, never through HDF5's filters: that is what makes the bytes a pure function of
            # the data (dataset/chunks.py says which filters are not).
            direct = {name: _chunk_writer(d) for name, d in dsets.items()}
            # Small per-sequence parameters are gathered and written once per shard: one HDF5 call per batch and
            # parameter would cost as much as compressing the video.
            table = {k: np.empty((spec.count,) + v.shape[1:], v.dtype) for k, v in params.items() if k not in TOP_LEVEL}
        elif _schema_of(video, params, rendered) != schema:
            raise DatasetError(f"the source changed shapes, dtypes or parameter names {where}; every batch must match")
        lo, hi = a - spec.first_index, b - spec.first_index
        for name, arr in params.items():
            if name not in TOP_LEVEL:
                table[name][lo:hi] = arr
        for name, arr in (("video", video), *((k, params[k]) for k in TOP_LEVEL if k in params)):
            for r in range(hi - lo):
                direct[name].write(lo + r, arr[r])
        if report is not None:
            report(b - a)
    check = getattr(source, "check_shard", None)
    if check is not None and table:
        check(table, spec)
    for name in sorted(table):
        direct[name].write_all(table[name])
    index = f.create_dataset("index", (spec.count,), np.int64, chunks=(min(spec.count, PARAM_CHUNK_BYTES // 8),),
                             **opts)
    index.attrs.update(h5_attributes(describe("index", 1, True)))
    _chunk_writer(index).write_all(np.arange(spec.first_index, stop, dtype=np.int64))
    return schema


def _chunk_writer(dset) -> ChunkWriter:
    writer = ChunkWriter.of(dset)
    if writer is None:  # _as_arrays admits only dtypes and layouts ChunkWriter encodes
        raise DatasetError(f"internal error: dataset {dset.name} ({dset.dtype}, chunks {dset.chunks}) cannot be "
                           "encoded deterministically")
    return writer


def remove_temp_files(out: Path, shard: int) -> None:
    for stale in out.glob(f"shard-{shard:05d}.*.h5.tmp"):
        stale.unlink(missing_ok=True)


def write_shard(out: Path, spec: ShardSpec, source: Source, plan: dict[str, Any], *,
                report: Callable[[int], None] | None = None, parent: int | None = None) -> dict[str, Any]:
    """Write one shard atomically and record its checksum; returns the record {shard, datasets}."""
    import h5py

    final = out / spec.file
    remove_temp_files(out, spec.shard)  # left by a killed run
    tmp = out / tmp_name(spec.shard)
    try:
        # HDF5 builds the shard in memory and Python writes it: a full disk is then a plain OSError here. (HDF5
        # 2.0 crashes the process when its own flush fails at close.) The image is byte-identical to an on-disk write.
        with h5py.File(f"{tmp.name}-image", "w", driver="core", backing_store=False, block_size=CORE_BLOCK,
                       libver="earliest") as f:
            schema = _write_h5(f, spec, source, plan, report, parent)
            f.flush()
            image = f.id.get_file_image()
        sha, size = hashlib.sha256(image).hexdigest(), len(image)
        with open(tmp, "wb") as fh:
            fh.write(image)
            fh.flush()
            os.fsync(fh.fileno())
        del image
        os.replace(tmp, final)
        fsync_path(out)
        entry = {"file": spec.file, "first_index": spec.first_index, "count": spec.count, "sha256": sha, "size": size}
        record = {"shard": entry, "datasets": schema}
        record_path(out, spec.shard).parent.mkdir(exist_ok=True)
        atomic_write_text(record_path(out, spec.shard), dumps(record))
        return record
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise io_error(exc, final) from None
        raise


# --------------------------------------------------------------------------- worker processes
_QUEUE = None
_PARENT = None


_BUSY = False


def _init_worker(progress_queue, parent: int) -> None:
    global _QUEUE, _PARENT
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    _QUEUE, _PARENT = progress_queue, parent
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    """An idle worker whose parent was killed (kill -9) would wait for work forever: leave instead. A busy worker
    notices at its next batch and removes its temporary file itself (see _write_h5)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent and not _BUSY:
            os._exit(3)


def _worker_task(args):
    global _BUSY
    out, spec, source, plan = args
    _BUSY = True
    try:
        return write_shard(out, spec, source, plan, report=_QUEUE.put, parent=_PARENT)
    finally:
        _BUSY = False


def _check_main_guard() -> None:
    """Spawned workers re-import the main script; one that calls the writer at its top level, without the
    `if __name__ == "__main__":` guard, would start the run again in every worker, which multiprocessing refuses by
    killing the worker. Say so before starting any (a dead worker otherwise looks like a lack of memory)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path and not Path(path).is_file():  # a program read from a pipe (`python - <<EOF`): workers cannot import it
        raise ConfigError(f"the main program was read from {path}, which spawned worker processes cannot re-import; "
                          "save it as a script with an `if __name__ == \"__main__\":` guard, or pass workers=1")
    try:
        source = Path(path).read_text(errors="replace") if path else None
    except OSError:
        return
    if source is not None and "__main__" not in source:
        raise ConfigError(f"{path} starts worker processes from its top level: each spawned worker re-imports the "
                          "script, so put the calls under `if __name__ == \"__main__\":` (or pass workers=1)")


# Seconds a stopped worker gets to exit after SIGTERM before SIGKILL, and the executor's thread to notice.
STOP_GRACE = 3.0


def _stop_pool(pool: ProcessPoolExecutor, grace: float = STOP_GRACE) -> None:
    """Stop every worker now and return within about 2 * grace seconds whatever state the pool is in.

    `shutdown(wait=True)` after terminating workers could wait without bound: the executor's manager thread joins
    queues and processes that a worker killed mid-message (or while being spawned) never releases. So: SIGTERM each
    worker, SIGKILL the ones still alive after `grace`, shut the executor down without waiting, and give its manager
    thread `grace` seconds; if it is still stuck, drop it from the executor's exit-time join list so that the
    interpreter can exit (it is a daemon-less thread that only bookkeeps futures nobody waits for any more).
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())  # private, but the only way to stop workers
    for proc in procs:
        try:
            proc.terminate()  # stop the other shards now rather than after they finish
        except (OSError, ValueError, AttributeError):  # already gone, or not started yet
            pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        except (OSError, ValueError, AttributeError, AssertionError):
            pass
    thread = getattr(pool, "_executor_manager_thread", None)  # shutdown() forgets it
    pool.shutdown(wait=False, cancel_futures=True)
    if thread is not None:
        thread.join(grace)
        if thread.is_alive():
            import concurrent.futures.process as cfp
            import threading as th

            getattr(cfp, "_threads_wakeups", {}).pop(thread, None)
            # threading's shutdown joins every non-daemon thread: without this the stuck one would block exit.
            getattr(th, "_shutdown_locks", set()).discard(getattr(thread, "_tstate_lock", None))


def _run_tasks(out: Path, tasks: list[ShardSpec], source: Source, plan: dict[str, Any], workers: int,
               report: Callable[[int], None]) -> list[dict[str, Any]]:
    """One process per shard at a time (it renders and writes its own file, so compression runs in parallel too)."""
    n_proc = min(workers, len(tasks))
    if n_proc <= 1:
        return [write_shard(out, t, source, plan, report=report) for t in tasks]
    ctx = mp.get_context("spawn")  # safe with numba, HDF5 and threads on every platform
    progress_queue = ctx.Queue()
    # An executor (unlike multiprocessing.Pool) fails the run when a worker dies instead of waiting forever.
    pool = ProcessPoolExecutor(n_proc, mp_context=ctx, initializer=_init_worker, initargs=(progress_queue, os.getpid()))
    futures = {pool.submit(_worker_task, (out, t, source, plan)): t for t in tasks}
    done: dict[int, dict] = {}

    def drain(timeout: float) -> None:
        try:
            report(progress_queue.get(timeout=timeout))
            while True:
                report(progress_queue.get_nowait())
        except queue_mod.Empty:
            pass

    try:
        pending = set(futures)
        while pending:
            drain(0.05)
            finished = {f for f in pending if f.done()}
            for f in finished:
                done[futures[f].shard] = f.result()  # re-raises the worker's exception here
            pending -= finished
        pool.shutdown(wait=True)
        drain(0.01)
    except BaseException as exc:
        _stop_pool(pool)
        for t in tasks:
            if t.shard not in done:
                remove_temp_files(out, t.shard)
        if isinstance(exc, BrokenProcessPool):
            raise DatasetError("a worker process died while writing shards (killed for lack of memory?); finished "
                               "shards are kept: re-run the same command to resume, with fewer --workers or a smaller "
                               "--shard-size if memory is short") from None
        raise
    finally:
        progress_queue.close()
    return [done[t.shard] for t in tasks]


# --------------------------------------------------------------------------- the folder
def existing_plan(out: Path) -> dict[str, Any] | None:
    """The identity of whatever dataset DIR already holds (manifest, plan or a shard's attributes), or None."""
    for path in (out / MANIFEST, out / STATE_DIR / PLAN):
        if path.is_file():
            try:
                doc = read_json(path)
            except (OSError, ValueError):
                continue  # damaged bookkeeping: fall through to the shards
            check_format(doc, str(path))
            return identity(doc)
    for shard in sorted(out.glob("shard-*.h5")):
        attrs = shard_attrs(shard)
        if attrs is not None:
            return attrs_identity(attrs)
    return None


def shard_attrs(path: Path) -> dict[str, Any] | None:
    import h5py

    from .regular import is_regular

    if not is_regular(path):  # a FIFO would block the open forever
        return None
    try:
        with h5py.File(path, "r") as f:
            return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except OSError:
        return None


def attrs_identity(attrs: dict[str, Any]) -> dict[str, Any]:
    import json

    doc = dict(attrs)
    doc["config"] = json.loads(attrs["config"]) if isinstance(attrs.get("config"), str) else attrs.get("config")
    doc.setdefault("seed", None)
    return identity(doc)


def prepare_folder(out: Path, plan: dict[str, Any], overwrite: bool) -> bool:
    """Create or check DIR; returns True when this call created it. Refuses a folder that holds something else."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder (it is created if missing)")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".physvid-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to the output folder {out} ({exc.strerror or exc}); "
                          "choose a writable --out") from None
    if overwrite:
        for entry in out.iterdir():
            if is_dataset_file(entry.name):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    else:
        old = existing_plan(out)
        if old is not None and old != identity(plan):
            diff = differences(old, identity(plan))
            more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
            raise ConfigError(f"{out} holds a different dataset ({'; '.join(diff[:3])}{more}); use --overwrite to "
                              "replace it or choose another --out")
        if old is None:
            foreign = sorted(e.name for e in out.iterdir() if not is_dataset_file(e.name))
            if foreign:
                raise ConfigError(f"{out} is not empty and holds no physvid dataset (found {foreign[0]!r}); choose a new "
                                  "or empty --out, or pass --overwrite to write beside those files")
    return created


def _write_plan(out: Path, plan: dict[str, Any]) -> None:
    if not (out / MANIFEST).is_file() and not (out / STATE_DIR / PLAN).is_file():  # a manifest already guards DIR
        (out / STATE_DIR).mkdir(exist_ok=True)
        atomic_write_text(out / STATE_DIR / PLAN, dumps(plan))


def _known_records(out: Path) -> dict[int, dict[str, Any]]:
    """Shard records from DIR/.physvid, falling back to the manifest of an earlier finalized run."""
    records: dict[int, dict[str, Any]] = {}
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            doc = read_json(manifest)
            for k, entry in enumerate(doc["shards"]):
                records[k] = {"shard": entry, "datasets": doc["datasets"]}
        except (OSError, ValueError, KeyError, TypeError):
            records = {}
    for path in (out / STATE_DIR).glob("shard-*.json"):
        try:
            rec = read_json(path)
            records[int(path.stem.split("-")[1])] = rec
        except (OSError, ValueError, IndexError):
            continue
    return records


def _verified(out: Path, spec: ShardSpec, record: dict[str, Any] | None) -> bool:
    path = out / spec.file
    if record is None or not path.is_file():
        return False
    entry = record.get("shard", {})
    if (entry.get("file"), entry.get("first_index"), entry.get("count")) != (spec.file, spec.first_index, spec.count):
        return False
    if path.stat().st_size != entry.get("size"):
        return False
    return sha256_file(path)[0] == entry.get("sha256")


# Sequences rendered and compressed in memory to estimate a run's size before it starts (a few ms once warm).
DISK_SAMPLE = 16


def check_disk(out: Path, todo: list[ShardSpec], source: Source, plan: dict[str, Any]) -> None:
    """Refuse (ConfigError, exit 2) a run whose shards would not fit in the free space of `out`'s file system, before
    any is written: the size is estimated as `estimate` does, from DISK_SAMPLE sequences compressed in memory."""
    import h5py

    try:
        free = shutil.disk_usage(out).free
    except OSError:
        return
    k = min(DISK_SAMPLE, todo[0].count)
    try:
        with h5py.File(f"physvid-disk-{os.getpid()}", "w", driver="core", backing_store=False) as f:
            _write_h5(f, ShardSpec(todo[0].shard, todo[0].first_index, k), source, plan, None, None)
            f.flush()
            stored: list[int] = []
            f.visititems(lambda _, obj: stored.append(obj.id.get_storage_size())
                         if isinstance(obj, h5py.Dataset) else None)
            overhead = max(0, f.id.get_filesize() - sum(stored))
    except OSError:  # no estimate (the sample is in memory: this is no disk error); the real write reports its own
        return
    need = int(sum(stored) / k * sum(s.count for s in todo) + overhead * len(todo))
    if need > free:
        raise ConfigError(f"the {len(todo)} shard(s) to write need about {human_bytes(need)} (estimated from {k} "
                          f"sequences), but {out} has {human_bytes(free)} free; free some space, choose another --out "
                          "or write fewer sequences (--n, or --shard-range for part of them)")


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
        if lock is None and not _complete(out, specs[a:b], finalize):
            lock = lock_folder(out, exclusive=finalize)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    summary = Summary(out=out, total_sequences=n, shard_range=(a, b))
    try:
        _write_plan(out, plan)
        records = _known_records(out)
        todo = [s for s in specs[a:b] if not _verified(out, s, records.get(s.shard))]
        if min(workers, len(todo)) > 1:
            _check_main_guard()
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
        _run_tasks(out, todo, source, plan, workers, report or (lambda k: None))
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
        _clean_failed(out, created, specs[a:b])
        if isinstance(exc, OSError):
            raise io_error(exc, Path(exc.filename) if getattr(exc, "filename", None) else out) from None
        raise
    finally:
        if lock is not None:
            lock.release()
    return summary


def _complete(out: Path, specs: list[ShardSpec], finalize: bool) -> bool:
    """Every shard of `specs` is in DIR and matches its record (and the manifest exists when it is to be written)."""
    if finalize and not (out / MANIFEST).is_file():
        return False
    records = _known_records(out)
    return all(_verified(out, s, records.get(s.shard)) for s in specs)


def plan_frames(out: Path, specs: list[ShardSpec]) -> int:
    """Frames per sequence, read from a record (the source decides T)."""
    for s in specs:
        try:
            return int(read_json(record_path(out, s.shard))["datasets"]["video"]["shape"][0])
        except (OSError, ValueError, KeyError):
            continue
    try:
        return int(read_json(out / MANIFEST)["datasets"]["video"]["shape"][0])
    except (OSError, ValueError, KeyError):
        return 0


def _clean_failed(out: Path, created: bool, specs: list[ShardSpec]) -> None:
    """After a failure: no temp file of ours survives, and bookkeeping nobody else uses is removed.

    Only this run's shards are touched: other jobs of an array may be writing theirs into the same folder.
    """
    if not out.is_dir():
        return
    for s in specs:
        remove_temp_files(out, s.shard)
    if any(out.glob("shard-*.h5")) or any((out / STATE_DIR).glob("shard-*.json")):
        return  # finished shards stay: the next run resumes from them
    if not any(out.glob("shard-*.h5.tmp")):
        shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    if created:
        try:
            out.rmdir()  # only if empty
        except OSError:
            pass


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
    records = _known_records(out)
    missing = [s.file for s in specs if not (out / s.file).is_file()]
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"cannot finalize {out}: {len(missing)} of {len(specs)} shard(s) missing ({listed}); run "
                           "the remaining --shard-range jobs (or the same generate command without it) first")
    bad = [s.file for s in specs if not _verified(out, s, records.get(s.shard))]
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


# --------------------------------------------------------------------------- the renderer as a source
def _render_args(config: RenderConfig | dict) -> RenderConfig:
    if isinstance(config, dict):
        config = RenderConfig.from_dict(config)
    if not isinstance(config, RenderConfig):
        raise ConfigError(f"config must be a RenderConfig or a dict, got {type(config).__name__}")
    if config.shape.digits:
        from ..digits import load_digits

        load_digits(config.shape.digits)  # a missing or corrupt file fails now, before any folder is touched
    check_noise_reachable(config)
    return config


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
    config = _render_args(config)
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

    config = _render_args(config)
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
            records = _known_records(out)
            todo = [s for s in todo if not _verified(out, s, records.get(s.shard))]
            notes.append(f"resuming: {len(specs[a:b]) - len(todo)} finished shard(s) would be kept")
    source = RenderSource(config)
    k = min(n, sample)
    source.warm_up(notice)  # compiles or loads the kernels and noise banks, which every run does once
    timings = []  # one timing varied by a third between identical dry runs: the median of a few, and their range
    for _ in range(ESTIMATE_REPEATS):
        t0 = time.perf_counter()
        with h5py.File(f"physvid-estimate-{os.getpid()}", "w", driver="core", backing_store=False) as f:
            _write_h5(f, ShardSpec(0, 0, k), source, plan, None, None)
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
