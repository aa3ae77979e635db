"""Files for the teams that receive a dataset, written beside manifest.json when a dataset is finalized.

    SHA256SUMS      `sha256sum -c SHA256SUMS` checks every file with nothing but coreutils
    README.md       the dataset card: what it is, config, counts, sizes, splits, sources and licences, how to read it
    croissant.json  Croissant 1.0 metadata (MLCommons; what the NeurIPS datasets track asks for)
    preview.png     the first sequences, rows = sequences, columns = frames

They are functions of the manifest and the shards only (no timestamps, no paths outside the folder), so two runs
with the same config write the same bytes, like the shards. The shards and the manifest do not change because of
them. They are written before the manifest, which stays the last file written (its presence means "complete").
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_bytes, atomic_write_text
from .layout import MANIFEST

from .layout import RECEIVER_FILES

SUMS, CARD, CROISSANT, PREVIEW = RECEIVER_FILES
PREVIEW_SEQUENCES, PREVIEW_FRAMES = 4, 10
MNIST_LICENCE = "https://creativecommons.org/licenses/by-sa/3.0/"
MNIST_CITATION = ("Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to document "
                  "recognition. Proc. IEEE 86(11):2278-2324, 1998")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _name(manifest: dict[str, Any]) -> str:
    config = manifest["config"]
    what = config.get("property") if manifest["source"] == "physvid.render" else manifest["source"]
    return f"physvid-{what}-{manifest['total_sequences']}"


def _uses_mnist(manifest: dict[str, Any]) -> bool:
    shape = manifest["config"].get("shape") if manifest["source"] == "physvid.render" else None
    return isinstance(shape, dict) and bool(shape.get("digits"))


def sources(manifest: dict[str, Any]) -> list[str]:
    """Markdown lines: where the content comes from and under which terms."""
    if manifest["source"] != "physvid.render":
        config = manifest["config"]
        inputs = config.get("source") if isinstance(config.get("source"), list) else [config.get("source")]
        videos = config.get("videos") if isinstance(config.get("videos"), list) else []
        lines = [f"- Written by source `{manifest['source']}` from the inputs its config lists (below); those inputs' "
                 "own licences apply to these frames. Ask the sender for them."]
        seen = set()
        for v in [i for i in inputs if isinstance(i, dict)] + [v for v in videos[:20] if isinstance(v, dict)]:
            line = f"  - `{v.get('name', v.get('path', '?'))}` sha256 `{v.get('sha256', '?')}`"
            if line not in seen:
                seen.add(line)
                lines.append(line)
        return lines
    lines = ["- Every frame is rendered by physvid from the config below (procedural shapes, textures and noise)"
             + (", with the MNIST digits below as the only third-party content." if _uses_mnist(manifest)
                else ": no third-party content.")]
    if _uses_mnist(manifest):
        shape = manifest["config"]["shape"]
        rng = shape.get("digit_range")
        which = f"images {rng[0]}..{rng[1] - 1} of" if rng else "images of"
        lines.append(f"- **MNIST digits** ({which} `{Path(str(shape['digits'])).name}`), drawn as objects. MNIST: "
                     f"Y. LeCun, C. Cortes, C. J. C. Burges; commonly distributed under CC BY-SA 3.0 "
                     f"({MNIST_LICENCE}). Cite: {MNIST_CITATION}.")
    lines.append("- The licence of the dataset itself is the sender's choice; physvid adds no terms.")
    return lines


def _sizes(manifest: dict[str, Any]) -> tuple[int, int]:
    n = int(manifest["total_sequences"])
    raw = sum(int(np.prod(s["shape"], dtype=np.int64)) * np.dtype(s["dtype"]).itemsize
              for s in manifest["datasets"].values()) * n
    return raw, sum(int(s["size"]) for s in manifest["shards"])


def card_text(manifest: dict[str, Any]) -> str:
    """The dataset card (README.md): a function of the manifest only."""
    from .summary import human_bytes

    m = manifest
    n = int(m["total_sequences"])
    T, C, H, W = m["datasets"]["video"]["shape"]
    raw, disk = _sizes(m)
    params = sorted(k.split("/", 1)[1] for k in m["datasets"] if k.startswith("params/"))
    extras = [k for k in ("masks", "property_map") if k in m["datasets"]]
    lines = [
        f"# {_name(m)}",
        "",
        f"Synthetic physics videos written by physvid {m['physvid_version']} (source `{m['source']}`, seed "
        f"{m['seed']}): **{n:,} sequences** of {T} frames, {C} channel(s), {H}x{W} pixels, uint8, with their ground "
        "truth" + (f" ({', '.join(extras)} and " if extras else " (") + f"{len(params)} parameter arrays).",
        "",
        "![the first sequences: rows = sequences, columns = frames](preview.png)",
        "",
        "## Contents",
        f"- {len(m['shards'])} HDF5 shard(s) `shard-NNNNN.h5` of up to {m['shard_size']:,} sequences, compression "
        f"{m['compression']} + fletcher32; {human_bytes(disk)} on disk, {human_bytes(raw)} of arrays.",
        "- `manifest.json`: the full config, per-dataset dtypes and shapes, each shard's index range, size and sha256.",
        f"- `{SUMS}`: `sha256sum -c {SUMS}` checks every file; `{CROISSANT}`: Croissant 1.0 metadata.",
        "",
        "| dataset | dtype | shape per sequence |",
        "|---|---|---|",
    ]
    for name, spec in m["datasets"].items():
        if not name.startswith("params/"):
            lines.append(f"| `{name}` | {spec['dtype']} | {tuple(spec['shape'])} |")
    lines.append(f"| `params/*` | float64 / int32 / int64 | per object or per sequence: {', '.join(params)} |")
    lines += ["", "## Splits"]
    if m.get("splits"):
        lines += ["| split | sequences | index range |", "|---|---|---|"]
        lines += [f"| {k} | {b - a:,} | {a} .. {b - 1} |" if b > a else f"| {k} | 0 | (empty) |"
                  for k, (a, b) in m["splits"].items()]
        lines.append("\nRanges are global sequence indices [first, stop), recorded in `manifest.json` under `splits`.")
    else:
        lines.append("None recorded (`physvid generate ... --splits train=0.8,val=0.1,test=0.1` records some).")
    lines += ["", "## Sources and licences", *sources(m), "", "## Config", "```json",
              json.dumps(m["config"], indent=2), "```", "",
              "## Reading it",
              "With nothing but h5py (docs: the `physvid-hdf5` format, FORMAT.md in the physvid repository):",
              "```python", "import h5py, json",
              'with h5py.File("shard-00000.h5", "r") as f:',
              '    video = f["video"][0]          # (T, C, H, W) uint8, global index f.attrs["first_index"] + 0',
              '    vx = f["params/vx"][0]         # one value per object slot, NaN past num_objects',
              'splits = json.load(open("manifest.json")).get("splits")   # {"train": [first, stop), ...}',
              "```", "With physvid (`pip install physvid`):", "```python", "import physvid",
              'ds = physvid.open_dataset(".")    # ds[i] -> (T, C, H, W) uint8, ds.params["vx"], ds.get(i)',
              "```", "With Hugging Face `datasets` (uint8 video, the config kept in `info.description`):",
              "```python", "from physvid.dataset.hf import load_hf_dataset",
              'ds = load_hf_dataset(".", split="train")   # a datasets.Dataset, numpy uint8 (T, C, H, W) per row',
              "```", "", "## Checking it", "```bash", f"sha256sum -c {SUMS}      # coreutils only",
              "physvid verify .             # also opens every shard and checks shapes, dtypes and indices", "```",
              "A file that fails: ask the sender for that file (its expected sha256 is in the manifest and in "
              f"`{SUMS}`).", ""]
    return "\n".join(lines)


_CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"}, "extract": "cr:extract",
    "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject", "fileSet": "cr:fileSet",
    "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath",
    "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path", "recordSet": "cr:recordSet",
    "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated", "replace": "cr:replace",
    "samplingRate": "cr:samplingRate", "sc": "https://schema.org/", "separator": "cr:separator", "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}


def _field(rs: str, name: str, dtype: str, source: dict[str, Any], description: str = "") -> dict[str, Any]:
    out = {"@type": "cr:Field", "@id": f"{rs}/{name}", "name": name, "dataType": dtype, "source": source}
    if description:
        out["description"] = description
    return out


def croissant(manifest: dict[str, Any], manifest_sha256: str) -> dict[str, Any]:
    """Croissant 1.0 JSON-LD: every file with its sha256, the shard table and the splits as record sets."""
    m = manifest
    T, C, H, W = m["datasets"]["video"]["shape"]
    files = [{"@type": "cr:FileObject", "@id": MANIFEST, "name": MANIFEST, "contentUrl": MANIFEST,
              "encodingFormat": "application/json", "sha256": manifest_sha256,
              "description": "physvid-hdf5 manifest: config, datasets, shards"}]
    files += [{"@type": "cr:FileObject", "@id": s["file"], "name": s["file"], "contentUrl": s["file"],
               "encodingFormat": "application/x-hdf5", "contentSize": f"{s['size']} B", "sha256": s["sha256"],
               "description": f"sequences {s['first_index']}..{s['first_index'] + s['count'] - 1}"}
              for s in m["shards"]]
    doc: dict[str, Any] = {
        "@context": _CONTEXT, "@type": "sc:Dataset", "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": _name(m),
        "description": (f"{m['total_sequences']} synthetic physics videos ({T} frames, {C} channel(s), {H}x{W}, "
                        f"uint8) rendered by physvid {m['physvid_version']} with seed {m['seed']}, with per-object "
                        "ground truth; physvid-hdf5 format (HDF5 shards + manifest.json)."),
        "version": "1.0.0", "url": "README.md",
        "citeAs": f"physvid {m['physvid_version']} dataset {_name(m)} (config in manifest.json)",
        "keywords": ["video prediction", "synthetic data", "physics", "physvid"],
        "distribution": files,
    }
    if _uses_mnist(m):
        doc["license"] = MNIST_LICENCE
    from_manifest = lambda path: {"fileObject": {"@id": MANIFEST}, "extract": {"jsonPath": path}}  # noqa: E731
    doc["recordSet"] = [{
        "@type": "cr:RecordSet", "@id": "shards", "name": "shards",
        "description": "One record per HDF5 shard: which sequences it holds and its checksum (from manifest.json).",
        "field": [_field("shards", "file", "sc:Text", from_manifest("$.shards[*].file")),
                  _field("shards", "first_index", "sc:Integer", from_manifest("$.shards[*].first_index")),
                  _field("shards", "count", "sc:Integer", from_manifest("$.shards[*].count")),
                  _field("shards", "sha256", "sc:Text", from_manifest("$.shards[*].sha256"))],
    }]
    if m.get("splits"):
        doc["recordSet"].append({
            "@type": "cr:RecordSet", "@id": "splits", "name": "splits",
            "description": "Named splits as half-open ranges [first, stop) of global sequence indices.",
            "field": [{"@type": "cr:Field", "@id": "splits/name", "name": "name", "dataType": "sc:Text"},
                      {"@type": "cr:Field", "@id": "splits/first", "name": "first", "dataType": "sc:Integer"},
                      {"@type": "cr:Field", "@id": "splits/stop", "name": "stop", "dataType": "sc:Integer"}],
            "data": [{"splits/name": k, "splits/first": a, "splits/stop": b} for k, (a, b) in m["splits"].items()],
        })
    return doc


def preview_png(out: Path, manifest: dict[str, Any]) -> bytes:
    """The first sequences of the first shard as a PNG grid (read with plain h5py: the manifest is not written yet)."""
    import h5py
    from PIL import Image

    from ..preview import grid

    with h5py.File(out / manifest["shards"][0]["file"], "r") as f:
        video = f["video"][:PREVIEW_SEQUENCES, :PREVIEW_FRAMES]
    scale = max(1, min(2, 128 // max(video.shape[-2:])))
    buf = io.BytesIO()
    Image.fromarray(grid(video, scale=scale)).save(buf, format="PNG")
    return buf.getvalue()


def write_receiver_files(out: str | Path, manifest: dict[str, Any], manifest_text: str) -> None:
    """Write SHA256SUMS, README.md, croissant.json and preview.png into DIR (each atomically)."""
    out = Path(out)
    manifest_sha = _sha256(manifest_text.encode("utf-8"))
    png = preview_png(out, manifest)
    atomic_write_bytes(out / PREVIEW, png)
    card = card_text(manifest)
    atomic_write_text(out / CARD, card)
    crois = json.dumps(croissant(manifest, manifest_sha), indent=2) + "\n"
    atomic_write_text(out / CROISSANT, crois)
    sums = {MANIFEST: manifest_sha, CARD: _sha256(card.encode("utf-8")), CROISSANT: _sha256(crois.encode("utf-8")),
            PREVIEW: _sha256(png)}
    sums.update({s["file"]: s["sha256"] for s in manifest["shards"]})
    atomic_write_text(out / SUMS, "".join(f"{sha}  {name}\n" for name, sha in sums.items()))


def receiver_files_missing(out: str | Path) -> bool:
    return not all((Path(out) / name).is_file() for name in RECEIVER_FILES)


__all__ = ["RECEIVER_FILES", "write_receiver_files", "card_text", "croissant", "receiver_files_missing", "sources"]
