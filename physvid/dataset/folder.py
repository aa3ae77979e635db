"""The dataset folder: what it already holds (a plan, a manifest, shards and their records), whether a shard there is
finished, whether the run fits on its disk, and what a failed run leaves behind.

A shard is finished when its file matches the sha256 and size recorded in DIR/.physvid/ (or in the manifest of an
earlier finalized run); a re-run keeps those and regenerates the rest.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .layout import (MANIFEST, PLAN, STATE_DIR, ShardSpec, atomic_write_text, dumps, is_dataset_file, read_json,
                     record_path, sha256_file)
from .manifest import check_format, differences, identity
from .shard import Source, remove_temp_files, write_h5
from .summary import human_bytes


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


def write_plan(out: Path, plan: dict[str, Any]) -> None:
    if not (out / MANIFEST).is_file() and not (out / STATE_DIR / PLAN).is_file():  # a manifest already guards DIR
        (out / STATE_DIR).mkdir(exist_ok=True)
        atomic_write_text(out / STATE_DIR / PLAN, dumps(plan))


def known_records(out: Path) -> dict[int, dict[str, Any]]:
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


def verified(out: Path, spec: ShardSpec, record: dict[str, Any] | None) -> bool:
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
            write_h5(f, ShardSpec(todo[0].shard, todo[0].first_index, k), source, plan, None, None)
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



def complete(out: Path, specs: list[ShardSpec], finalize: bool) -> bool:
    """Every shard of `specs` is in DIR and matches its record (and the manifest exists when it is to be written)."""
    if finalize and not (out / MANIFEST).is_file():
        return False
    records = known_records(out)
    return all(verified(out, s, records.get(s.shard)) for s in specs)


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


def clean_failed(out: Path, created: bool, specs: list[ShardSpec]) -> None:
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
