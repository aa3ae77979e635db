"""The manifest (DIR/manifest.json) and the plan it grows from: what a dataset is, and where each sequence lives."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import DatasetError
from .layout import FORMAT_NAME, FORMAT_VERSION, MANIFEST, PLAN, STATE_DIR, read_json

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
        raise DatasetError(f"dataset folder not found: {d}")
    if not path.is_file():
        hint = ("its shards are still being written or some are missing: re-run the generate command, or run "
                f"`physvid generate --finalize --out {d}` once every --shard-range job has finished"
                if (d / STATE_DIR / PLAN).is_file() else "give the folder that `physvid generate` wrote")
        raise DatasetError(f"{d} has no {MANIFEST}: {hint}")
    try:
        doc = read_json(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is unreadable or not JSON ({exc}); run `physvid verify {d}` or regenerate") from None
    check_format(doc, str(path))
    missing = [k for k in MANIFEST_KEYS if k not in doc]
    if missing:
        raise DatasetError(f"{path} lacks the key {missing[0]!r}; it was not written by physvid (or is damaged)")
    return doc
