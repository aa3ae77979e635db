"""What readers accept (docs/FORMAT.md, "Security model"): nothing outside the dataset folder is ever read.

A shard may hold only what physvid writes: groups and datasets reached by hard links, datasets stored in the file
itself (no external raw storage, no virtual datasets), HDF5's built-in filters and LZF only (HDF5 would look any other
up as a plugin, i.e. load code from outside), and attributes that say which part of which dataset it is.
`shard_problems` lists every deviation in one line each; the reader refuses a shard with any (DatasetError naming
shard and dataset) before it reads a byte of data, and `physvid verify` reports them all.
"""
from __future__ import annotations

import json
from typing import Any

from .chunks import FILTER_LZF

# HDF5's built-in filters (deflate, shuffle, fletcher32, szip, nbit, scaleoffset) and LZF, which h5py registers in
# process. Any other id would make HDF5 search its plugin path, i.e. load and run code from outside the folder.
SAFE_FILTERS = frozenset({1, 2, 3, 4, 5, 6, FILTER_LZF})

# Attributes that tie a shard to its dataset (manifest key, or None where the value comes from the shard's entry).
IDENTITY_ATTRS = ("format", "total_sequences", "shard_size", "compression", "source", "seed")


def foreign_objects(f) -> list[str]:
    """Objects of the open h5py File `f` through which HDF5 would read outside the file (or run outside code)."""
    import h5py

    found: list[str] = []

    def visit(name: str, link) -> None:
        if isinstance(link, h5py.SoftLink):
            found.append(f"/{name} is a soft link (to {link.path}); physvid writes none")
        elif isinstance(link, h5py.ExternalLink):
            found.append(f"/{name} is an external link (to {link.filename}:{link.path}); physvid writes none")
        elif not isinstance(link, h5py.HardLink):
            found.append(f"/{name} is a user-defined link; physvid writes none")
        else:
            obj = f.get(name, getlink=False)
            if isinstance(obj, h5py.Dataset):
                found.extend(_storage_problems(name, obj))

    f.visititems_links(visit)
    return found


def _storage_problems(name: str, dset) -> list[str]:
    import h5py

    plist = dset.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        return [f"/{name} is a virtual dataset (it maps other files); physvid writes none"]
    if plist.get_external_count():
        return [f"/{name} keeps its data in external raw file(s) ({plist.get_external(0)[0].decode(errors='replace')}"
                "...); physvid stores everything inside the shard"]
    out = []
    for pos in range(plist.get_nfilters()):
        fid = plist.get_filter(pos)[0]
        if fid not in SAFE_FILTERS:
            out.append(f"/{name} uses HDF5 filter {fid}, a plugin loaded from outside the dataset (allowed: HDF5's "
                       "built-in filters and lzf)")
    return out


def shard_problems(f, entry: dict[str, Any], manifest: dict[str, Any], k: int) -> list[str]:
    """Everything wrong with the open shard `f` as shard k of `manifest` (whose shard list holds `entry`)."""
    problems = foreign_objects(f)
    if problems:
        return problems  # nothing else is looked at: reading datasets could follow those links
    attrs = f.attrs
    want = {"shard": k, "first_index": entry["first_index"], "count": entry["count"]}
    want.update({key: manifest.get(key) for key in IDENTITY_ATTRS})
    for key, value in want.items():
        got = attrs.get(key)
        got = got.item() if hasattr(got, "item") else got
        got = got.decode() if isinstance(got, bytes) else got
        if got != value and not (value is None and got is None):
            problems.append(f"attribute {key} is {got!r}, the manifest says {value!r} (a shard of another dataset, "
                            "or of another place in this one?)")
    try:
        if json.loads(attrs.get("config", "null")) != manifest["config"]:
            problems.append("attribute config differs from the manifest's config (a shard of another dataset?)")
    except (TypeError, ValueError):
        problems.append("attribute config is not valid JSON")
    count = int(entry["count"])
    for name, spec in manifest["datasets"].items():
        obj = f.get(name)
        if obj is None or not hasattr(obj, "dtype"):
            problems.append(f"dataset {name} is missing")
            continue
        want_shape = (count,) + tuple(spec["shape"])
        if obj.shape != want_shape or str(obj.dtype) != spec["dtype"]:
            problems.append(f"dataset {name} is {obj.dtype} {obj.shape}, manifest says {spec['dtype']} {want_shape}")
    return problems
