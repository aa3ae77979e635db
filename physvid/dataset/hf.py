"""Hugging Face `datasets` reading a physvid dataset: its HDF5 builder, given the features the manifest describes.

Left to infer them, the builder returns the video as nested lists that numpy formatting turns into int64 (8x the
memory) and drops the manifest's config. `hf_features(manifest)` declares every dataset with its stored dtype and
shape (`video`: Array4D uint8 (T, C, H, W); per-object parameters: fixed-length lists of float64 / int32), and
`load_hf_dataset` passes them to `datasets.load_dataset("hdf5", ...)`, keeps the config in `info.description` and
cuts the recorded splits. Needs the `datasets` package (the `dev` extra installs it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatasetError
from .manifest import load_manifest

ARRAYS = {2: "Array2D", 3: "Array3D", 4: "Array4D", 5: "Array5D"}


def _feature(spec: dict[str, Any]):
    import datasets

    shape, dtype = list(spec["shape"]), spec["dtype"]
    if not shape:
        return datasets.Value(dtype)
    if len(shape) == 1:
        return datasets.List(datasets.Value(dtype), length=shape[0])
    return getattr(datasets, ARRAYS[len(shape)])(shape=tuple(shape), dtype=dtype)


def hf_features(manifest: dict[str, Any]):
    """`datasets.Features` of a physvid dataset (per row = one sequence), from its manifest's `datasets`."""
    import datasets

    top = {k: _feature(v) for k, v in manifest["datasets"].items() if not k.startswith("params/")}
    params = {k.split("/", 1)[1]: _feature(v) for k, v in manifest["datasets"].items() if k.startswith("params/")}
    return datasets.Features({**top, "params": params} if params else top)


def load_hf_dataset(path: str | os.PathLike, split: str | None = None, *, cache_dir: str | os.PathLike | None = None):
    """A physvid dataset folder as a `datasets.Dataset` (or a `DatasetDict` of its recorded splits when `split` is
    None and the manifest records some). Row i is global sequence i; `video` (and `masks`, `property_map`) come as
    numpy uint8 (T, C, H, W), the parameters as Python values under `params` (`ds[i]["params"]["vx"]`). The
    manifest's config is `info.description` (JSON). Raises ConfigError for an unknown split, DatasetError when
    `datasets` cannot read a shard."""
    import datasets

    root = Path(path)
    manifest = load_manifest(root)
    files = [str(root / s["file"]) for s in manifest["shards"]]
    try:
        ds = datasets.load_dataset("hdf5", data_files={"sequences": files}, features=hf_features(manifest),
                                   split="sequences", cache_dir=None if cache_dir is None else str(cache_dir))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"datasets could not read {root} ({str(exc).splitlines()[0]}); run "
                           f"`physvid verify {root}`") from None
    ds.info.description = json.dumps(manifest["config"])
    # HF's numpy format casts every integer column to int64 and floats to float32 (8x the memory for video): only
    # the uint8 image columns are numpy-formatted, with their own dtype; the rest stay Python values.
    images = [k for k in ("video", "masks", "property_map") if k in manifest["datasets"]]
    ds = ds.with_format("numpy", columns=images, dtype="uint8", output_all_columns=True)
    splits = manifest.get("splits") or {}
    if split is None:
        return datasets.DatasetDict({k: ds.select(range(a, b)) for k, (a, b) in splits.items()}) if splits else ds
    if split == "all":
        return ds
    if split not in splits:
        raise ConfigError(f"{root} records no split {split!r}; it has: {', '.join(['all', *splits])}")
    a, b = splits[split]
    return ds.select(range(a, b))


__all__ = ["hf_features", "load_hf_dataset"]
