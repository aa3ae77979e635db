"""Checking a dataset against its manifest (`physvid verify`) and describing it (`physvid info`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import DatasetError, NotADatasetError
from .layout import FORMAT_VERSION, SHARD_RE, TMP_RE, sha256_file
from .manifest import load_manifest
from .reader import _shard_manifest
from .regular import file_kind
from .trust import shard_problems


@dataclass
class VerifyReport:
    """`problems` maps a shard file name (or "manifest") to what is wrong with it; empty means the dataset is sound."""

    path: Path
    shards: int
    sequences: int
    bytes: int
    problems: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)  # shard file -> sha256 the manifest records
    regenerate: str | None = None  # the command that rebuilds bad shards, when the generator's inputs are at hand

    def fix_lines(self) -> list[str]:
        """What a receiver can do: ask the sender for each bad file (named with its expected sha256); rebuild it only
        where the generator config (and any input file it names) is at hand."""
        bad = self.bad_shards
        lines = [f"  expected: {name} sha256 {self.expected[name]}" for name in bad if name in self.expected]
        if bad:
            lines.append(f"  fix: ask the sender for {', '.join(bad)} (the sha256 above, also in manifest.json and "
                         "SHA256SUMS)" + (f"; or rebuild them here: {self.regenerate}" if self.regenerate else ""))
        else:
            lines.append("  fix: ask the sender for an intact copy of manifest.json")
        return lines

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_shards(self) -> list[str]:
        return sorted(k for k in self.problems if k != "manifest")

    def describe(self) -> str:
        if self.ok:
            lines = [f"OK: {self.path}: {self.shards} shard(s), {self.sequences} sequences, {self.bytes:,} bytes; every "
                     "sha256 matches the manifest and every shard opens with the expected shapes and dtypes"]
        else:
            lines = [f"BAD: {self.path}: {len(self.bad_shards)} of {self.shards} shard(s) failed"
                     + (" and the manifest is inconsistent" if "manifest" in self.problems else "")]
            for name in sorted(self.problems):
                for p in self.problems[name]:
                    lines.append(f"  {name}: {p}")
            lines += self.fix_lines()
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _check_shard(path: Path, entry: dict[str, Any], manifest: dict[str, Any], deep: bool, k: int) -> list[str]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        return [f"cannot be opened as HDF5 ({str(exc).splitlines()[0]})"]
    with f:
        try:
            problems = shard_problems(f, entry, manifest, k)
        except (OSError, RuntimeError, KeyError) as exc:
            return [f"metadata is damaged ({str(exc).splitlines()[0]})"]
        if any(p.startswith("/") for p in problems):
            return problems  # links or storage outside the shard: read nothing more
        count = int(entry["count"])
        if "index" in f and f["index"].shape == (count,):
            try:
                if not np.array_equal(f["index"][()], np.arange(entry["first_index"], entry["first_index"] + count)):
                    problems.append("dataset index does not hold the shard's global indices")
            except OSError as exc:
                problems.append(f"dataset index is unreadable ({str(exc).splitlines()[0]})")
        if deep:  # decompress every chunk: HDF5 checks each one's fletcher32
            for name in manifest["datasets"]:
                if name in f:
                    try:
                        d = f[name]
                        for lo in range(0, d.shape[0], 256):
                            d[lo:lo + 256]
                    except OSError as exc:
                        problems.append(f"dataset {name} has a corrupt chunk ({str(exc).splitlines()[0]})")
    return problems


def verify_dataset(path: str | Path, *, deep: bool = False) -> VerifyReport:
    """Recompute every shard's sha256, open every shard and check its shapes, dtypes and indices against the manifest.

    `deep` also decompresses every chunk (HDF5 then checks each chunk's fletcher32), which the sha256 already implies
    for files written by physvid; it helps on a dataset whose manifest was rebuilt by hand.
    """
    root = Path(path)
    manifest = load_manifest(root)  # refuses a manifest whose counts, names, shapes or types are not physvid's
    shards = manifest["shards"]
    report = VerifyReport(path=root, shards=len(shards), sequences=int(manifest["total_sequences"]), bytes=0)
    listed = set()
    report.regenerate = regenerate_command(root, manifest)
    for k, entry in enumerate(shards):
        name = entry["file"]
        listed.add(name)
        report.expected[name] = entry["sha256"]
        p = root / name
        kind = file_kind(p)
        if kind != "a regular file":  # never opened: a FIFO would block the read forever
            report.problems[name] = ["missing" if kind == "missing" else f"is {kind}, not a regular file (not read)"]
            continue
        sha, size = sha256_file(p)
        report.bytes += size
        problems = []
        if size != entry["size"]:
            problems.append(f"size {size} bytes, manifest says {entry['size']}")
        if sha != entry["sha256"]:
            problems.append(f"sha256 {sha[:16]}... does not match the manifest's {entry['sha256'][:16]}...")
        problems += _check_shard(p, entry, manifest, deep, k)
        if problems:
            report.problems[name] = problems
    for p in sorted(root.iterdir()):
        if SHARD_RE.match(p.name) and p.name not in listed:
            report.warnings.append(f"{p.name} is not listed in the manifest (left over from another run?)")
        elif TMP_RE.match(p.name):
            report.warnings.append(f"{p.name} is an unfinished temporary file (a generate run is in progress or was "
                                   "killed); it is never read")
    return report


def regenerate_command(root: Path, manifest: dict[str, Any]) -> str | None:
    """`physvid generate --config DIR/manifest.json --out DIR` when this physvid can rebuild the data: rendered data
    of the same physvid version whose digits file (if any) exists here; None otherwise (ask the sender)."""
    config = manifest.get("config") or {}
    if manifest.get("source") != "physvid.render" or manifest.get("physvid_version") != __version__:
        return None
    digits = (config.get("shape") or {}).get("digits") if isinstance(config.get("shape"), dict) else None
    if digits and not Path(str(digits)).is_file():
        return None
    return f"`physvid generate --config {root / 'manifest.json'} --out {root}` (same physvid version, same bytes)"


def describe_dataset(path: str | Path, *, verify: bool = False) -> dict[str, Any]:
    """What `physvid info` prints: config, counts, shapes, sizes, property, versions, checksum status."""
    p = Path(path)
    if p.is_dir():
        manifest = load_manifest(p)
        files = [p / s["file"] for s in manifest["shards"]]
        kind = "dataset folder"
    elif p.is_file():
        manifest = _shard_manifest(p)
        files = [p]
        kind = "single shard"
    elif p.exists():
        raise DatasetError(f"{p} is {file_kind(p)}, not a dataset folder or shard file; give the folder written by "
                           "`physvid generate` or one shard file")
    else:
        raise NotADatasetError(f"no dataset at {p}: give the folder written by `physvid generate` or one shard file")
    sequences = sum(int(s["count"]) for s in manifest["shards"])
    on_disk = sum(f.stat().st_size for f in files if f.is_file())
    video = manifest["datasets"]["video"]
    frames = int(video["shape"][0]) if video["shape"] else 0
    per_seq = {name: int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize
               for name, spec in manifest["datasets"].items()}
    raw = sum(per_seq.values()) * sequences
    info: dict[str, Any] = {
        "path": str(p),
        "kind": kind,
        "format": manifest["format"],
        "format_version": manifest["format_version"],
        "reader_format_version": FORMAT_VERSION,
        "written_by": manifest.get("software") or {"physvid": manifest.get("physvid_version")},
        "reader_physvid_version": __version__,
        "source": manifest.get("source"),
        "property": manifest["config"].get("property") if isinstance(manifest["config"], dict) else None,
        "seed": manifest.get("seed"),
        "sequences": sequences,
        "total_sequences": manifest.get("total_sequences"),
        "frames": sequences * frames,
        "shards": len(manifest["shards"]),
        "shard_size": manifest.get("shard_size"),
        "compression": manifest.get("compression"),
        "bytes_on_disk": on_disk,
        "bytes_uncompressed": raw,
        "compression_ratio": round(raw / on_disk, 3) if on_disk else None,
        "datasets": {name: {"dtype": spec["dtype"], "shape": [sequences] + list(spec["shape"])}
                     for name, spec in manifest["datasets"].items()},
        "splits": manifest.get("splits"),
        "config": manifest["config"],
    }
    if verify and kind == "dataset folder":
        report = verify_dataset(p)
        info["checksums"] = "verified: all match" if report.ok else f"FAILED: {', '.join(report.problems)}"
        info["checksums_ok"] = report.ok
    elif kind == "dataset folder":
        info["checksums"] = "not verified by this command (pass --verify, or run `physvid verify DIR`)"
    else:
        info["checksums"] = "a single shard carries no sha256 (its folder's manifest does); fletcher32 guards its chunks"
    return info
