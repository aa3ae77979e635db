"""Refusing the impossible before anything is allocated: sane limits on a run's size and an estimate of the memory a
`generate` run needs, compared with what the machine has (exit code 2 with one line, never an allocation failure).

The estimate is an upper bound of the large buffers, per worker process: the shard image built in memory (HDF5 core
file, then one copy to write it), one render batch (float32 clean frames, noise, owners, masks), the intensity sprites
(an object's side plus room for its kernel to spread over every frame), the Perlin noise bank and the rendered batches
held before they are written (shard.AHEAD_BYTES).
"""
from __future__ import annotations

import math
import os

from ..config import RenderConfig
from ..errors import ConfigError

MAX_SEQUENCES = 10**9
MAX_SHARDS = 100_000  # files per dataset folder
PARAM_BYTES_PER_OBJECT = 26 * 4 + 5 * 8 + 12 * 2 * 4  # float and int per-object fields, polygon vertices


def check_size(n: int, shard_size: int) -> None:
    """n and shard_size are integers >= 1 (checked by the caller); refuse runs no folder can hold."""
    if n > MAX_SEQUENCES:
        raise ConfigError(f"n must be <= {MAX_SEQUENCES:,} sequences, got {n:,}")
    if shard_size > MAX_SEQUENCES:
        raise ConfigError(f"shard_size must be <= {MAX_SEQUENCES:,} sequences, got {shard_size:,}")
    shards = math.ceil(n / shard_size)
    if shards > MAX_SHARDS:
        raise ConfigError(f"{n:,} sequences in shards of {shard_size:,} make {shards:,} files; at most {MAX_SHARDS:,} "
                          f"per dataset: raise --shard-size to at least {math.ceil(n / MAX_SHARDS):,}")


def machine_memory() -> int:
    """Physical memory in bytes (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


def memory_per_worker(config: RenderConfig, shard_size: int, batch: int) -> int:
    """Upper bound of the bytes one worker holds while writing a shard of `shard_size` sequences of `config`."""
    from ..render import bank_shape
    from .shard import AHEAD_BYTES

    t, c, h, w = config.frames, config.channels, config.height, config.width
    objects = config.max_objects
    pixels = t * h * w
    stored = pixels * c + objects * PARAM_BYTES_PER_OBJECT + 64
    stored += pixels * objects if config.masks else 0
    stored += pixels if config.property_maps else 0
    stored += t * objects * (6 * 8 + 4)  # state_* (float64) and wall_events (int8 x 4) per frame and object
    # --flow: two float32 (u, v) fields and five uint8 masks per frame pair
    stored += (t - 1) * h * w * (2 * 2 * 4 + 5) if config.flow else 0
    shard = 2 * shard_size * stored  # the in-memory HDF5 image and the copy written out
    per_sequence = pixels * c * 4 * 3 + pixels * (2 + 4) + stored  # clean, noise, mixed floats; owner, vmax
    it = config.intensity
    margin = (it.kernel_size // 2) * t if it.kernel != "delta" else 0
    side = int(math.ceil(config.shape.size[1])) + 3 + 2 * margin
    sprites = objects * side * side * 4 * (2 + (t if config.flow else 0))  # + each frame's sprites for the flow
    bank = 4 * math.prod(bank_shape(config)) if config.noise.perlin > 0 else 0
    held = min(AHEAD_BYTES + batch * stored, shard_size * stored)  # batches rendered ahead of writing (shard.py)
    return shard + batch * (per_sequence + sprites) + bank + held


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} PB"  # pragma: no cover


def check_memory(config: RenderConfig, shard_size: int, workers: int, batch: int, shards: int) -> None:
    """Refuse (ConfigError) a run whose workers would need more than 80 % of the machine's memory."""
    total = machine_memory()
    if total <= 0:
        return
    procs = max(1, min(workers, shards))
    each = memory_per_worker(config, shard_size, batch)
    if procs * each > 0.8 * total:
        fits = max(1, int(0.8 * total // each))
        hint = (f"use --workers {fits}" if fits < procs and each <= 0.8 * total else
                "lower --shard-size, the frame size or --frames")
        raise ConfigError(f"this run needs about {human(procs * each)} of memory ({procs} worker(s) x "
                          f"{human(each)}: shards of {shard_size:,} sequences are built in memory); this machine has "
                          f"{human(total)}: {hint}")
