"""Real videos, frame folders, arrays and radar -> a physvid dataset of clips (`stmoe prepare`), so that training reads
one format. The clips come from stmoe.data.real; physvid's writer shards them (any source of sequences)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError


class ArraySource:
    """In-memory clips as a physvid.write_dataset source (picklable)."""

    name = "stmoe.prepare"

    def __init__(self, clips: np.ndarray):
        self.clips = clips

    def __call__(self, indices: np.ndarray):
        idx = np.asarray(indices, dtype=np.int64)
        return self.clips[idx], {"clip_index": idx.copy()}


def describe_input(path: Any) -> dict[str, Any]:
    """What `stmoe prepare` records of an input: its file name and sha256 (a folder: its name, its file count and the
    sha256 of the list of `sha256  relative/name` lines of its files, as `sha256sum` prints them, sorted by name);
    never the path as typed, which means nothing on the receiving side."""
    from physvid.dataset.layout import sha256_file

    p = Path(str(path))
    if p.is_file():
        sha, size = sha256_file(p)
        return {"name": p.name, "sha256": sha, "size": size}
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        lines = "".join(f"{sha256_file(f)[0]}  {f.relative_to(p).as_posix()}\n" for f in files)
        return {"name": p.name, "files": len(files), "sha256": hashlib.sha256(lines.encode()).hexdigest()}
    return {"name": p.name}


def prepare_dataset(source: Any, out: str | Path, *, clip_length: int, stride: int | None = None,
                    frame_step: int = 1, size: int | tuple[int, int] = 64, channels: int = 1, kind: str = "auto",
                    layout: str = "auto", allow_upscale: bool = False, max_frames: int | None = None,
                    radar: Any = None, shard_size: int = 1000, compression: str = "gzip",
                    overwrite: bool = False, array_key: str | None = None):
    """Real videos / frame folders / arrays / radar -> a physvid shard folder of clips (so training reads one format).

    Clips of ``clip_length`` frames every ``stride`` frames (default: non-overlapping) come from
    :func:`stmoe.data.real.load_clips`; the manifest records the source and every loader setting. Returns physvid's
    write Summary.
    """
    from physvid.dataset import write_dataset

    from .real import ClipConfig, load_clips_from_config, record_videos

    stride = clip_length if stride is None else stride
    cfg = ClipConfig(clip_length=clip_length, stride=stride, frame_step=frame_step, size=size, channels=channels,
                     layout=layout, array_key=array_key, allow_upscale=allow_upscale, max_frames=max_frames)
    with record_videos() as videos:
        clips = load_clips_from_config(source, cfg, kind=kind, radar=radar)
    if len(clips) == 0:
        raise DataError(f"{source} gave no clips of {clip_length} frames")
    sources = [describe_input(s) for s in source] if isinstance(source, (list, tuple)) else describe_input(source)
    for v in videos:  # a receiver has the files, not our paths: name and checksum identify each input
        v.update(describe_input(v.pop("path")))
    config = {"source": sources, "kind": kind, "clip": cfg.to_dict(), "videos": videos,
              "radar": radar.to_dict() if radar is not None and hasattr(radar, "to_dict") else None}
    return write_dataset(out, ArraySource(clips), len(clips), config, source_name=ArraySource.name,
                         shard_size=shard_size, workers=1, compression=compression, overwrite=overwrite)
