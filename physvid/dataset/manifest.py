"""The manifest (DIR/manifest.json) and the plan it grows from: what a dataset is, and where each sequence lives."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import DatasetError, NotADatasetError
from .layout import COMPRESSIONS, FORMAT_NAME, FORMAT_VERSION, MANIFEST, PLAN, STATE_DIR, read_json, shard_specs
from .schema import TOP_LEVEL

# The fields that decide the bytes of every shard; two runs agreeing on these write identical files.
IDENTITY_KEYS = ("format", "format_version", "physvid_version", "source", "config", "seed", "total_sequences",
                 "shard_size", "compression")
MANIFEST_KEYS = IDENTITY_KEYS + ("software", "datasets", "shards")


def make_plan(*, source: str, config: dict, seed: int | None, n: int, shard_size: int,
              compression: str) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "physvid_version": __version__,
        "source": source,
        "config": json.loads(json.dumps(config)),  # tuples -> lists, so that comparisons with a read-back plan hold
        "seed": seed,
        "total_sequences": int(n),
        "shard_size": int(shard_size),
        "compression": compression,
    }


def software_versions() -> dict[str, str]:
    import h5py
    import numpy

    return {"physvid": __version__, "h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version,
            "numpy": numpy.__version__, "python": ".".join(map(str, sys.version_info[:3]))}


def make_manifest(plan: dict[str, Any], datasets: dict[str, Any], shards: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: plan[k] for k in IDENTITY_KEYS}
    out["software"] = software_versions()
    out["datasets"] = datasets
    out["shards"] = shards
    return out


def identity(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in IDENTITY_KEYS}


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable list of what differs between two plans ('config.noise.ratio: 0.0 in DIR, 0.26 requested')."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in list(old) + [k for k in new if k not in old]:
            out += differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    if old != new:
        return [f"{prefix.rstrip('.')}: {json.dumps(old)} in DIR, {json.dumps(new)} requested"]
    return []


def check_format(doc: dict[str, Any], where: str) -> None:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise DatasetError(f"{where} is not a physvid dataset description (format is not {FORMAT_NAME!r})")
    major = str(doc.get("format_version", "")).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise DatasetError(f"{where} has format version {doc.get('format_version')!r}; this physvid {__version__} reads "
                           f"{FORMAT_VERSION.split('.')[0]}.x - install a matching physvid version")


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and sanity-check DIR/manifest.json; a missing manifest means the dataset is incomplete."""
    d = Path(directory)
    path = d / MANIFEST
    if not d.is_dir():
        raise NotADatasetError(f"dataset folder not found: {d}")
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        from .regular import require_regular

        require_regular(path, "the manifest", f"regenerate the dataset or remove it from {d}")
    if not path.is_file():
        if (d / STATE_DIR / PLAN).is_file():  # a dataset being written: a runtime state, exit 1
            raise DatasetError(f"{d} has no {MANIFEST}: its shards are still being written or some are missing: "
                               "re-run the generate command, or run `physvid generate --finalize --out "
                               f"{d}` once every --shard-range job has finished")
        raise NotADatasetError(f"{d} has no {MANIFEST}: it is no physvid dataset; give the folder that "
                               "`physvid generate` wrote")
    try:
        doc = read_json(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is unreadable or not JSON ({exc}); run `physvid verify {d}` or regenerate") from None
    check_format(doc, str(path))
    missing = [k for k in MANIFEST_KEYS if k not in doc]
    if missing:
        raise DatasetError(f"{path} lacks the key {missing[0]!r}; it was not written by physvid (or is damaged)")
    problem = manifest_problem(doc)
    if problem:
        raise DatasetError(f"{path} is not a valid physvid manifest: {problem}; it was edited or damaged - "
                           f"regenerate the dataset")
    return doc


# Per-sequence bytes above this are no physvid dataset (a 1024x1024x3 x 1000-frame video is 3 GB): refusing them
# keeps an edited shape from making readers allocate terabytes.
MAX_SEQUENCE_BYTES = 1 << 32
MAX_SEQUENCES = 1 << 40
DATASET_NAME = re.compile(rf"^(video|index|{'|'.join(TOP_LEVEL)}|params/[A-Za-z0-9_]+)$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _is_int(v: Any, low: int = 0, high: int = MAX_SEQUENCES) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _dataset_problem(name: Any, spec: Any) -> str | None:
    import numpy as np

    if not isinstance(name, str) or not DATASET_NAME.match(name):
        return f"datasets has the entry {name!r} (allowed: video, index, {', '.join(TOP_LEVEL)}, params/NAME)"
    if not isinstance(spec, dict) or not isinstance(spec.get("dtype"), str) or not isinstance(spec.get("shape"), list):
        return f"datasets.{name} must be {{dtype: str, shape: [int, ...]}}, got {json.dumps(spec)[:80]}"
    try:
        dtype = np.dtype(spec["dtype"])
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf" or dtype.itemsize > 8 or str(dtype) != spec["dtype"]:
        return f"datasets.{name}.dtype is {spec['dtype']!r} (allowed: numeric types such as uint8, int64, float32)"
    shape = spec["shape"]
    if not all(_is_int(d, 0, MAX_SEQUENCE_BYTES) for d in shape) or len(shape) > 8:
        return f"datasets.{name}.shape is {json.dumps(shape)[:80]} (allowed: up to 8 integers >= 0)"
    if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > MAX_SEQUENCE_BYTES:
        return f"datasets.{name}.shape {shape} would be over {MAX_SEQUENCE_BYTES >> 30} GiB per sequence"
    if name == "video" and (spec["dtype"] != "uint8" or len(shape) != 4 or min(shape) < 1 or shape[1] not in (1, 3)):
        return f"datasets.video is {spec['dtype']} {shape}; physvid stores uint8 (T, C, H, W) with C = 1 or 3"
    if name == "index" and (spec["dtype"] != "int64" or shape):
        return f"datasets.index is {spec['dtype']} {shape}; physvid stores int64 []"
    return None


def manifest_problem(doc: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's contents (types, counts, shard names, shapes, dtypes, totals), or None.

    The one place that decides whether a manifest can be trusted: shard files must be exactly the names physvid
    writes (shard-00000.h5, ...), so nothing outside the folder is named; counts must add up to total_sequences."""
    n, size = doc.get("total_sequences"), doc.get("shard_size")
    if not _is_int(n, 1):
        return f"total_sequences is {json.dumps(n)} (an integer >= 1)"
    if not _is_int(size, 1):
        return f"shard_size is {json.dumps(size)} (an integer >= 1)"
    if doc.get("compression") not in COMPRESSIONS:
        return f"compression is {json.dumps(doc.get('compression'))} (allowed: {', '.join(COMPRESSIONS)})"
    if not isinstance(doc.get("config"), dict):
        return f"config is {type(doc.get('config')).__name__}, not a mapping"
    seed = doc.get("seed")
    if seed is not None and not _is_int(seed, 0, 2**64):
        return f"seed is {json.dumps(seed)} (an integer >= 0 or null)"
    if not isinstance(doc.get("source"), str):
        return f"source is {json.dumps(doc.get('source'))} (a string)"
    datasets = doc.get("datasets")
    if not isinstance(datasets, dict) or "video" not in datasets or "index" not in datasets:
        return "datasets must map names to {dtype, shape} and hold video and index"
    for name, spec in datasets.items():
        problem = _dataset_problem(name, spec)
        if problem:
            return problem
    config = doc["config"]
    if doc["source"] == "physvid.render" and all(k in config for k in ("frames", "channels", "height", "width")):
        want = [config[k] for k in ("frames", "channels", "height", "width")]
        if datasets["video"]["shape"] != want:
            return f"datasets.video.shape is {datasets['video']['shape']}, its config renders {want}"
    shards = doc.get("shards")
    expected = -(-n // size)
    if not isinstance(shards, list) or len(shards) != expected:
        got = f"{len(shards)} entries" if isinstance(shards, list) else json.dumps(shards)[:40]
        return f"shards is {got}; {n} sequences in shards of {size} make {expected}"
    for k, (entry, spec) in enumerate(zip(shards, shard_specs(n, size))):
        if not isinstance(entry, dict):
            return f"shards[{k}] is {json.dumps(entry)[:40]}, not a mapping"
        if entry.get("file") != spec.file:
            return (f"shards[{k}].file is {json.dumps(entry.get('file'))[:80]}; shard {k} must be {spec.file}, "
                    "a plain file name inside the dataset folder")
        if entry.get("first_index") != spec.first_index or entry.get("count") != spec.count:
            return (f"shards[{k}] ({spec.file}) holds first_index {json.dumps(entry.get('first_index'))}, count "
                    f"{json.dumps(entry.get('count'))}; {n} sequences in shards of {size} put {spec.first_index}, "
                    f"{spec.count} there")
        if not isinstance(entry.get("sha256"), str) or not SHA256.match(entry["sha256"]):
            return f"shards[{k}].sha256 is {json.dumps(entry.get('sha256'))[:80]} (64 lower-case hex digits)"
        if not _is_int(entry.get("size"), 0, 1 << 60):
            return f"shards[{k}].size is {json.dumps(entry.get('size'))[:40]} (an integer >= 0)"
    if "splits" in doc:  # optional (issue 21): named [first, stop) ranges, contiguous from 0 to total_sequences
        from .splits import splits_problem

        return splits_problem(doc["splits"], n)
    return None
