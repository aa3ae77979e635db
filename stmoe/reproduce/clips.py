"""The paper's comparison on a user's own clips: `stmoe reproduce clips --clips PATH ...`.

Each named clip -- a video file, a folder of videos, a frame folder (or folder of frame folders), a .npy/.npz array,
radar files, or a dataset folder already written by `stmoe prepare` / `physvid generate` -- becomes one entry of the
same form as :data:`stmoe.reproduce.spec.REAL_DATA` (name -> (path, kind, frames between clips)), so the `clips`
experiment runs exactly the protocol of `real` on it: the same rows (``--rows`` keeps some of them), one budget
(the profile's), the time-ordered train / val / test split with gaps, table.md + results.json + pictures.

The entries are written to ``OUT/clips.json`` and read back (:func:`load_clips`) by every process of the run, so a
resumed run uses the clips it started with; they travel as a :class:`Clips` value, never as module state.

A clip's name is ``NAME=PATH`` when given so, else the file or folder name (letters, digits, - and _), made unique.
Kind ``dataset`` marks a folder that is already a physvid dataset: it is used as it is (not prepared again); its
sequences must hold at least l + n = 10 frames (the clips of `real`).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from physvid.files import atomic_write_text

CLIPS_FILE = "clips.json"
DATASET = "dataset"  # the kind of an entry that is already a physvid dataset folder


@dataclass(frozen=True)
class Clips:
    """The user's clips of one reproduction folder: {name: (path, kind, frames between clips or None)} and the
    ``--rows`` filter. Empty for every experiment but `clips`."""

    entries: Mapping[str, tuple] = field(default_factory=dict)
    rows: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)


def _error(message: str) -> Exception:
    from .runner import ReproduceError

    return ReproduceError(message)


def _clip_frames() -> int:
    from .spec import CLIP

    return sum(CLIP)


def _dataset_stride(path: Path) -> int:
    """Frames between clip starts that make `time_split`'s gaps right for a dataset folder: clips cut by
    `stmoe prepare` overlap as its manifest says; other datasets hold independent sequences (no overlap)."""
    manifest = json.loads((path / "manifest.json").read_text())
    T = int(manifest.get("frames") or manifest.get("config", {}).get("frames") or 0) or _sequence_frames(path)
    need = _clip_frames()
    if T < need:
        raise _error(f"--clips {path}: its sequences have {T} frames, the comparison's clips {need} (l + n); "
                     f"prepare it with `stmoe prepare SRC --frames {need} ...`")
    clip = manifest.get("config", {}).get("clip") if manifest.get("source") == "stmoe.prepare" else None
    if not clip:
        return need  # independent sequences: no gap needed between the splits
    stride = int(clip.get("stride") or T)
    if T == need:
        return stride
    overlap = math.ceil(T / stride)  # neighbours a clip of T frames overlaps, plus one
    return max(1, need // overlap)


def _sequence_frames(path: Path) -> int:
    from physvid.dataset import open_dataset

    ds = open_dataset(path)
    return int(ds[0].shape[0]) if len(ds) else 0


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "clip"


def clip_entries(sources: Sequence[str], out: str | Path | None = None) -> dict[str, tuple[str, str, int | None]] | None:
    """``["NAME=PATH" | "PATH", ...]`` -> {name: (absolute path, kind, stride or None)}, in the given order; None
    when ``sources`` is empty and ``OUT/clips.json`` already names the clips (a resumed run).

    Raises ReproduceError (exit 2, one line) for a missing path, no clips at all, a name given twice or a dataset
    folder whose sequences are shorter than the comparison's clips.
    """
    from ..train.evaluate import is_physvid_dataset
    from .spec import REAL_DATA

    if not sources:
        if out is not None and (Path(out) / CLIPS_FILE).is_file():
            return None
        raise _error("experiment 'clips' needs your clips: --clips PATH (repeatable: a video, frame folder, "
                     ".npy/.npz array, radar files or a folder written by `stmoe prepare`)")
    entries: dict[str, tuple[str, str, int | None]] = {}
    taken = set(REAL_DATA) | {"dynamic-mnist"}
    for text in sources:
        name, sep, path_text = str(text).partition("=")
        if not sep or not name or "/" in name or Path(text).exists():
            name, path_text = "", str(text)
        path = Path(path_text).expanduser()
        if not path.exists():
            raise _error(f"--clips {path_text} does not exist (give a video, frame folder, .npy/.npz array, radar "
                         f"files or a dataset folder written by `stmoe prepare`)")
        if name:
            name = _name(name)
            if name in entries or name in taken:
                raise _error(f"--clips: the name {name!r} is given twice or is a built-in data set's; choose another")
        else:
            base = _name(path.stem if path.is_file() else path.name)
            name, k = base, 2
            while name in entries or name in taken:
                name, k = f"{base}-{k}", k + 1
        path = path.resolve()
        if is_physvid_dataset(path) and path.is_dir():
            entries[name] = (str(path), DATASET, _dataset_stride(path))
        else:
            entries[name] = (str(path), "auto", None)
    return entries


def save_clips(out: str | Path, entries: dict[str, tuple[str, str, int | None]] | None,
               rows: Sequence[str] = ()) -> None:
    """Write ``OUT/clips.json`` (nothing when ``entries`` is None); a folder that already holds other clips is
    refused (one line)."""
    if entries is None:
        return
    path = Path(out) / CLIPS_FILE
    doc = {"clips": {k: list(v) for k, v in entries.items()}, "rows": list(rows)}
    if path.is_file():
        held = json.loads(path.read_text())
        if held != doc:
            raise _error(f"{out} compares other clips or rows ({', '.join(held.get('clips', {}))}); choose another "
                         f"--out or repeat the same --clips and --rows")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def load_clips(out: str | Path) -> Clips:
    """The clips ``OUT/clips.json`` names (empty when it does not exist)."""
    path = Path(out) / CLIPS_FILE
    if not path.is_file():
        return Clips()
    doc = json.loads(path.read_text())
    return Clips({name: tuple(v) for name, v in doc["clips"].items()}, tuple(doc.get("rows", ())))


def clip_rows(profile, clips: Clips) -> tuple:
    """The rows of `real` (spec.experiment_rows) on every clip of ``clips``, kept to its ``--rows`` when given (model
    names or row labels, case-insensitive). Raises ReproduceError when there are no clips or no row matches."""
    import dataclasses

    from .spec import experiment_rows

    if not clips.names:
        raise _error("experiment 'clips' needs your clips: stmoe reproduce clips --clips PATH [--clips PATH ...]")
    every = experiment_rows("real", dataclasses.replace(profile, real_sets=clips.names), clips)
    if not clips.rows:
        return every
    wanted = {r.lower() for r in clips.rows}
    rows = tuple(r for r in every if r.model.lower() in wanted or r.label.lower() in wanted)
    if not rows:
        raise _error(f"--rows {','.join(clips.rows)} matches no row; allowed: "
                     f"{', '.join(sorted({r.model for r in every}))} (or row labels)")
    return rows
