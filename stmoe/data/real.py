"""Loaders for the real datasets of paper §4 (traffic/pedestrian videos, dynamic textures, precipitation radar) into uint8 clips.

`load_clips(source, clip_length=...)` returns an array (N, T, C, H, W) uint8 from
- a video file (mp4, avi, ... decoded with PyAV, falling back to imageio-ffmpeg) or a folder of video files (one sequence each);
- a folder of frames (png/jpg/bmp/tif, natural sort: frame_2 before frame_10), or a folder of such folders (one sequence each);
- a .npy/.npz array of sequences (layouts below);
- precipitation radar files (a folder searched recursively, a glob or a list; see stmoe/data/radar.py), one sequence in file-name order.

Pipeline per sequence: keep every `frame_step`-th frame -> colour (channels=1: Rec. 601 luma; channels=3: RGB, grey repeated) ->
scale the shorter side to the target size and centre-crop (INTER_AREA when shrinking; enlarging needs allow_upscale=True) ->
windows of `clip_length` frames every `stride` (subsampled) frames. The paper (§4) likewise downsamples, crops and converts to grey.

Array layouts (`layout`): "NTHW", "NTCHW", "NTHWC", "TNHW" (Moving-MNIST's mnist_test_seq.npy is (20, 10000, 64, 64)), "TNHWC",
"THW" and "THWC" (one sequence). "auto": the layout recorded in the sidecar FILE.json that `physvid export` writes beside its
.npy (so our own exports round-trip whatever their shape); else 3-D -> THW; 4-D -> THWC if the last axis is 1, 3 or 4 and the one
before it is larger, else an error asking for layout (TNHW or NTHW cannot be told apart by shape, and a wrong guess silently mixes
sequences); 5-D -> NTCHW if axis 2 is 1 or 3, else NTHWC if the last axis is 1, 3 or 4.
Arrays must be uint8/bool, integers in [0, 255], or floats in [0, 1].
"""
from __future__ import annotations

import glob as _glob
import json
import math
import re
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from physvid.checks import Checks

from ..metrics import rain_rate_to_hko_pixel
from .errors import DataError
from .radar import RADAR_FORMATS, radar_format_of, read_radar_frame

__all__ = [
    "KINDS", "LAYOUTS", "ClipConfig", "RadarConfig", "RadarSequence",
    "load_clips", "load_sequences", "load_radar", "make_clips", "rate_to_unit", "unit_to_rate", "natural_key",
]

CHECK = Checks(DataError)
KINDS = ("auto", "video", "frames", "array", "radar")
LAYOUTS = ("auto", "NTHW", "NTCHW", "NTHWC", "TNHW", "TNHWC", "THW", "THWC")
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ogv"})
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
ARRAY_EXTS = frozenset({".npy", ".npz"})


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically (frame_2 before frame_10)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t)


def _positive_int(value, name: str, allow_none: bool = False) -> None:
    CHECK.int(name, value, low=1, optional=allow_none)


@dataclass(frozen=True)
class ClipConfig:
    """How sequences become clips (sizes in output frames/pixels)."""

    clip_length: int | None = None  # frames per clip after frame_step; None = whole sequences (all must be equally long)
    stride: int = 1  # subsampled frames between the starts of consecutive clips
    frame_step: int = 1  # keep every frame_step-th source frame (2 turns 5-minute radar into the paper's 10-minute cadence)
    size: int | tuple = 64  # output H x W (an int means square)
    channels: int = 1  # 1 = grey (the paper's C_Y = 1), 3 = RGB
    allow_upscale: bool = False  # enlarging frames invents detail; refuse unless asked
    layout: str = "auto"  # array layout, see the module docstring
    array_key: str | None = None  # array inside a .npz (None: the only one)
    video_backend: str = "auto"  # "auto" (PyAV, then imageio-ffmpeg), "av" or "ffmpeg"
    max_frames: int | None = None  # read at most this many source frames per sequence (None: all)

    def __post_init__(self) -> None:
        _positive_int(self.clip_length, "clip_length", allow_none=True)
        _positive_int(self.stride, "stride")
        _positive_int(self.frame_step, "frame_step")
        _positive_int(self.max_frames, "max_frames", allow_none=True)
        size = (self.size, self.size) if isinstance(self.size, (int, np.integer)) and not isinstance(self.size, bool) else self.size
        try:
            size = tuple(int(s) for s in size)
        except (TypeError, ValueError):
            size = ()
        if len(size) != 2 or min(size) < 1:
            raise DataError(f"size must be an integer >= 1 or a pair (H, W) of them, got {self.size!r}")
        object.__setattr__(self, "size", size)
        if self.channels not in (1, 3):
            raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}")
        if self.layout not in LAYOUTS:
            raise DataError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.video_backend not in ("auto", "av", "ffmpeg"):
            raise DataError(f"video_backend must be 'auto', 'av' or 'ffmpeg', got {self.video_backend!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RadarConfig:
    """Radar decoding and the rain-rate -> [0, 1] transform (docs/real-data.md)."""

    format: str = "auto"  # "auto" (from the file extension) or one of bom, fmi, mch, knmi
    transform: str = "hko"  # "hko": inverse HKO-7 mapping p = (10 log10 a + 10 b log10 R + 10)/70; "linear": p = R / max_rate
    max_rate: float = 100.0  # mm/h mapped to 1 by the linear transform
    zr_a: float = 58.53  # Z-R coefficients of the HKO transform (Shi et al. 2017), so that B-MSE's default inverts it
    zr_b: float = 1.56
    nodata_rate: float = 0.0  # rain rate written where the product has no data (outside coverage)
    region: tuple | None = None  # (y0, y1, x0, x1) in native pixels, cropped before resizing; None = whole composite
    cadence_minutes: float | None = None  # if set, keep one frame every cadence_minutes (replaces frame_step)
    min_valid_fraction: float = 0.5  # an output pixel is valid when at least this fraction of its source pixels is

    def __post_init__(self) -> None:
        if self.format not in ("auto",) + RADAR_FORMATS:
            raise DataError(f"radar format must be one of {('auto',) + RADAR_FORMATS}, got {self.format!r}")
        if self.transform not in ("hko", "linear"):
            raise DataError(f"radar transform must be 'hko' or 'linear', got {self.transform!r}")
        for name in ("max_rate", "zr_a", "zr_b"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise DataError(f"radar {name} must be a finite number > 0, got {v!r}")
        if not (isinstance(self.nodata_rate, (int, float)) and math.isfinite(self.nodata_rate) and self.nodata_rate >= 0):
            raise DataError(f"radar nodata_rate must be a finite number >= 0 (mm/h), got {self.nodata_rate!r}")
        if self.region is not None:
            try:
                r = tuple(int(v) for v in self.region)
            except (TypeError, ValueError):
                r = ()
            if len(r) != 4 or not (0 <= r[0] < r[1] and 0 <= r[2] < r[3]):
                raise DataError(f"radar region must be (y0, y1, x0, x1) with 0 <= y0 < y1 and 0 <= x0 < x1, got {self.region!r}")
            object.__setattr__(self, "region", r)
        if self.cadence_minutes is not None and not (self.cadence_minutes > 0):
            raise DataError(f"radar cadence_minutes must be > 0 or None, got {self.cadence_minutes!r}")
        if not 0 < self.min_valid_fraction <= 1:
            raise DataError(f"radar min_valid_fraction must be in (0, 1], got {self.min_valid_fraction!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def rate_to_unit(rate: np.ndarray, config: RadarConfig) -> np.ndarray:
    """Rain rate (mm/h) -> [0, 1] by config.transform (clipped; R <= 0 -> 0)."""
    if config.transform == "hko":
        return rain_rate_to_hko_pixel(rate, config.zr_a, config.zr_b)
    return np.clip(np.asarray(rate, dtype=np.float64) / config.max_rate, 0.0, 1.0)


def unit_to_rate(unit: np.ndarray, config: RadarConfig) -> np.ndarray:
    """Inverse of `rate_to_unit` on (0, 1] (0 maps to the transform's floor: 0 mm/h for linear, R at -10 dBZ for hko)."""
    p = np.asarray(unit, dtype=np.float64)
    if config.transform == "hko":
        dbz = 70.0 * p - 10.0
        return 10.0 ** ((dbz - 10.0 * math.log10(config.zr_a)) / (10.0 * config.zr_b))
    return p * config.max_rate


# ----------------------------------------------------------------------------------------------------------- frame preparation
def _to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 -> (H, W, channels)."""
    import cv2

    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 4:  # alpha carries no scene content
        img = img[:, :, :3]
    if img.shape[2] not in (1, 3):
        raise DataError(f"frames must have 1, 3 or 4 channels, got {img.shape[2]}")
    if channels == 1 and img.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)[:, :, None]  # Rec. 601 luma
    if channels == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return img


def _fit(img: np.ndarray, size: tuple, allow_upscale: bool, what: str) -> np.ndarray:
    """Scale the shorter side to the target (keeping the aspect ratio) and centre-crop to size = (h, w); img (H, W, C)."""
    import cv2

    H, W = img.shape[:2]
    h, w = size
    scale = max(h / H, w / W)
    if scale > 1 and not allow_upscale:
        raise DataError(f"{what}: frames {H}x{W} are smaller than the crop {h}x{w}; pass a smaller size or allow_upscale=True")
    if scale != 1:
        new_h, new_w = max(h, round(H * scale)), max(w, round(W * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        c = img.shape[2]
        img = cv2.resize(np.ascontiguousarray(img), (new_w, new_h), interpolation=interp)
        if img.ndim == 2:
            img = img.reshape(new_h, new_w, c)
    y0 = (img.shape[0] - h) // 2
    x0 = (img.shape[1] - w) // 2
    return img[y0:y0 + h, x0:x0 + w]


def _prepare(img: np.ndarray, cfg: ClipConfig, what: str) -> np.ndarray:
    """(H, W[, C]) uint8 -> (C, h, w) uint8."""
    out = _fit(_to_channels(img, cfg.channels), cfg.size, cfg.allow_upscale, what)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


# ----------------------------------------------------------------------------------------------------------------- video
def _frames_av(path: Path) -> Iterator[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DataError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def _frames_ffmpeg(path: Path) -> Iterator[np.ndarray]:
    import imageio_ffmpeg

    # passthrough: every stored frame once, as PyAV gives them; ffmpeg's default constant-rate output would repeat
    # frames to fill the gaps of a variable-frame-rate video (10 stored frames came out as 51).
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    try:
        meta = next(gen)
        w, h = meta["size"]
        for buf in gen:
            yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
    finally:
        gen.close()


def _short_reason(exc: BaseException, limit: int = 200) -> str:
    """One short line from a decoder exception (imageio-ffmpeg appends ffmpeg's whole banner after '=== stderr ===')."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "=== stderr ===" in text:
        head, tail = text.split("=== stderr ===", 1)
        text = f"{head.strip()}: ...{tail.strip()[-120:]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_DECODED: ContextVar[list | None] = ContextVar("decoded_videos", default=None)


@contextmanager
def record_videos() -> Iterator[list[dict]]:
    """Collects {"path", "backend", "frames_decoded", "frames_kept"} for every video decoded inside the block (what
    `stmoe prepare` records in the dataset's source metadata)."""
    log: list[dict] = []
    token = _DECODED.set(log)
    try:
        yield log
    finally:
        _DECODED.reset(token)


def _read_video(path: Path, cfg: ClipConfig) -> np.ndarray:
    backends = {"av": [_frames_av], "ffmpeg": [_frames_ffmpeg], "auto": [_frames_av, _frames_ffmpeg]}[cfg.video_backend]
    reasons = []
    for reader in backends:
        frames = []
        decoded = 0
        gen = reader(path)
        try:
            for i, img in enumerate(gen):
                if cfg.max_frames is not None and i >= cfg.max_frames:
                    break
                decoded += 1
                if i % cfg.frame_step == 0:
                    frames.append(_prepare(img, cfg, str(path)))
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure falls through to the next backend, then to one DataError
            reasons.append(f"{reader.__name__.strip('_').replace('frames_', '')}: {_short_reason(exc)}")
            continue
        finally:
            gen.close()  # stopping early must still close the container / the ffmpeg subprocess
        if not frames:
            raise DataError(f"video {path} has no decodable frames")
        log = _DECODED.get()
        if log is not None:
            log.append({"path": str(path), "backend": "pyav" if reader is _frames_av else "imageio-ffmpeg",
                        "frames_decoded": decoded, "frames_kept": len(frames)})
        return np.stack(frames)
    raise DataError(f"cannot decode video {path} ({'; '.join(reasons)})")


# ---------------------------------------------------------------------------------------------------------------- frames
def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode.startswith("I") or img.mode == "F":
                return _deep_grey_to_u8(np.array(img), img.mode, path)
            if img.mode not in ("L", "RGB", "RGBA"):
                img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
            return np.array(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {' '.join(str(exc).split())}") from None


def _deep_grey_to_u8(a: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """A 16-bit (or 32-bit integer holding 16-bit values) grey image scaled to 8 bits; PIL's own conversion clips
    every value above 255 to white. Other deep images are refused: their range is unknown."""
    if a.dtype.kind in "iu" and a.size and int(a.min()) >= 0 and int(a.max()) <= 65535:
        return np.rint(a.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    raise DataError(f"cannot read image {path}: {mode} pixels outside 0..65535 (or floating point) have no known "
                    "range; save the frames as 8- or 16-bit PNG")


def _read_frame_files(files: Sequence[Path], cfg: ClipConfig, what: str) -> np.ndarray:
    files = list(files)[: cfg.max_frames] if cfg.max_frames is not None else list(files)
    frames, shape0 = [], None
    for path in files[:: cfg.frame_step]:
        img = _read_image(path)
        if shape0 is None:
            shape0 = img.shape[:2]
        elif img.shape[:2] != shape0:
            raise DataError(f"{what}: frame {path.name} is {img.shape[0]}x{img.shape[1]} but the first frame is {shape0[0]}x{shape0[1]}")
        frames.append(_prepare(img, cfg, what))
    return np.stack(frames)


def _image_files(folder: Path, exts=IMAGE_EXTS) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts), key=lambda p: natural_key(p.name))


# ---------------------------------------------------------------------------------------------------------------- arrays
def _guess_layout(shape: tuple) -> str | None:
    if len(shape) == 3:
        return "THW"
    if len(shape) == 4:
        if shape[3] in (1, 3, 4) and shape[2] > shape[3]:
            return "THWC"
        return None  # (T, N, H, W) or (N, T, H, W): only the writer knows
    if len(shape) == 5:
        if shape[2] in (1, 3):
            return "NTCHW"
        if shape[4] in (1, 3, 4):
            return "NTHWC"
    return None


def _recorded_layout(path: Path, shape: tuple) -> str | None:
    """The layout in the sidecar PATH.json (written by `physvid export`), checked against the array's shape."""
    side = path.with_name(path.name + ".json")
    if not side.is_file():
        return None
    try:
        doc = json.loads(side.read_text())
        layout, recorded = doc["layout"], tuple(doc["shape"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"cannot read the layout sidecar {side}: expected JSON with 'layout' and 'shape'; fix or remove "
                        "it") from None
    if layout not in LAYOUTS[1:] or recorded != tuple(shape):
        raise DataError(f"{side} says layout {layout!r} and shape {list(recorded)}, but {path.name} is {list(shape)}; "
                        "remove the stale sidecar or pass layout")
    return layout


def _load_array(path: Path, cfg: ClipConfig) -> list[np.ndarray]:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                key = cfg.array_key
                if key is None:
                    if len(keys) != 1:
                        raise DataError(f"{path} holds arrays {keys}; pass array_key to choose one")
                    key = keys[0]
                elif key not in keys:
                    raise DataError(f"array_key {key!r} is not in {path}; it holds {keys}")
                arr = z[key]
        else:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read array file {path}: {' '.join(str(exc).split())}") from None

    layout = cfg.layout if cfg.layout != "auto" else _recorded_layout(path, arr.shape) or _guess_layout(arr.shape)
    ndims = {"NTHW": 4, "NTCHW": 5, "NTHWC": 5, "TNHW": 4, "TNHWC": 5, "THW": 3, "THWC": 4}
    if layout is None and arr.ndim == 4:
        raise DataError(f"{path}: a 4-D array of shape {arr.shape} may be (T, N, H, W) or (N, T, H, W); pass layout "
                        "(--layout TNHW or NTHW)")
    if layout is None or arr.ndim != ndims[layout]:
        raise DataError(
            f"{path}: array of shape {arr.shape} does not fit layout {layout or cfg.layout!r}; pass layout= one of {LAYOUTS[1:]}"
        )
    view = {
        "NTHW": lambda a: a[:, :, None],
        "NTCHW": lambda a: a,
        "NTHWC": lambda a: a.transpose(0, 1, 4, 2, 3),
        "TNHW": lambda a: a.transpose(1, 0, 2, 3)[:, :, None],
        "TNHWC": lambda a: a.transpose(1, 0, 4, 2, 3),
        "THW": lambda a: a[None, :, None],
        "THWC": lambda a: a.transpose(0, 3, 1, 2)[None],
    }[layout](arr)  # (N, T, C, H, W), still a view of the (memory-mapped) file
    if view.shape[2] not in (1, 3, 4):
        raise DataError(f"{path}: layout {layout} gives {view.shape[2]} channels; expected 1, 3 or 4 (pass layout=)")

    kind = arr.dtype.kind
    if kind == "f":
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0 + 1e-6):
            raise DataError(f"{path}: float arrays must hold values in [0, 1], got [{lo:g}, {hi:g}]; rescale or save as uint8")
    elif kind in "iu" and arr.dtype != np.uint8:
        lo, hi = int(np.min(arr)), int(np.max(arr))
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: integer arrays must hold values in [0, 255], got [{lo}, {hi}]")
    elif kind not in "ub":
        raise DataError(f"{path}: unsupported array dtype {arr.dtype}; use uint8, integers in [0, 255] or floats in [0, 1]")

    def to_u8(a: np.ndarray) -> np.ndarray:
        if a.dtype == np.uint8:
            return np.asarray(a)
        if a.dtype.kind == "b":
            return a.astype(np.uint8) * 255
        if a.dtype.kind == "f":
            return np.clip(np.rint(np.asarray(a, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        return a.astype(np.uint8)

    T = view.shape[1] if cfg.max_frames is None else min(view.shape[1], cfg.max_frames)
    sequences = []
    for n in range(view.shape[0]):
        seq = to_u8(view[n, :T:cfg.frame_step])  # (T', C, H, W)
        if seq.shape[1] in (1, 3) and seq.shape[1] == cfg.channels and tuple(seq.shape[2:]) == cfg.size:
            sequences.append(np.ascontiguousarray(seq))  # already in the target form: skip the per-frame path
        else:
            sequences.append(np.stack([_prepare(f.transpose(1, 2, 0), cfg, str(path)) for f in seq]))
    return sequences


# ----------------------------------------------------------------------------------------------------------------- radar
@dataclass(frozen=True)
class RadarSequence:
    frames: np.ndarray  # (T, 1, H, W) uint8, rate_to_unit(R) * 255 rounded
    valid: np.ndarray  # (T, 1, H, W) bool, False where the product had no data
    files: tuple  # the files used, in time order
    period_minutes: float  # native time step of the product (accumulation period)
    frame_step: int  # step actually used


def _radar_files(source) -> list[Path]:
    if isinstance(source, (list, tuple)):
        files = [Path(p) for p in source]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DataError(f"radar file {missing[0]} does not exist")
    else:
        text = str(source)
        if any(ch in text for ch in "*?["):
            files = [Path(p) for p in _glob.glob(text, recursive=True) if Path(p).is_file()]
        else:
            path = Path(source)
            if not path.exists():
                raise DataError(f"radar source {path} does not exist")
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and radar_format_of(p)]
    if not files:
        raise DataError(f"no radar files (.nc, .pgm[.gz], .gif, .h5) found in {source}")
    return sorted(files, key=lambda p: (natural_key(p.name), str(p)))


def load_radar(
    source,
    *,
    radar: RadarConfig | None = None,
    frame_step: int = 1,
    size: int | tuple = 64,
    allow_upscale: bool = False,
    max_frames: int | None = None,
) -> RadarSequence:
    """Radar files (folder searched recursively, glob, list or one file) -> one time-ordered sequence (paper §4.4).

    Each frame: decode to rain rate (mm/h) -> no data set to radar.nodata_rate -> crop radar.region -> shorter side scaled to `size`
    (INTER_AREA, i.e. mean rain rate over the merged pixels) and centre-cropped -> rate_to_unit -> uint8 = round(255 p).
    """
    rcfg = radar if radar is not None else RadarConfig()
    cfg = ClipConfig(frame_step=frame_step, size=size, allow_upscale=allow_upscale, max_frames=max_frames)
    files = _radar_files(source)
    formats = {radar_format_of(p) for p in files} if rcfg.format == "auto" else {rcfg.format}
    if len(formats) != 1 or None in formats:
        raise DataError(f"radar files in {source} mix formats {sorted(str(f) for f in formats)}; pass one product at a time")
    fmt = formats.pop()
    if cfg.max_frames is not None:
        files = files[: cfg.max_frames]
    first = read_radar_frame(files[0], fmt)
    step = cfg.frame_step
    if rcfg.cadence_minutes is not None:
        if frame_step != 1:
            raise DataError("pass either frame_step or radar.cadence_minutes, not both")
        ratio = rcfg.cadence_minutes / first.period_minutes
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise DataError(
                f"radar cadence_minutes {rcfg.cadence_minutes:g} is not a multiple of the product's {first.period_minutes:g}-minute step"
            )
        step = int(round(ratio))
    used = files[::step]
    frames, valids = [], []
    for i, path in enumerate(used):
        fr = first if i == 0 else read_radar_frame(path, fmt)
        if fr.rate.shape != first.rate.shape:
            raise DataError(f"radar frame {path.name} is {fr.rate.shape} but the first frame is {first.rate.shape}")
        rate = np.where(fr.valid, fr.rate, np.float32(rcfg.nodata_rate)).astype(np.float32)
        valid = fr.valid.astype(np.float32)
        if rcfg.region is not None:
            y0, y1, x0, x1 = rcfg.region
            if y1 > rate.shape[0] or x1 > rate.shape[1]:
                raise DataError(f"radar region {rcfg.region} lies outside the {rate.shape[0]}x{rate.shape[1]} composite of {path.name}")
            rate, valid = rate[y0:y1, x0:x1], valid[y0:y1, x0:x1]
        rate = _fit(rate[:, :, None], cfg.size, cfg.allow_upscale, f"radar {path.name}")[:, :, 0]
        valid = _fit(valid[:, :, None], cfg.size, cfg.allow_upscale, f"radar {path.name}")[:, :, 0]
        unit = rate_to_unit(rate, rcfg)
        frames.append(np.rint(unit * 255.0).astype(np.uint8)[None])
        valids.append((valid >= rcfg.min_valid_fraction - 1e-6)[None])
    return RadarSequence(np.stack(frames), np.stack(valids), tuple(used), first.period_minutes, step)


# -------------------------------------------------------------------------------------------------------------- dispatch
def _classify(path: Path) -> str:
    suffix = path.suffix.lower()
    if path.is_dir():
        entries = [p for p in path.iterdir()]
        files = [p for p in entries if p.is_file()]
        if any(p.suffix.lower() in IMAGE_EXTS for p in files):
            return "frames"
        if any(p.suffix.lower() in VIDEO_EXTS for p in files):
            return "video"
        if any(radar_format_of(p) for p in files):
            return "radar"
        if any(d.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in d.iterdir()) for d in entries):
            return "frames"
        if any(radar_format_of(p) for p in path.rglob("*") if p.is_file()):
            return "radar"
        raise DataError(f"no video, image, array or radar files found in {path}; pass kind= one of {KINDS[1:]}")
    if suffix in VIDEO_EXTS:
        return "video"
    if suffix in ARRAY_EXTS:
        return "array"
    if suffix in IMAGE_EXTS:
        return "frames"
    if radar_format_of(path):
        return "radar"
    raise DataError(f"unknown format of {path} (suffix {suffix or 'none'!r}); pass kind= one of {KINDS[1:]}")


def load_sequences(source, config: ClipConfig | None = None, kind: str = "auto", radar: RadarConfig | None = None) -> list[np.ndarray]:
    """Source -> list of prepared sequences (T_i, C, H, W) uint8 (frame_step, colour, resize and crop applied; no windowing)."""
    cfg = config if config is not None else ClipConfig()
    if kind not in KINDS:
        raise DataError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(source, (str, Path)) and any(ch in str(source) for ch in "*?["):
        pattern = str(source)
        matches = sorted(_glob.glob(pattern, recursive=True), key=lambda p: (natural_key(Path(p).name), p))
        source = [p for p in matches if Path(p).is_file()]
        if not source:
            raise DataError(f"no files match the pattern {pattern!r}")
    if kind == "radar":
        pass
    elif isinstance(source, (list, tuple)):
        if not source:
            raise DataError("source is an empty list")
        paths = [Path(p) for p in source]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise DataError(f"source {missing[0]} does not exist")
        kinds = {_classify(p) if kind == "auto" else kind for p in paths}
        if len(kinds) != 1:
            raise DataError(f"the listed sources mix kinds {sorted(kinds)}; load them separately")
        k = kinds.pop()
        if k == "radar":
            kind = "radar"
        elif k == "frames" and all(p.is_file() for p in paths):
            return [_read_frame_files(paths, cfg, "listed frames")]
        else:
            return [seq for p in paths for seq in load_sequences(p, cfg, k, radar)]
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"source {path} does not exist")
        if kind == "auto":
            kind = _classify(path)

    if kind == "radar":
        rcfg = radar if radar is not None else RadarConfig()
        seq = load_radar(source, radar=rcfg, frame_step=cfg.frame_step, size=cfg.size, allow_upscale=cfg.allow_upscale,
                         max_frames=cfg.max_frames)
        frames = seq.frames if cfg.channels == 1 else np.repeat(seq.frames, 3, axis=1)
        return [frames]
    if kind == "video":
        if path.is_dir():
            videos = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS), key=lambda p: natural_key(p.name))
            if not videos:
                raise DataError(f"no video files ({', '.join(sorted(VIDEO_EXTS))}) in {path}")
            return [_read_video(p, cfg) for p in videos]
        return [_read_video(path, cfg)]
    if kind == "frames":
        if path.is_file():
            return [_read_frame_files([path], cfg, str(path))]
        exts = IMAGE_EXTS | {".gif"}
        files = _image_files(path, exts)
        if files:
            return [_read_frame_files(files, cfg, str(path))]
        subdirs = sorted((d for d in path.iterdir() if d.is_dir()), key=lambda d: natural_key(d.name))
        seqs = [_read_frame_files(f, cfg, str(d)) for d in subdirs if (f := _image_files(d, exts))]
        if not seqs:
            raise DataError(f"no image files ({', '.join(sorted(exts))}) in {path} or its sub-folders")
        return seqs
    # array
    if path.is_dir() or path.suffix.lower() not in ARRAY_EXTS:
        raise DataError(f"array source must be a .npy or .npz file, got {path}")
    return _load_array(path, cfg)


def make_clips(sequences: Sequence[np.ndarray], clip_length: int | None, stride: int = 1, what: str = "source",
               frame_step: int = 1) -> np.ndarray:
    """Sliding windows: every sequence (T_i, C, H, W) -> clips starting at 0, stride, 2 stride, ... -> (N, clip_length, C, H, W).

    Sequences shorter than clip_length are skipped with a warning; if none is long enough a DataError is raised.
    clip_length None stacks whole sequences (they must all have the same length).
    """
    _positive_int(clip_length, "clip_length", allow_none=True)
    _positive_int(stride, "stride")
    if not sequences:
        raise DataError(f"{what} holds no sequences")
    if clip_length is None:
        lengths = {s.shape[0] for s in sequences}
        if len(lengths) != 1:
            raise DataError(f"{what} holds sequences of lengths {sorted(lengths)}; pass clip_length to cut equal clips")
        return np.ascontiguousarray(np.stack(sequences))
    clips, short = [], 0
    for s in sequences:
        if s.shape[0] < clip_length:
            short += 1
            continue
        starts = range(0, s.shape[0] - clip_length + 1, stride)
        clips.extend(s[i:i + clip_length] for i in starts)
    if not clips:
        longest = max(s.shape[0] for s in sequences)
        raise DataError(
            f"clip_length {clip_length} is longer than the {longest} frames of {what} (after frame_step {frame_step}); "
            "pass a shorter clip_length or a smaller frame_step"
        )
    if short:
        warnings.warn(f"{short} of {len(sequences)} sequences of {what} are shorter than clip_length {clip_length} and were skipped",
                      stacklevel=2)
    return np.ascontiguousarray(np.stack(clips))


def load_clips(
    source,
    *,
    clip_length: int | None,
    stride: int = 1,
    frame_step: int = 1,
    size: int | tuple = 64,
    channels: int = 1,
    kind: str = "auto",
    layout: str = "auto",
    array_key: str | None = None,
    allow_upscale: bool = False,
    video_backend: str = "auto",
    max_frames: int | None = None,
    radar: RadarConfig | None = None,
) -> np.ndarray:
    """Real data -> clips (N, clip_length, C, H, W) uint8 for training/evaluation (paper §4). See the module docstring."""
    cfg = ClipConfig(clip_length=clip_length, stride=stride, frame_step=frame_step, size=size, channels=channels,
                     layout=layout, array_key=array_key, allow_upscale=allow_upscale, video_backend=video_backend,
                     max_frames=max_frames)
    return load_clips_from_config(source, cfg, kind=kind, radar=radar)


def load_clips_from_config(source, config: ClipConfig, kind: str = "auto", radar: RadarConfig | None = None) -> np.ndarray:
    """`load_clips` with a ClipConfig (the form the CLI builds and saves into the dataset metadata)."""
    sequences = load_sequences(source, config, kind=kind, radar=radar)
    what = str(source) if not isinstance(source, (list, tuple)) else f"{len(source)} listed sources"
    return make_clips(sequences, config.clip_length, config.stride, what, config.frame_step)
