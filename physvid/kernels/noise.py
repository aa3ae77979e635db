"""Numba kernels for the noise model: counter-based Gaussian/white noise, Perlin windows, ratio calibration, quantisation.

Gaussian and white noise come from a counter-based hash (SplitMix64's finaliser) so that element e of a sequence's
noise is a pure function of (key, e): no generator state, no dependence on batching or threads. Each 64-bit hash
yields four 16-bit levels k: a Gaussian level indexes a 65,536-entry table of standard normal quantiles at the level
midpoints (tails truncated at ±4.33σ), a white level is the midpoint (2k − 65535)/65536 of the k-th of 65,536 equal bins
of [−1, 1], computed exactly in float32 (the `uniform_table` entries, without the table). The slow twins in
physvid/reference.py compute the same values with NumPy uint64 arithmetic.

Every float reduction here runs in an order fixed by the code (explicit lanes), never reassociated, so the bytes are
the same on every machine.
"""
from __future__ import annotations

import functools
import math
import sys
from statistics import NormalDist

import numpy as np
from numba import njit

LEVELS = 65536
LANES = 16  # partial sums of the solver's float reductions
if sys.byteorder != "little":  # mix_noise reads the 16-bit levels of a hash through a uint16 view
    raise ImportError("physvid's noise kernels assume a little-endian machine")


@functools.lru_cache(maxsize=None)
def gaussian_table() -> np.ndarray:
    """Standard normal quantiles at (k + 0.5) / 65536, float32 (mean 0, std 0.99999; exactly antisymmetric)."""
    nd = NormalDist()
    return np.array([nd.inv_cdf((k + 0.5) / LEVELS) for k in range(LEVELS)], dtype=np.float32)


@functools.lru_cache(maxsize=None)
def uniform_table() -> np.ndarray:
    """Uniform levels at the midpoints of 65,536 equal bins of [−1, 1], float32."""
    return ((np.arange(LEVELS, dtype=np.float64) + 0.5) / LEVELS * 2.0 - 1.0).astype(np.float32)


@njit(cache=True, no_cfunc_wrapper=True)
def splitmix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, no_cfunc_wrapper=True)
def hash_fill(key, table, out):
    """out.flat[e] = table[16-bit level e % 4 of splitmix64(key + (e // 4) · golden)] (the definition the fast paths
    of `mix_noise` follow)."""
    flat = out.reshape(-1)
    n = flat.size
    k = np.uint64(key)
    golden = np.uint64(0x9E3779B97F4A7C15)
    for e in range(n):
        z = splitmix64(k + np.uint64(e // 4) * golden)
        flat[e] = table[(z >> np.uint64(16 * (e % 4))) & np.uint64(0xFFFF)]


CHUNK = 1024  # hashes per field and chunk of `mix_noise` (4096 elements: the chunk's hashes stay in L1)


@njit(cache=True, no_cfunc_wrapper=True)
def _hashes(key, b0, z):
    """z[j] = splitmix64(key + (b0 + j) · golden): one vectorised pass (64-bit multiplies)."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    for j in range(z.size):
        z[j] = splitmix64(key + np.uint64(b0 + j) * golden)


@njit(cache=True, no_cfunc_wrapper=True)
def _gaussian_levels(z, table, dst):
    """dst[4j + l] = table[level l of z[j]], as scalar loads: a vectorised gather is several times slower here (and a
    computed quantile, vectorised, slower still)."""
    mask = np.uint64(0xFFFF)
    for j in range(z.size):
        zz = z[j]
        dst[4 * j] = table[zz & mask]
        dst[4 * j + 1] = table[(zz >> np.uint64(16)) & mask]
        dst[4 * j + 2] = table[(zz >> np.uint64(32)) & mask]
        dst[4 * j + 3] = table[zz >> np.uint64(48)]


@njit(cache=True, no_cfunc_wrapper=True)
def _mix_span(g, lu, wg, wu, scale, use_g, use_u, keep, dst):
    """dst[i] = (wg·g[i] + wu·U(lu[i])) + scale·dst[i] (U the white level of a 16-bit level), the terms with
    use_*/keep false left out: one branch-free vectorised loop per case (the flags are loop-invariant)."""
    step = np.float32(1.0 / 65536.0)
    zero = np.float32(0.0)
    for i in range(dst.size):
        v = zero
        if use_g:
            v += wg * g[i]
        if use_u:
            v += wu * (np.float32(np.int32(2) * np.int32(lu[i]) - np.int32(65535)) * step)
        if keep:
            v += scale * dst[i]
        dst[i] = v


@njit(cache=True, no_cfunc_wrapper=True)
def mix_noise(key_g, gtable, weight_g, key_u, weight_u, scales, out):
    """out (T, C, H, W) = weight_g·G + weight_u·U + scales[c]·out[:, c], in float32 and in that order.

    G: `hash_fill(key_g, gtable)`; U: `hash_fill(key_u, uniform_table())`, its levels computed, not looked up.
    `out` holds the channels' unscaled Perlin fields when `scales` is non-empty (scales[c] == 0 drops channel c's),
    and is not read when `scales` is empty. A field whose weight is 0 is not hashed at all.
    """
    nt, nc, h, w = out.shape
    flat = out.reshape(-1)
    n = flat.size
    plane = h * w
    kg, ku = np.uint64(key_g), np.uint64(key_u)
    wg, wu = np.float32(weight_g), np.float32(weight_u)
    use_g, use_u, keep = weight_g != 0.0, weight_u != 0.0, scales.size > 0
    # np.empty + assignment, not np.zeros: one numba overload fewer to compile per dtype on a first run
    za = np.empty(CHUNK, np.uint64)
    zb = np.empty(CHUNK, np.uint64)
    g = np.empty(4 * CHUNK, np.float32)
    za[:], zb[:], g[:] = 0, 0, 0.0
    lu = zb.view(np.uint16)  # level l of zb[j] at 4j + l: little-endian (checked at import)
    for b0 in range(0, (n + 3) // 4, CHUNK):
        m = min(CHUNK, (n + 3) // 4 - b0)
        if use_g:
            _hashes(kg, b0, za[:m])
            _gaussian_levels(za[:m], gtable, g)
        if use_u:
            _hashes(ku, b0, zb[:m])
        e0, e1 = 4 * b0, min(n, 4 * (b0 + m))
        e = e0
        while e < e1:  # spans that stay within one (t, c) plane share the channel's Perlin scale
            stop = min(e1, (e // plane + 1) * plane)
            sc = np.float32(scales[(e // plane) % nc]) if keep else np.float32(0.0)
            # slices: indices from 0 (a signed offset would cost a wrap-around check that stops vectorisation)
            _mix_span(g[e - e0:stop - e0], lu[e - e0:stop - e0], wg, wu, sc, use_g, use_u, keep, flat[e:stop])
            e = stop


@njit(cache=True, no_cfunc_wrapper=True)
def perlin_window(bank, oz, oy, ox, vy, vx, flip_y, flip_x, out, c):
    """out[t, c, y, x] = bilinear sample of bank[oz + t] at (py_t ± y, px_t ± x); returns Σ|out[:, c]|.

    px_t = ox + vx·t, plus (W − 1) when `flip_x` (then columns run backwards: the window mirrored); rows likewise.
    Within a frame every sample shares the same fractional offset, so each frame is a fixed 4-tap stencil over the
    bank slice, in float32. The caller guarantees that every sample point lies inside the bank (a transposed window is
    a window of the transposed bank). The sum runs over W float32 column lanes (frames and rows in order), then over
    the lanes in order in float64: a fixed order that vectorises.
    """
    nt, nc, h, w = out.shape
    one = np.float32(1.0)
    acc = np.empty(w, np.float32)  # np.empty + assignment: no np.zeros overload to compile on a first run
    acc[:] = 0.0
    last = np.uint64(w - 1)  # unsigned indices: no negative-index wrap-around, so the mirrored read vectorises
    for t in range(nt):
        sl = bank[oz + t]
        px = ox + vx * t + (w - 1 if flip_x else 0)
        py = oy + vy * t + (h - 1 if flip_y else 0)
        x0 = int(math.floor(px))
        y0 = int(math.floor(py))
        fx = np.float32(px - x0)
        fy = np.float32(py - y0)
        w00 = (one - fx) * (one - fy)
        w01 = fx * (one - fy)
        w10 = (one - fx) * fy
        w11 = fx * fy
        xs = x0 - w + 1 if flip_x else x0
        for y in range(h):
            row = y0 - y if flip_y else y0 + y
            o = out[t, c, y]
            # 1-D row slices with a zero base offset vectorise (3x faster than indexing the 2-D slice)
            r0 = sl[row, xs:xs + w + 1]
            r1 = sl[row + 1, xs:xs + w + 1]
            if flip_x:
                for x in range(w):
                    j = last - np.uint64(x)
                    k = j + np.uint64(1)
                    v = (w00 * r0[j] + w01 * r0[k]) + (w10 * r1[j] + w11 * r1[k])
                    o[x] = v
                    acc[x] += abs(v)
            else:
                for x in range(w):
                    v = (w00 * r0[x] + w01 * r0[x + 1]) + (w10 * r1[x] + w11 * r1[x + 1])
                    o[x] = v
                    acc[x] += abs(v)
    total = 0.0
    for x in range(w):
        total += np.float64(acc[x])
    return total


def oriented_bank(volume: np.ndarray) -> np.ndarray:
    """(2·D, S, S) float32: the Perlin volume (D, S, S) and, after it, each slice transposed, so that a transposed
    window is a plain window of the second half (no scatter)."""
    d, h, w = volume.shape
    if h != w:
        raise ValueError(f"the Perlin bank must be square to hold its transpose, got {h}x{w}")
    return np.ascontiguousarray(np.concatenate([volume, volume.transpose(0, 2, 1)]), dtype=np.float32)


@njit(cache=True, no_cfunc_wrapper=True)
def _level(v):
    """The uint8 quantiser as an integer: round-half-up of 255·clip(v, 0, 1) (truncation is floor for v >= 0).

    The float64 value lies in [0, 255.5], so the int32 conversion is exact and vectorises (int64 would not, below
    AVX-512).
    """
    return np.int32(min(1.0, max(0.0, v)) * 255.0 + 0.5)


@njit(cache=True, no_cfunc_wrapper=True)
def quantised_noise_mass(clean, noise, scale):
    """g(s) = Σ|q(c + s·n) − q(c)| in grey levels, q = the uint8 quantiser of `quantise`."""
    c = clean.reshape(-1)
    nz = noise.reshape(-1)
    g = 0
    for i in range(c.size):  # integer levels: exact, order-free sums
        ci = np.float64(c[i])
        g += abs(_level(ci + scale * np.float64(nz[i])) - _level(ci))
    return np.float64(g)


@njit(cache=True, no_cfunc_wrapper=True)
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
    s, achieved, _ = _solve_scale(c, nz, ratio, rtol, max_iter, np.empty(c.size, np.uint8))
    return s, achieved


@njit(cache=True, no_cfunc_wrapper=True)
def noise_scale_quantise(clean, noise, ratio, out, rtol=0.01, max_iter=60):
    """`noise_scale` then `quantise(clean, noise, s, out)`, with the bytes written by the solver's probes: the last
    probe is usually at the returned s, which saves the separate quantisation pass. Returns (s, achieved ratio).
    """
    c, nz, o = clean.reshape(-1), noise.reshape(-1), out.reshape(-1)
    s, achieved, last = _solve_scale(c, nz, ratio, rtol, max_iter, o)
    if last != s:
        quantise(clean, noise, s, out)
    return s, achieved


@njit(cache=True, no_cfunc_wrapper=True)
def _probe(c, nz, qc, out, scale):
    """g(scale), writing the quantised bytes to `out` (same per-element arithmetic as `quantise`); qc = q(c)."""
    g = 0
    for i in range(c.size):  # one vectorised pass; the integer sum is exact, so its order does not matter
        q = _level(np.float64(c[i]) + scale * np.float64(nz[i]))
        out[i] = np.uint8(q)
        g += abs(q - np.int32(qc[i]))
    return np.float64(g)


@njit(cache=True, no_cfunc_wrapper=True)
def _lane_total(acc):
    """Σ acc over LANES partial sums as a fixed pairwise tree."""
    a = acc.copy()
    m = a.size
    while m > 1:
        m //= 2
        for j in range(m):
            a[j] = a[j] + a[j + m]
    return a[0]


@njit(cache=True, no_cfunc_wrapper=True)
def _solve_scale(c, nz, ratio, rtol, max_iter, out):
    """The solver of `noise_scale` on flat arrays, writing each probe's bytes to `out`; also returns the scale of its
    last probe (-1 when none)."""
    n = c.size
    qc = np.empty(n, np.uint8)
    levels = 0
    for i in range(n):  # levels of the clean signal (an exact integer sum)
        q = _level(np.float64(c[i]))
        qc[i] = np.uint8(q)
        levels += q
    # Σc and Σ|n| over the pixels whose noise points into free room, element i into lane i % LANES (float64 lanes,
    # then a fixed tree): a fixed order that vectorises; branch-free selects.
    sig = np.empty(LANES, np.float64)  # np.empty + assignment: no np.zeros overload to compile on a first run
    room = np.empty(LANES, np.float64)
    sig[:], room[:] = 0.0, 0.0
    one = np.float32(1.0)
    zero = np.float32(0.0)
    tail = n - n % LANES
    for i0 in range(0, tail, LANES):
        for j in range(LANES):
            ci = c[i0 + j]
            ni = nz[i0 + j]
            r = one - ci if ni > zero else ci
            sig[j] += ci
            room[j] += abs(ni) if r > zero else zero
    for i in range(tail, n):
        r = one - c[i] if nz[i] > zero else c[i]
        sig[i - tail] += c[i]
        room[i - tail] += abs(nz[i]) if r > zero else zero
    signal = _lane_total(sig)
    free = _lane_total(room)
    target = ratio * levels
    if target <= 0.0 or free == 0.0:
        return 0.0, 0.0, -1.0
    s0 = ratio * signal / free
    g0 = _probe(c, nz, qc, out, s0)
    if abs(g0 - target) <= rtol * target:
        return s0, g0 / levels, s0
    # g is close to proportional to s: one proportional step usually lands within 0.2 %.
    s1 = s0 * target / g0 if g0 > 0 else 2.0 * s0
    g1 = _probe(c, nz, qc, out, s1)
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
        ghi = _probe(c, nz, qc, out, hi)
        last = hi
    for _ in range(60):
        if ghi >= target:
            break
        lo, glo = hi, ghi
        hi *= 2.0
        ghi = _probe(c, nz, qc, out, hi)
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
        g = _probe(c, nz, qc, out, s)
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


@njit(cache=True, no_cfunc_wrapper=True)
def quantise(clean, noise, scale, out):
    """out = round(clip(clean + scale·noise, 0, 1) · 255) as uint8 (round half up), computed in float64."""
    c = clean.reshape(-1)
    nz = noise.reshape(-1)
    o = out.reshape(-1)
    for i in range(c.size):
        o[i] = np.uint8(_level(np.float64(c[i]) + scale * np.float64(nz[i])))
