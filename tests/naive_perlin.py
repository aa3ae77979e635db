"""Slow, obviously correct twins of physvid.kernels.perlin's grid kernels: plain loops over the `noise` package (the reference C code)."""
from __future__ import annotations

import numpy as np


def naive_perlin_volume(depth, height, width, frequency, time_frequency, octaves, persistence, lacunarity, base,
                        period_x, period_y, period_z):
    import noise

    out = np.empty((depth, height, width), dtype=np.float32)
    for z in range(depth):
        for y in range(height):
            for x in range(width):
                out[z, y, x] = noise.pnoise3(x * frequency, y * frequency, z * time_frequency, octaves, persistence,
                                             lacunarity, period_x, period_y, period_z, base)
    return out


def naive_perlin_plane(height, width, frequency, octaves, persistence, lacunarity, base, offset_x, offset_y):
    import noise

    out = np.empty((height, width), dtype=np.float32)
    for y in range(height):
        for x in range(width):
            out[y, x] = noise.pnoise2(offset_x + x * frequency, offset_y + y * frequency, octaves, persistence,
                                      lacunarity, 1024, 1024, base)
    return out
