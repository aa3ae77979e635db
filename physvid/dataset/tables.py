"""Exports for other tools' loaders: the ground truth as one table, and WebDataset tar shards (issue 21).

    parquet / csv   one row per (sequence, object) that exists (object < num_objects), joined across shards:
                    `sequence`, `object`, every per-object parameter, then every per-sequence one repeated.
                    Parquet also holds `vertices` (24 floats: corners x0, y0, x1, y1, ...; NaN for unused ones);
                    CSV leaves that one column out. Parquet needs pyarrow.
    webdataset      tar shards `OUT/physvid-000000.tar`, ... written by the `webdataset` package, one sample per
                    sequence: `seq-<index>.video.npy` (uint8 (T, C, H, W)), `.params.json` (every parameter, NaN as
                    null) and `.property_map.npy` / `.masks.npy` when stored.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from ..files import atomic_path
from .reader import Dataset

BLOCK = 256  # sequences per read


def ground_truth_table(ds: Dataset, idx: list[int]) -> dict[str, np.ndarray]:
    """Columns of the (sequence, object) table of sequences `idx` (see the module docstring)."""
    params = ds.params
    idx_arr = np.asarray(idx, dtype=np.int64)
    count = params["num_objects"][idx_arr] if "num_objects" in params else None
    slots = max((v.shape[1] for v in params.values() if v.ndim >= 2), default=1)
    if count is None:
        count = np.full(len(idx_arr), slots, np.int64)
    seq = np.repeat(idx_arr, count)
    obj = np.concatenate([np.arange(c, dtype=np.int64) for c in count]) if len(count) else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(idx_arr)), count)
    out: dict[str, np.ndarray] = {"sequence": ds.first_index + seq, "object": obj}
    for name in sorted(params):  # per object first, then per sequence
        v = params[name][idx_arr]
        if v.ndim == 2:
            out[name] = v[rows, obj]
        elif v.ndim > 2:
            out[name] = v[rows, obj].reshape(len(rows), -1)
    for name in sorted(params):
        if params[name].ndim == 1:
            out[name] = params[name][idx_arr][rows]
    return out


def export_table(ds: Dataset, idx: list[int], out: Path, fmt: str) -> Path:
    """Write the ground-truth table as parquet or csv at `out` (written to a temporary name, then renamed)."""
    table = ground_truth_table(ds, idx)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if fmt == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise DatasetError("parquet export needs pyarrow: pip install pyarrow (or use --format csv)") from None
            cols = {k: (pa.array(list(v)) if v.ndim > 1 else pa.array(v)) for k, v in table.items()}
            meta = {"physvid_config": json.dumps(ds.config), "physvid_source": str(ds.manifest.get("source"))}
            pq.write_table(pa.table(cols).replace_schema_metadata(meta), tmp)
        else:
            names = [k for k, v in table.items() if v.ndim == 1]
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(names)
                columns = [table[k].tolist() for k in names]
                w.writerows(zip(*columns))
    return out


def _plain(value: np.ndarray) -> Any:
    """JSON value of one sequence's parameter: lists, NaN as null."""
    v = np.asarray(value).tolist()
    if isinstance(v, list):
        return json.loads(json.dumps(v).replace("NaN", "null"))
    return None if isinstance(v, float) and math.isnan(v) else v


def export_webdataset(ds: Dataset, idx: list[int], out: Path, maxcount: int = 1000) -> list[Path]:
    """Write WebDataset tar shards OUT/physvid-NNNNNN.tar (one sample per sequence); returns them."""
    try:
        import webdataset as wds
    except ImportError:
        raise DatasetError("webdataset export needs the webdataset package: pip install webdataset") from None
    if out.exists() and any(out.glob("physvid-*.tar")):
        raise ConfigError(f"{out} already holds physvid-*.tar shards; choose another --out or remove them")
    out.mkdir(parents=True, exist_ok=True)
    width = max(7, len(str(ds.first_index + len(ds) - 1)))
    extras = [k for k in ("masks", "property_map") if k in ds.datasets]
    with wds.ShardWriter(str(out / "physvid-%06d.tar"), maxcount=maxcount, verbose=0) as sink:
        for lo in range(0, len(idx), BLOCK):
            block = idx[lo:lo + BLOCK]
            video = ds.read_video(block)
            for r, i in enumerate(block):
                sample = {"__key__": f"seq-{ds.first_index + i:0{width}d}", "video.npy": video[r],
                          "params.json": {name: _plain(ds.params[name][i]) for name in ds.param_names}}
                if extras:
                    got = ds.get(i, fields=extras)
                    sample.update({f"{k}.npy": got[k] for k in extras})
                sink.write(sample)
    return sorted(out.glob("physvid-*.tar"))


__all__ = ["ground_truth_table", "export_table", "export_webdataset"]
