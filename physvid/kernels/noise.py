"""Numba kernels for the noise model: counter-based Gaussian/white noise, Perlin windows, ratio calibration, quantisation.

Gaussian and white noise come from a counter-based hash (SplitMix64's finaliser) so that element e of a sequence's
noise is a pure function of (key, e): no generator state, no dependence on batching or threads. Each 64-bit hash
yields four 16-bit levels that index a 65,536-entry table: the standard normal quantiles at the level midpoints
(Gaussian; tails truncated at ±4.33σ) or uniform midpoints in [−1, 1] (white). The slow twins in physvid/reference.py
compute the same values with NumPy uint64 arithmetic.
"""
from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np
from numba import njit

LEVELS = 65536


@functools.lru_cache(maxsize=None)
def gaussian_table() -> np.ndarray:
    """Standard normal quantiles at (k + 0.5) / 65536, float32 (mean 0, std 0.99994)."""
    nd = NormalDist()
    return np.array([nd.inv_cdf((k + 0.5) / LEVELS) for k in range(LEVELS)], dtype=np.float32)


@functools.lru_cache(maxsize=None)
def uniform_table() -> np.ndarray:
    """Uniform levels at the midpoints of 65,536 equal bins of [−1, 1], float32."""
    return ((np.arange(LEVELS, dtype=np.float64) + 0.5) / LEVELS * 2.0 - 1.0).astype(np.float32)


@njit(cache=True)
def splitmix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def hash_fill(key, table, out):
    """out.flat[e] = table[16-bit level e % 4 of splitmix64(key + (e // 4) · golden)]."""
    hash_mix(key, table, 1.0, key, table, 0.0, out)


@njit(cache=True)
def hash_mix(key_a, table_a, weight_a, key_b, table_b, weight_b, out):
    """out.flat[e] = weight_a · A[e] + weight_b · B[e], A and B two hashed fields (see `hash_fill`), in one pass.

    A field whose weight is 0 is not hashed at all.
    """
    flat = out.reshape(-1)
    n = flat.size
    ka, kb = np.uint64(key_a), np.uint64(key_b)
    golden = np.uint64(0x9E3779B97F4A7C15)
    wa, wb = np.float32(weight_a), np.float32(weight_b)
    use_a, use_b = weight_a != 0.0, weight_b != 0.0
    for block in range((n + 3) // 4):
        za = splitmix64(ka + np.uint64(block) * golden) if use_a else np.uint64(0)
        zb = splitmix64(kb + np.uint64(block) * golden) if use_b else np.uint64(0)
        for lane in range(4):
            e = block * 4 + lane
            if e < n:
                shift = np.uint64(16 * lane)
                v = np.float32(0.0)
                if use_a:
                    v += wa * table_a[(za >> shift) & np.uint64(0xFFFF)]
                if use_b:
                    v += wb * table_b[(zb >> shift) & np.uint64(0xFFFF)]
                flat[e] = v


@njit(cache=True)
def abs_sum(a):
    """Σ|a| of a contiguous array with four independent partial sums (no single chain of dependent additions; the
    order is fixed, so the result is the same on every machine)."""
    flat = a.reshape(-1)
    s0 = s1 = s2 = s3 = 0.0
    n4 = flat.size - flat.size % 4
    for i in range(0, n4, 4):
        s0 += abs(flat[i])
        s1 += abs(flat[i + 1])
        s2 += abs(flat[i + 2])
        s3 += abs(flat[i + 3])
    for i in range(n4, flat.size):
        s0 += abs(flat[i])
    return (s0 + s1) + (s2 + s3)


@njit(cache=True)
def add_scaled(out, field, scale):
    """out += scale · field (field may be a flipped or transposed view)."""
    nt, h, w = field.shape
    sc = np.float32(scale)
    for t in range(nt):
        for y in range(h):
            for x in range(w):
                out[t, y, x] += sc * field[t, y, x]


@njit(cache=True)
def perlin_window(bank, oz, oy, ox, vy, vx, out):
    """out[t, y, x] = bilinear sample of bank[oz + t] at (ox + vx·t + x, oy + vy·t + y).

    Within a frame every sample shares the same fractional offset, so each frame is a fixed 4-tap stencil over the
    bank slice. The caller guarantees that every sample point lies inside the bank (and applies flips/transposes as views).
    """
    for t in range(out.shape[0]):
        _perlin_frame(bank, oz, oy, ox, vy, vx, t, out[t])


@njit(cache=True)
def _perlin_frame(bank, oz, oy, ox, vy, vx, t, out):
    """Frame t of `perlin_window` into the 2-D array `out`."""
    h, w = out.shape
    sl = bank[oz + t]
    px = ox + vx * t
    py = oy + vy * t
    x0 = int(math.floor(px))
    y0 = int(math.floor(py))
    fx = np.float32(px - x0)
    fy = np.float32(py - y0)
    w00 = (1 - fx) * (1 - fy)
    w01 = fx * (1 - fy)
    w10 = (1 - fx) * fy
    w11 = fx * fy
    for y in range(h):
        # 1-D row slices with a zero base offset: the inner loop vectorises (3x faster than indexing the 2-D slice)
        r0 = sl[y0 + y, x0:x0 + w + 1]
        r1 = sl[y0 + y + 1, x0:x0 + w + 1]
        o = out[y]
        for x in range(w):
            o[x] = (w00 * r0[x] + w01 * r0[x + 1]) + (w10 * r1[x] + w11 * r1[x + 1])


@njit(cache=True)
def perlin_window_oriented(bank, oz, oy, ox, vy, vx, flip_y, flip_x, transpose, out):
    """The window of `perlin_window` (shape (T, W, H) when `transpose`, else out's shape), stored in `out` (T, H, W)
    already transposed and then flipped like the view `field.transpose(0, 2, 1)[:, ::±1, ::±1]`, so that adding it to
    the noise is a contiguous pass. Returns `abs_sum` of the un-oriented window, with abs_sum's very additions.
    """
    nt, hh, ww = out.shape
    h, w = (ww, hh) if transpose else (hh, ww)
    frame = np.empty((h, w), np.float32)
    n = nt * h * w
    n4 = n - n % 4
    s0 = s1 = s2 = s3 = 0.0
    for t in range(nt):
        _perlin_frame(bank, oz, oy, ox, vy, vx, t, frame)
        flat = frame.reshape(-1)
        base = t * h * w
        if (h * w) % 4 == 0:  # every frame starts on a multiple of 4 and n4 == n
            for i in range(0, h * w, 4):
                s0 += abs(flat[i])
                s1 += abs(flat[i + 1])
                s2 += abs(flat[i + 2])
                s3 += abs(flat[i + 3])
        else:  # element e goes to partial sum e % 4, the tail past the last multiple of 4 to the first
            for i in range(h * w):
                e = base + i
                lane = e % 4 if e < n4 else 0
                v = abs(flat[i])
                if lane == 0:
                    s0 += v
                elif lane == 1:
                    s1 += v
                elif lane == 2:
                    s2 += v
                else:
                    s3 += v
        dst = out[t]
        for y in range(h):
            src = frame[y]
            if transpose:  # window (y, x) -> transposed (x, y) -> flipped
                col = ww - 1 - y if flip_x else y
                for x in range(w):
                    dst[hh - 1 - x if flip_y else x, col] = src[x]
            else:
                row = dst[hh - 1 - y if flip_y else y]
                if flip_x:
                    for x in range(w):
                        row[ww - 1 - x] = src[x]
                else:
                    for x in range(w):
                        row[x] = src[x]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True)
def _level(v):
    """The uint8 quantiser as an integer: round-half-up of 255·clip(v, 0, 1) (truncation is floor for v >= 0)."""
    return np.int64(min(1.0, max(0.0, v)) * 255.0 + 0.5)


@njit(cache=True)
def quantised_noise_mass(clean, noise, scale):
    """g(s) = Σ|q(c + s·n) − q(c)| in grey levels, q = the uint8 quantiser of `quantise`."""
    c = clean.reshape(-1)
    nz = noise.reshape(-1)
    g = 0
    for i in range(c.size):  # integer levels: exact, order-free sums
        ci = np.float64(c[i])
        g += abs(_level(ci + scale * np.float64(nz[i])) - _level(ci))
    return np.float64(g)


@njit(cache=True)
def noise_scale(clean, noise, ratio, rtol=0.01, max_iter=60):
    """The scale s at which the noise that survives clipping *and* 8-bit quantisation is `ratio` times the signal:

        g(s) = Σ|q(c + s·n) − q(c)| = ratio · Σ q(c)      (grey levels, q the quantiser of `quantise`)

    within `rtol`. Clipping at a black background removes about half of zero-mean noise and quantisation erases noise
    under half a grey level, so the naive s = ratio·Σc / Σ|n| under-delivers. g is non-decreasing in s (a step function):
    start from s0 = ratio·Σc / Σ_{n points into free room}|n| (a lower bound of the clipped continuous solution), take
    one proportional step (enough in practice: 2 passes), else bracket the target by doubling and refine with the
    Illinois variant of regula falsi.
    Returns (s, g(s) / Σ q(c)), the achieved ratio; (0, 0) when the clean signal is empty.
    """
    c, nz = clean.reshape(-1), noise.reshape(-1)
    s, achieved, _ = _solve_scale(c, nz, ratio, rtol, max_iter, np.empty(0, np.uint8), False)
    return s, achieved


@njit(cache=True)
def noise_scale_quantise(clean, noise, ratio, out, rtol=0.01, max_iter=60):
    """`noise_scale` then `quantise(clean, noise, s, out)`, with the bytes written by the solver's probes: the last
    probe is usually at the returned s, which saves the separate quantisation pass. Returns (s, achieved ratio).
    """
    c, nz, o = clean.reshape(-1), noise.reshape(-1), out.reshape(-1)
    s, achieved, last = _solve_scale(c, nz, ratio, rtol, max_iter, o, True)
    if last != s:
        quantise(clean, noise, s, out)
    return s, achieved


@njit(cache=True)
def _probe(c, nz, out, write, scale):
    """g(scale), also writing the quantised bytes to `out` when `write` (same per-element arithmetic as `quantise`)."""
    if not write:
        return quantised_noise_mass(c, nz, scale)
    g = 0
    for i in range(c.size):
        ci = np.float64(c[i])
        q = _level(ci + scale * np.float64(nz[i]))
        out[i] = np.uint8(q)
        g += abs(q - _level(ci))
    return np.float64(g)


@njit(cache=True)
def _solve_scale(c, nz, ratio, rtol, max_iter, out, write):
    """The solver of `noise_scale` on flat arrays; also returns the scale of its last probe (-1 when none)."""
    levels = 0
    s0 = s1 = f0 = f1 = 0.0
    n2 = c.size - c.size % 2
    zero = np.float32(0.0)
    for i in range(0, n2, 2):  # two independent chains per sum, in a fixed order
        ca, cb = c[i], c[i + 1]
        na, nb = nz[i], nz[i + 1]
        levels += _level(np.float64(ca)) + _level(np.float64(cb))
        s0 += ca
        s1 += cb
        f0 += abs(na) if ((np.float32(1.0) - ca) if na > 0 else ca) > 0 else zero
        f1 += abs(nb) if ((np.float32(1.0) - cb) if nb > 0 else cb) > 0 else zero
    for i in range(n2, c.size):
        levels += _level(np.float64(c[i]))
        s0 += c[i]
        f0 += abs(nz[i]) if ((np.float32(1.0) - c[i]) if nz[i] > 0 else c[i]) > 0 else zero
    signal = s0 + s1
    free = f0 + f1
    target = ratio * levels
    if target <= 0.0 or free == 0.0:
        return 0.0, 0.0, -1.0
    s0 = ratio * signal / free
    g0 = _probe(c, nz, out, write, s0)
    if abs(g0 - target) <= rtol * target:
        return s0, g0 / levels, s0
    # g is close to proportional to s: one proportional step usually lands within 0.2 %.
    s1 = s0 * target / g0 if g0 > 0 else 2.0 * s0
    g1 = _probe(c, nz, out, write, s1)
    last = s1
    if abs(g1 - target) <= rtol * target:
        return s1, g1 / levels, s1
    lo, glo, hi, ghi = 0.0, 0.0, -1.0, 0.0  # bracket from the two probes: lo below the target, hi at or above
    for s_, g_ in ((s0, g0), (s1, g1)):
        if g_ < target:
            if s_ > lo:
                lo, glo = s_, g_
        elif hi < 0.0 or s_ < hi:
            hi, ghi = s_, g_
    if hi < 0.0:
        hi = 2.0 * lo
        ghi = _probe(c, nz, out, write, hi)
        last = hi
    for _ in range(60):
        if ghi >= target:
            break
        lo, glo = hi, ghi
        hi *= 2.0
        ghi = _probe(c, nz, out, write, hi)
        last = hi
    s, g = hi, ghi
    side = 0
    for _ in range(max_iter):
        if abs(g - target) <= rtol * target:
            break
        if ghi == glo:
            s = 0.5 * (lo + hi)
        else:
            s = lo + (target - glo) * (hi - lo) / (ghi - glo)
            if s <= lo or s >= hi:
                s = 0.5 * (lo + hi)
        g = _probe(c, nz, out, write, s)
        last = s
        if g < target:
            lo, glo = s, g
            if side == -1:
                ghi = target + 0.5 * (ghi - target)
            side = -1
        else:
            hi, ghi = s, g
            if side == 1:
                glo = target - 0.5 * (target - glo)
            side = 1
    return s, g / levels, last


@njit(cache=True)
def quantise(clean, noise, scale, out):
    """out = round(clip(clean + scale·noise, 0, 1) · 255) as uint8 (round half up), computed in float64."""
    c = clean.reshape(-1)
    nz = noise.reshape(-1)
    o = out.reshape(-1)
    for i in range(c.size):
        o[i] = np.uint8(_level(np.float64(c[i]) + scale * np.float64(nz[i])))
