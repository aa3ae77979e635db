"""Other formats for other tools: a Moving-MNIST style .npy, one .mp4 or one PNG folder per sequence, and previews."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ConfigError, DatasetError
from ..files import atomic_path, atomic_write_text
from .flow_export import FLOW_FORMATS, export_flow
from .reader import Dataset, open_dataset

EXPORT_FORMATS = ("npy", "mp4", "png", "flo", "kitti", "parquet", "csv", "webdataset")
TABLE_FORMATS = ("parquet", "csv")
NPY_LAYOUTS = ("tnhw", "nthwc", "ntchw")
BLOCK = 256  # sequences per read while streaming into the .npy


# Largest side of an exported or previewed frame after --scale, and largest preview picture: beyond these a picture
# is no use to anyone and only exhausts memory (refused before anything is read, exit code 2).
MAX_SCALED_SIDE = 8192
MAX_PICTURE_BYTES = 1 << 30


def _indices(ds: Dataset, indices: Iterable[int] | None) -> list[int]:
    if indices is None:
        return list(range(len(ds)))
    out = []
    for i in indices:
        i = int(i)
        if not 0 <= i < len(ds):
            raise ConfigError(f"--index {i} is out of range for a dataset of {len(ds)} sequences (0..{len(ds) - 1})")
        out.append(i)
    if not out:
        raise ConfigError("no sequences selected; give --index I (repeatable) or leave it out for all")
    return out


def default_export_path(path: str | os.PathLike, fmt: str) -> Path:
    p = Path(path)
    base = p if p.is_dir() else p.with_suffix("")
    if fmt in ("npy", *TABLE_FORMATS):
        return base.parent / f"{base.name}.{fmt}"
    return base.parent / f"{base.name}-{fmt}"


def export_dataset(path: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None, *,
                   indices: Iterable[int] | None = None, layout: str = "tnhw", fps: int = 5,
                   scale: int = 1, val_fraction: float = 0.0) -> list[Path]:
    """Write the sequences of a dataset in `fmt`; returns the paths written.

    npy:  one array; layout `tnhw` is Moving-MNIST's (T, N, H, W) (channels last, (T, N, H, W, C), when C = 3),
          `nthwc` is (N, T, H, W, C) and `ntchw` physvid's own (N, T, C, H, W); beside it OUT.json records the axes
          ("TNHW", ...) and the shape, so that `stmoe prepare` reads it back without guessing.
    mp4:  OUT/seq-<index>.mp4 per sequence (H.264, lossy; sizes padded to even).
    png:  OUT/seq-<index>/frame-<t>.png per sequence (lossless).
    flo, kitti: every frame pair with its exact flow, FlyingChairs2's or KITTI 2015's layout (dataset/flow_export.py;
          needs a dataset made with --flow; `val_fraction` of the sequences go to FlyingChairs2's val/ split).
    parquet, csv: the ground truth, one row per (sequence, object); webdataset: tar shards (dataset/tables.py).
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    if scale < 1:
        raise ConfigError(f"--scale must be >= 1, got {scale}")
    ds = open_dataset(path)
    idx = _indices(ds, indices)
    if fmt in ("mp4", "png"):
        check_scale(ds.shape, scale, 1)
    out = Path(out) if out is not None else default_export_path(path, fmt)
    # The wrong kind of path is a usage error (exit 2), said before anything is written.
    if fmt == "npy" and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; npy export writes one file: give a file name such as "
                          f"{out / 'data.npy'}")
    if fmt != "npy" and out.exists() and not out.is_dir():
        what = "an mp4 file" if fmt == "mp4" else "a folder of PNG frames"
        raise ConfigError(f"--out {out} is a file; {fmt} export writes {what} per sequence into a folder: give a "
                          "folder (it is created if missing)")
    try:
        with ds:
            if fmt == "npy":
                return [_export_npy(ds, idx, out, layout)]
            if fmt in FLOW_FORMATS:
                return export_flow(ds, idx, out, fmt, val_fraction)
            if fmt in TABLE_FORMATS or fmt == "webdataset":
                from .tables import export_table, export_webdataset

                return [export_table(ds, idx, out, fmt)] if fmt != "webdataset" else export_webdataset(ds, idx, out)
            return _export_frames(ds, idx, out, fmt, fps, scale)
    except OSError as exc:
        raise DatasetError(f"cannot write {out}: {exc.strerror or exc}") from None


def check_scale(shape: tuple[int, ...], scale: int, sequences: int, gif: bool = False) -> None:
    """Refuse (ConfigError) a --scale whose pictures of `sequences` sequences of shape (N, T, C, H, W) are too big."""
    _, t, _, h, w = shape
    side = max(h, w) * scale
    if side > MAX_SCALED_SIDE:
        raise ConfigError(f"--scale {scale} makes {h * scale}x{w * scale} frames; at most {MAX_SCALED_SIDE} pixels a "
                          f"side: use --scale <= {max(1, MAX_SCALED_SIDE // max(h, w))}")
    picture = sequences * t * h * w * scale * scale * 3 * (2 if gif else 1)
    if picture > MAX_PICTURE_BYTES:
        raise ConfigError(f"--scale {scale} makes a picture of {picture / 1e9:.1f} GB for {sequences} sequence(s) of "
                          f"{t} frames; at most {MAX_PICTURE_BYTES / 1e9:.1f} GB: lower --scale or pick fewer --index")


def _write_at(fd: int, data: np.ndarray, offset: int) -> None:
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _export_npy(ds: Dataset, idx: list[int], out: Path, layout: str) -> Path:
    if layout not in NPY_LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; allowed: {', '.join(NPY_LAYOUTS)}")
    T, C, H, W = ds.shape[1:]
    n = len(idx)
    if layout == "tnhw":
        shape, axes = ((T, n, H, W), "TNHW") if C == 1 else ((T, n, H, W, C), "TNHWC")
    elif layout == "nthwc":
        shape, axes = (n, T, H, W, C), "NTHWC"
    else:
        shape, axes = (n, T, C, H, W), "NTCHW"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Plain writes at offsets, not a memory map: on a full disk a write fails with ENOSPC (one line, exit 1), where a
    # mapped page that cannot be stored kills the process with SIGBUS. The space is reserved first where the file
    # system can, so a disk too small fails before any block is read.
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.flush()
        base = fh.tell()
        fd = fh.fileno()
        total = base + int(np.prod(shape, dtype=np.int64))
        if hasattr(os, "posix_fallocate") and total > base:
            try:
                os.posix_fallocate(fd, 0, total)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
                    raise
        os.ftruncate(fd, total)
        frame = H * W * C
        for lo in range(0, n, BLOCK):
            v = ds.read_video(idx[lo:lo + BLOCK])  # (b, T, C, H, W)
            hi = lo + v.shape[0]
            if layout == "tnhw":  # (T, n, H, W[, C]): one run of sequences per frame index
                block = v.transpose(1, 0, 3, 4, 2)
                for t in range(T):
                    _write_at(fd, block[t], base + (t * n + lo) * frame)
            elif layout == "nthwc":
                _write_at(fd, v.transpose(0, 1, 3, 4, 2), base + lo * T * frame)
            else:
                _write_at(fd, v, base + lo * T * frame)
    # (T, N, H, W) and (N, T, H, W) look alike: the sidecar lets readers (`stmoe prepare`) know which this is.
    atomic_write_text(out.with_name(out.name + ".json"), json.dumps({"layout": axes, "shape": list(shape)}) + "\n")
    return out


def _rgb_frames(video: np.ndarray, scale: int) -> np.ndarray:
    """(T, C, H, W) uint8 -> (T, H', W', 3) uint8, nearest-neighbour upscaled."""
    v = np.moveaxis(video, 1, -1)
    if v.shape[-1] == 1:
        v = np.repeat(v, 3, axis=-1)
    if scale > 1:
        v = v.repeat(scale, axis=1).repeat(scale, axis=2)
    return np.ascontiguousarray(v)


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    try:
        import av
    except ImportError:
        raise DatasetError("mp4 export needs PyAV: pip install av (or physvid[train])") from None
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # yuv420p needs even sizes
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _export_frames(ds: Dataset, idx: list[int], out: Path, fmt: str, fps: int, scale: int) -> list[Path]:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    width = max(7, len(str(ds.first_index + len(ds) - 1)))
    written = []
    for i in idx:
        frames = _rgb_frames(ds[i], scale)
        name = f"seq-{ds.first_index + i:0{width}d}"
        if fmt == "mp4":
            path = out / f"{name}.mp4"
            _write_mp4(path, frames, fps)
        else:
            path = out / name
            path.mkdir(exist_ok=True)
            digits = max(2, len(str(len(frames) - 1)))
            for t, frame in enumerate(frames):
                Image.fromarray(frame).save(path / f"frame-{t:0{digits}d}.png")
        written.append(path)
    return written


def preview_dataset(path: str | os.PathLike, out: str | os.PathLike, *, indices: Iterable[int] | None = None,
                    property_map: bool = False, scale: int = 2, fps: int = 5, count: int = 4,
                    flow: bool = False) -> Path:
    """A PNG grid (rows = sequences, columns = frames) or an animated GIF of some sequences (default: the first 4)."""
    from ..preview import save_preview

    suffix = Path(out).suffix.lower()
    if suffix not in (".png", ".gif"):
        raise ConfigError(f"preview output must end in .png or .gif, got {Path(out).name!r}")
    ds = open_dataset(path)
    with ds:
        idx = _indices(ds, indices) if indices else list(range(min(count, len(ds))))
        check_scale(ds.shape, scale, len(idx), gif=suffix == ".gif")
        video = ds.read_video(idx)
        pmap = None
        if property_map:
            if not ds.has_property_maps:
                raise ConfigError(f"{path} stores no property maps; regenerate it with --property-maps, or drop "
                                  "--property-map")
            pmap = np.stack([ds.get(i, fields=["property_map"])["property_map"] for i in idx])
        flows = None
        if flow:
            if "flow_forward" not in ds.datasets:
                raise ConfigError(f"{path} stores no flow; regenerate it with --flow, or drop --flow")
            flows = np.stack([ds.get(i, fields=["flow_forward"])["flow_forward"] for i in idx])
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        return save_preview(out, video, pmap, scale=scale, fps=fps, flow=flows)
    except OSError as exc:
        raise DatasetError(f"cannot write {out}: {exc.strerror or exc}") from None
