"""Reader for MNIST idx3 image files (raw or gzipped), e.g. ../shared/data/mnist/t10k-images-idx3-ubyte.gz."""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

from .errors import DigitsError

IDX3_MAGIC = 0x00000803  # unsigned byte, 3 dimensions


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Return the images as uint8 (N, rows, cols); raise DigitsError with a one-line reason if the file is unusable."""
    p = Path(path)
    if not p.is_file():
        raise DigitsError(f"digits file not found: {p} (give --digits PATH to an MNIST idx3 images file, e.g. "
                          "t10k-images-idx3-ubyte.gz)")
    try:
        with open(p, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(p, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DigitsError(f"digits file {p} is corrupt or unreadable ({exc.__class__.__name__}: {exc})") from None
    if len(data) < 16:
        raise DigitsError(f"digits file {p} is too short to be an idx3 file ({len(data)} bytes)")
    magic, n, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in range(0, 16, 4))
    if magic != IDX3_MAGIC:
        raise DigitsError(f"digits file {p} is not an idx3 images file (magic 0x{magic:08x}, expected 0x00000803); "
                          "did you pass the labels file?")
    if n == 0 or rows == 0 or cols == 0 or len(data) != 16 + n * rows * cols:
        raise DigitsError(f"digits file {p} is truncated or corrupt: header says {n}x{rows}x{cols} images, "
                          f"file holds {len(data) - 16} pixel bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int, size: int) -> np.ndarray:
    return (read_idx_images(path).astype(np.float32) / 255.0)


def load_digits(path: str | os.PathLike) -> np.ndarray:
    """Digits as float32 (N, rows, cols) in [0, 1], cached per process (keyed by path, mtime and size)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        read_idx_images(p)  # raises the one-line DigitsError
        raise
    return _load(str(p), st.st_mtime_ns, st.st_size)


def digit_images(path: str | os.PathLike, digit_range: tuple[int, int] | None = None) -> np.ndarray:
    """The digits a config draws from: ``load_digits(path)[first:stop]`` (a view), checked against the file's count."""
    digits = load_digits(path)
    if digit_range is None:
        return digits
    first, stop = (int(v) for v in digit_range)
    if stop > len(digits):
        raise DigitsError(f"shape.digit_range {first}:{stop} exceeds the {len(digits)} images of {path}; "
                          f"allowed: FIRST:STOP with STOP <= {len(digits)}")
    return digits[first:stop]
