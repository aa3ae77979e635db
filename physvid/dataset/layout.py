"""On-disk layout of a physvid dataset (docs/FORMAT.md is the contract; keep the two in step).

DIR/manifest.json            written last, once every shard exists and verifies
DIR/shard-00000.h5, ...      one HDF5 file per `shard_size` consecutive sequences
DIR/shard-00000.<tag>.h5.tmp a shard being written (never looks complete; removed on failure or on the next run)
DIR/.physvid/plan.json       what is being built (guards against mixing two configs in one folder)
DIR/.physvid/shard-00000.json  sha256 and size of a finished shard, until the manifest replaces these records
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import atomic_write_text, fsync_path, writer_tag  # noqa: F401 (re-exported: the dataset modules' names)

FORMAT_NAME = "physvid-hdf5"
# Major bumps break readers; minor bumps only add optional datasets or attributes (docs/FORMAT.md, "Versioning").
FORMAT_VERSION = "1.1"
MANIFEST = "manifest.json"
STATE_DIR = ".physvid"
PLAN = "plan.json"
COMPRESSIONS = ("gzip", "lzf", "none")
# Level 1 writes ~1.5x faster than the usual 4 on noisy frames for a file ~5 % larger (measured, docs/FORMAT.md).
GZIP_LEVEL = 1
SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")
TMP_RE = re.compile(r"^shard-(\d{5,})\..+\.h5\.tmp$")


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.h5"


def tmp_name(shard: int) -> str:
    """A per-process temporary name, so two writers (e.g. a duplicated array job) never share a file."""
    return f"shard-{shard:05d}.{writer_tag()}.h5.tmp"


def num_shards(n: int, shard_size: int) -> int:
    return math.ceil(n / shard_size)


@dataclass(frozen=True)
class ShardSpec:
    """Shard `shard` holds global indices [first_index, first_index + count)."""

    shard: int
    first_index: int
    count: int

    @property
    def file(self) -> str:
        return shard_name(self.shard)


def shard_specs(n: int, shard_size: int) -> list[ShardSpec]:
    return [ShardSpec(k, k * shard_size, min(shard_size, n - k * shard_size)) for k in range(num_shards(n, shard_size))]


def filter_options(compression: str) -> dict[str, Any]:
    """h5py keyword arguments of a compression choice (every HDF5 build ships gzip, shuffle and fletcher32)."""
    base: dict[str, Any] = {"fletcher32": True}
    if compression == "gzip":
        base.update(compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
    elif compression == "lzf":
        base.update(compression="lzf", shuffle=True)
    return base


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    """(hex digest, size in bytes)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def dumps(obj: Any) -> str:
    """Canonical JSON of the manifest and the records: a resumed run writes the very same bytes."""
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def record_path(out: Path, shard: int) -> Path:
    return out / STATE_DIR / f"shard-{shard:05d}.json"


# Written beside the manifest for the teams that receive a dataset (dataset/card.py).
RECEIVER_FILES = ("SHA256SUMS", "README.md", "croissant.json", "preview.png")


def is_dataset_file(name: str) -> bool:
    """Names that the writer owns inside DIR (what `--overwrite` may delete)."""
    return (name == MANIFEST or name.startswith(STATE_DIR) or name.startswith(f"{MANIFEST}.")
            or name in RECEIVER_FILES or any(name.startswith(f"{r}.") and name.endswith(".tmp") for r in RECEIVER_FILES)
            or bool(SHARD_RE.match(name) or TMP_RE.match(name)))
