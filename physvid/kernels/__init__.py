"""Numba kernels (each with a slow twin in physvid/reference.py).

Every kernel is `@njit(cache=True, no_cfunc_wrapper=True)`: nothing takes a kernel's C-callable address, and skipping
that wrapper saves ≈ 0.6 s of a first run's compile (one per compiled function).

Numba re-validates a cached function only against the file that defines it, while `pipeline.render_batch` compiles in
kernels from the other files of this folder. So, on import, the caches of this folder are dropped whenever any of its
sources changed (an edit, a `git pull` into an editable install): a stale cache would otherwise keep running old code
without a word.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

STAMP = "physvid-kernels.stamp"


def refresh_caches(folder: Path) -> bool:
    """Delete numba's cache files (*.nbi, *.nbc) in folder/__pycache__ when the sources' (name, mtime, size) changed
    since the last call; returns whether it deleted. A read-only install is left alone (numba then caches nothing)."""
    stats = [(p.name, p.stat()) for p in sorted(folder.glob("*.py"))]
    stamp = hashlib.sha256(";".join(f"{n}:{s.st_mtime_ns}:{s.st_size}" for n, s in stats).encode()).hexdigest()
    cache = folder / "__pycache__"
    try:
        if (cache / STAMP).read_text() == stamp:
            return False
    except OSError:
        pass
    try:
        for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            f.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        (cache / STAMP).write_text(stamp)
    except OSError:
        return False
    return True


refresh_caches(Path(__file__).resolve().parent)
