"""Perlin "improved" noise (Perlin 2002) as numba kernels, matching the `noise` package (caseman/noise 1.2.2).

The paper adds Perlin noise (its ref. [14]) to the synthetic training sequences of the experts
(§3.2 "Local optimization", ablation in §4.5 "Adding Noise to Synthetic Image Sequences").
The generator builds one `perlin_volume` per process (a "noise bank") and every sequence samples a
moving window from it, so the volume kernel is the only hot path here.

All arithmetic is float32 in the same operation order as the C code (no fused multiply-add, no
fastmath), so values agree with `noise.pnoise2`/`noise.pnoise3` bit for bit in practice and with the
golden C build (../shared/reference/pnoise2_golden.csv) to 1e-6. See docs/perlin.md.

Kernels validate nothing (numba has no readable errors); configs call `check_perlin_params` first.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from physvid.errors import ConfigError

__all__ = [
    "PERM",
    "GRAD3",
    "noise2",
    "noise3",
    "pnoise2",
    "pnoise3",
    "perlin_volume",
    "perlin_plane",
    "check_perlin_params",
    "MAX_OCTAVES",
    "DEFAULT_REPEAT",
    "MAX_FREQUENCY_GAIN",
]

# Ken Perlin's reference permutation of 0..255.
_PERLIN_PERMUTATION = (
    151, 160, 137, 91, 90, 15, 131, 13, 201, 95, 96, 53, 194, 233, 7, 225,
    140, 36, 103, 30, 69, 142, 8, 99, 37, 240, 21, 10, 23, 190, 6, 148,
    247, 120, 234, 75, 0, 26, 197, 62, 94, 252, 219, 203, 117, 35, 11, 32,
    57, 177, 33, 88, 237, 149, 56, 87, 174, 20, 125, 136, 171, 168, 68, 175,
    74, 165, 71, 134, 139, 48, 27, 166, 77, 146, 158, 231, 83, 111, 229, 122,
    60, 211, 133, 230, 220, 105, 92, 41, 55, 46, 245, 40, 244, 102, 143, 54,
    65, 25, 63, 161, 1, 216, 80, 73, 209, 76, 132, 187, 208, 89, 18, 169,
    200, 196, 135, 130, 116, 188, 159, 86, 164, 100, 109, 198, 173, 186, 3, 64,
    52, 217, 226, 250, 124, 123, 5, 202, 38, 147, 118, 126, 255, 82, 85, 212,
    207, 206, 59, 227, 47, 16, 58, 17, 182, 189, 28, 42, 223, 183, 170, 213,
    119, 248, 152, 2, 44, 154, 163, 70, 221, 153, 101, 155, 167, 43, 172, 9,
    129, 22, 39, 253, 19, 98, 108, 110, 79, 113, 224, 232, 178, 185, 112, 104,
    218, 246, 97, 228, 251, 34, 242, 193, 238, 210, 144, 12, 191, 179, 162, 241,
    81, 51, 145, 235, 249, 14, 239, 107, 49, 192, 214, 31, 181, 199, 106, 157,
    184, 84, 204, 176, 115, 121, 50, 45, 127, 4, 150, 254, 138, 236, 205, 93,
    222, 114, 67, 29, 24, 72, 243, 141, 128, 195, 78, 66, 215, 61, 156, 180,
)

# Stored twice so the nested lookups PERM[PERM[i] + j] (+ base) never need a wrap; index <= 511 for base <= 1.
PERM = np.array(_PERLIN_PERMUTATION + _PERLIN_PERMUTATION, dtype=np.int64)
PERM.setflags(write=False)

# The 12 cube-edge directions plus 4 repeats that pad the table to 16 (hash & 15);
# 2D noise uses the first two components only, exactly as `noise` does.
GRAD3 = np.array(
    [
        [1, 1, 0], [-1, 1, 0], [1, -1, 0], [-1, -1, 0],
        [1, 0, 1], [-1, 0, 1], [1, 0, -1], [-1, 0, -1],
        [0, 1, 1], [0, -1, 1], [0, 1, -1], [0, -1, -1],
        [1, 0, -1], [-1, 0, -1], [0, -1, 1], [0, 1, 1],
    ],
    dtype=np.float32,
)
GRAD3.setflags(write=False)

MAX_OCTAVES = 16
DEFAULT_REPEAT = 1024  # `noise`'s default tile; a multiple of 256, so it never changes the 256-cell period
# Past this frequency multiplier a float32 coordinate has no fractional part left (noise is 0 there)
# and lacunarity**octaves soon overflows to inf, which would turn every value into NaN.
MAX_FREQUENCY_GAIN = float(2**24)

# float32 literals: a Python int/float literal would silently promote numba's arithmetic to float64.
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F6 = np.float32(6.0)
_F10 = np.float32(10.0)
_F15 = np.float32(15.0)


@njit(cache=True, no_cfunc_wrapper=True)
def _fade(t):
    # 6t^5 - 15t^4 + 10t^3, in the C code's order of float32 operations
    return t * t * t * (t * (t * _F6 - _F15) + _F10)


@njit(cache=True, no_cfunc_wrapper=True)
def _lerp(t, a, b):
    return a + t * (b - a)


@njit(cache=True, no_cfunc_wrapper=True)
def _cells(v, repeat, base):
    """Lattice indices (i, i+1) of float32 `v`: wrapped by `repeat` (float32), masked to 0..255, offset by `base`."""
    i = int(np.floor(np.fmod(v, repeat)))
    # fmod of the int i+1 (not of v+1) is what makes the tile seamless in `noise`
    ii = int(np.fmod(np.float32(i + 1), repeat))
    return (i & 255) + base, (ii & 255) + base


@njit(cache=True, no_cfunc_wrapper=True)
def _grad2(h, x, y):
    g = h & 15
    return x * GRAD3[g, 0] + y * GRAD3[g, 1]


@njit(cache=True, no_cfunc_wrapper=True)
def _grad3(h, x, y, z):
    g = h & 15
    return x * GRAD3[g, 0] + y * GRAD3[g, 1] + z * GRAD3[g, 2]


@njit(cache=True, no_cfunc_wrapper=True)
def noise2(x, y, repeatx, repeaty, base):
    """Single-octave 2D improved Perlin noise at (x, y), float32, as `noise._perlin` noise2.

    repeatx/repeaty are float tile lengths (cells); base (0 or 1) shifts the permutation lookups.
    Integer lattice points give exactly 0; values lie in about [-1, 1].
    """
    xf = np.float32(x)
    yf = np.float32(y)
    i, ii = _cells(xf, np.float32(repeatx), base)
    j, jj = _cells(yf, np.float32(repeaty), base)
    # the fraction comes from the unwrapped coordinate, so repeats do not shift the in-cell position
    xf = xf - np.floor(xf)
    yf = yf - np.floor(yf)
    fx = _fade(xf)
    fy = _fade(yf)
    a = PERM[i]
    aa = PERM[a + j]
    ab = PERM[a + jj]
    b = PERM[ii]
    ba = PERM[b + j]
    bb = PERM[b + jj]
    xm = xf - _F1
    ym = yf - _F1
    return _lerp(
        fy,
        _lerp(fx, _grad2(PERM[aa], xf, yf), _grad2(PERM[ba], xm, yf)),
        _lerp(fx, _grad2(PERM[ab], xf, ym), _grad2(PERM[bb], xm, ym)),
    )


@njit(cache=True, no_cfunc_wrapper=True)
def _noise3_at(i, ii, j, jj, k, kk, xf, yf, zf, fx, fy, fz):
    """noise3 from precomputed lattice indices, in-cell fractions and their fades (shared by noise3 and perlin_volume)."""
    a = PERM[i]
    aa = PERM[a + j]
    ab = PERM[a + jj]
    b = PERM[ii]
    ba = PERM[b + j]
    bb = PERM[b + jj]
    xm = xf - _F1
    ym = yf - _F1
    zm = zf - _F1
    near = _lerp(
        fy,
        _lerp(fx, _grad3(PERM[aa + k], xf, yf, zf), _grad3(PERM[ba + k], xm, yf, zf)),
        _lerp(fx, _grad3(PERM[ab + k], xf, ym, zf), _grad3(PERM[bb + k], xm, ym, zf)),
    )
    far = _lerp(
        fy,
        _lerp(fx, _grad3(PERM[aa + kk], xf, yf, zm), _grad3(PERM[ba + kk], xm, yf, zm)),
        _lerp(fx, _grad3(PERM[ab + kk], xf, ym, zm), _grad3(PERM[bb + kk], xm, ym, zm)),
    )
    return _lerp(fz, near, far)


@njit(cache=True, no_cfunc_wrapper=True)
def noise3(x, y, z, repeatx, repeaty, repeatz, base):
    """Single-octave 3D improved Perlin noise at (x, y, z), float32, as `noise._perlin` noise3.

    repeatx/repeaty/repeatz are integer tile lengths (cells), as in `noise`; base (0 or 1) shifts the lookups.
    """
    xf = np.float32(x)
    yf = np.float32(y)
    zf = np.float32(z)
    i, ii = _cells(xf, np.float32(repeatx), base)
    j, jj = _cells(yf, np.float32(repeaty), base)
    k, kk = _cells(zf, np.float32(repeatz), base)
    xf = xf - np.floor(xf)
    yf = yf - np.floor(yf)
    zf = zf - np.floor(zf)
    return _noise3_at(i, ii, j, jj, k, kk, xf, yf, zf, _fade(xf), _fade(yf), _fade(zf))


@njit(cache=True, no_cfunc_wrapper=True)
def pnoise2(x, y, octaves, persistence, lacunarity, repeatx, repeaty, base):
    """Fractal (fBm) 2D Perlin noise, same semantics and float32 rounding as `noise.pnoise2`.

    Octave o samples noise2 at (x, y)·f with tile repeat·f, f = lacunarity**o, weight persistence**o;
    the sum is divided by the sum of the weights. repeatx/repeaty are floats (as in `noise`).
    """
    xf = np.float32(x)
    yf = np.float32(y)
    rx = np.float32(repeatx)
    ry = np.float32(repeaty)
    pers = np.float32(persistence)
    lac = np.float32(lacunarity)
    freq = _F1
    amp = _F1
    total = _F0
    amp_sum = _F0
    for _ in range(octaves):
        total += noise2(xf * freq, yf * freq, rx * freq, ry * freq, base) * amp
        amp_sum += amp
        freq *= lac
        amp *= pers
    return total / amp_sum


@njit(cache=True, no_cfunc_wrapper=True)
def pnoise3(x, y, z, octaves, persistence, lacunarity, repeatx, repeaty, repeatz, base):
    """Fractal (fBm) 3D Perlin noise, same semantics and float32 rounding as `noise.pnoise3`.

    Like pnoise2, but the integer repeats are scaled per octave and truncated to int (int(repeat·f)),
    as the C code does.
    """
    xf = np.float32(x)
    yf = np.float32(y)
    zf = np.float32(z)
    rx = np.float32(repeatx)
    ry = np.float32(repeaty)
    rz = np.float32(repeatz)
    pers = np.float32(persistence)
    lac = np.float32(lacunarity)
    freq = _F1
    amp = _F1
    total = _F0
    amp_sum = _F0
    for _ in range(octaves):
        total += noise3(
            xf * freq, yf * freq, zf * freq, int(rx * freq), int(ry * freq), int(rz * freq), base
        ) * amp
        amp_sum += amp
        freq *= lac
        amp *= pers
    return total / amp_sum


@njit(cache=True, no_cfunc_wrapper=True)
def _axis_table(num, step, octaves, lacunarity, repeat, base):
    """Per-octave lattice data of the coordinates t·step, t = 0..num-1, along one axis, as pnoise3 computes them.

    Noise3 is separable up to the hash, so the fmod/floor/fade work is done once per axis and octave
    instead of once per voxel; the float32 operations are the same, so results stay bit-identical to pnoise3.
    Returns (lo, hi, frac, fade), each of shape (octaves, num).
    """
    lo = np.empty((octaves, num), dtype=np.int64)
    hi = np.empty((octaves, num), dtype=np.int64)
    frac = np.empty((octaves, num), dtype=np.float32)
    fade = np.empty((octaves, num), dtype=np.float32)
    lac = np.float32(lacunarity)
    rep = np.float32(repeat)
    freq = _F1
    for o in range(octaves):
        rep_o = np.float32(int(rep * freq))  # pnoise3 truncates the scaled repeat to int
        for t in range(num):
            v = np.float32(t * step) * freq
            lo[o, t], hi[o, t] = _cells(v, rep_o, base)
            f = v - np.floor(v)
            frac[o, t] = f
            fade[o, t] = _fade(f)
        freq *= lac
    return lo, hi, frac, fade


@njit(cache=True, no_cfunc_wrapper=True, parallel=True)
def perlin_volume(depth, height, width, frequency, time_frequency, octaves, persistence, lacunarity, base,
                  period_x, period_y, period_z):
    """Noise bank of shape (depth, height, width), float32: out[z, y, x] = pnoise3(x·frequency, y·frequency,
    z·time_frequency, octaves, persistence, lacunarity, period_x, period_y, period_z, base).

    Coordinates are formed in float64 and rounded to float32, exactly as a Python loop over `noise.pnoise3`
    would; every element is independent, so the result does not depend on the number of threads.
    """
    xi, xii, xfr, xfa = _axis_table(width, frequency, octaves, lacunarity, period_x, base)
    yi, yii, yfr, yfa = _axis_table(height, frequency, octaves, lacunarity, period_y, base)
    zi, zii, zfr, zfa = _axis_table(depth, time_frequency, octaves, lacunarity, period_z, base)
    pers = np.float32(persistence)
    amps = np.empty(octaves, dtype=np.float32)
    amp = _F1
    amp_sum = _F0
    for o in range(octaves):
        amps[o] = amp
        amp_sum += amp
        amp *= pers
    out = np.empty((depth, height, width), dtype=np.float32)
    for z in prange(depth):
        for y in range(height):
            for x in range(width):
                total = _F0
                for o in range(octaves):
                    n = _noise3_at(xi[o, x], xii[o, x], yi[o, y], yii[o, y], zi[o, z], zii[o, z],
                                   xfr[o, x], yfr[o, y], zfr[o, z], xfa[o, x], yfa[o, y], zfa[o, z])
                    total += n * amps[o]
                out[z, y, x] = total / amp_sum
    return out


@njit(cache=True, no_cfunc_wrapper=True, parallel=True)
def perlin_plane(height, width, frequency, octaves, persistence, lacunarity, base, offset_x, offset_y):
    """2D field of shape (height, width), float32: out[y, x] = pnoise2(offset_x + x·frequency,
    offset_y + y·frequency, octaves, persistence, lacunarity, 1024, 1024, base) (`noise`'s default tile)."""
    out = np.empty((height, width), dtype=np.float32)
    for y in prange(height):
        yc = offset_y + y * frequency
        for x in range(width):
            out[y, x] = pnoise2(offset_x + x * frequency, yc, octaves, persistence, lacunarity,
                                DEFAULT_REPEAT, DEFAULT_REPEAT, base)
    return out


def check_perlin_params(octaves, persistence, lacunarity, base) -> None:
    """Raise ConfigError (a ValueError) with a one-line message if the fBm parameters are outside what the kernels handle."""
    if isinstance(octaves, bool) or not isinstance(octaves, (int, np.integer)) or not 1 <= octaves <= MAX_OCTAVES:
        raise ConfigError(f"perlin octaves must be an integer in 1..{MAX_OCTAVES}, got {octaves!r}")
    if isinstance(persistence, bool) or not isinstance(persistence, (int, float, np.integer, np.floating)) \
            or not 0.0 < persistence <= 1.0:
        raise ConfigError(f"perlin persistence must be a number in (0, 1], got {persistence!r}")
    if isinstance(lacunarity, bool) or not isinstance(lacunarity, (int, float, np.integer, np.floating)) \
            or not math.isfinite(lacunarity) or lacunarity < 1.0:
        raise ConfigError(f"perlin lacunarity must be a finite number >= 1, got {lacunarity!r}")
    if float(lacunarity) ** (int(octaves) - 1) > MAX_FREQUENCY_GAIN:
        raise ConfigError(
            f"perlin lacunarity**(octaves-1) must be <= 2**24 (higher octaves carry no float32 detail), "
            f"got lacunarity={lacunarity!r}, octaves={octaves!r}"
        )
    if isinstance(base, bool) or not isinstance(base, (int, np.integer)) or base not in (0, 1):
        raise ConfigError(f"perlin base must be 0 or 1 (larger values read past the permutation table), got {base!r}")
