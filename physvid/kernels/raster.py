"""Numba kernels that draw objects: anti-aliased shape sprites, intensity convolution and pose-aware compositing.

Conventions (shared with the slow twins in physvid/reference.py):
- pixel (row i, column j) has its centre at (x, y) = (j, i); y grows downwards;
- an object's local coordinates (u, v) map to the frame by x = cx + u cosθ + v sinθ, y = cy − u sinθ + v cosθ, so a
  positive angle turns the object counter-clockwise as displayed;
- a sprite is an S×S float32 image of the object's "mass" M centred at ((S−1)/2, (S−1)/2); it is sampled bilinearly with
  zeros outside, exactly like `skimage.transform.warp(order=1, cval=0)`.
Shape ids index `SHAPE_IDS`.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

SHAPE_IDS = {"circle": 0, "line": 1, "rectangle": 2, "ellipse": 3, "polygon": 4, "irregular": 5, "digit": 6}


@njit(cache=True, no_cfunc_wrapper=True)
def _segment_distance(px, py, ax, ay, bx, by):
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    t = 0.0
    if ll > 0.0:
        t = ((px - ax) * dx + (py - ay) * dy) / ll
        t = min(1.0, max(0.0, t))
    ex, ey = px - (ax + t * dx), py - (ay + t * dy)
    return math.sqrt(ex * ex + ey * ey)


@njit(cache=True, no_cfunc_wrapper=True)
def signed_distance(shape, u, v, radius, aspect, thickness, verts, n_verts):
    """Signed distance (negative inside) from local point (u, v) to the shape's outline, in pixels."""
    if shape == 0:  # circle
        return math.sqrt(u * u + v * v) - radius
    if shape == 1:  # line: a capsule of width `thickness` whose ends touch the bounding circle
        half = max(radius - 0.5 * thickness, 0.0)
        return _segment_distance(u, v, -half, 0.0, half, 0.0) - 0.5 * thickness
    if shape == 2:  # rectangle whose diagonal is the diameter
        hx = radius / math.sqrt(1.0 + aspect * aspect)
        hy = aspect * hx
        qx, qy = abs(u) - hx, abs(v) - hy
        ox, oy = max(qx, 0.0), max(qy, 0.0)
        return math.sqrt(ox * ox + oy * oy) + min(max(qx, qy), 0.0)
    if shape == 3:  # ellipse, first-order distance estimate (exact on the axes, within ~1e-2 px near the outline)
        a, b = radius, radius * aspect
        k0 = math.sqrt((u / a) ** 2 + (v / b) ** 2)
        k1 = math.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
        if k1 == 0.0:
            return -b
        return k0 * (k0 - 1.0) / k1
    # polygons: distance to the closest edge, sign from the even-odd rule
    d = 1e30
    inside = False
    j = n_verts - 1
    for i in range(n_verts):
        xi, yi = verts[i, 0], verts[i, 1]
        xj, yj = verts[j, 0], verts[j, 1]
        d = min(d, _segment_distance(u, v, xj, yj, xi, yi))
        if (yi > v) != (yj > v):
            if u < (xj - xi) * (v - yi) / (yj - yi) + xi:
                inside = not inside
        j = i
    return -d if inside else d


@njit(cache=True, no_cfunc_wrapper=True)
def shape_sprite(shape, radius, aspect, thickness, verts, n_verts, out):
    """Anti-aliased coverage of a geometric shape: clamp(0.5 − signed distance, 0, 1) per pixel (a 1-pixel box filter).

    Every shape lies inside its bounding circle of `radius`, so only that square is evaluated; the rest is set to 0.
    """
    s = out.shape[0]
    c = 0.5 * (s - 1)
    lo = max(0, int(math.floor(c - radius - 2.0)))
    hi = min(s, int(math.ceil(c + radius + 2.0)) + 1)
    out[:, :] = 0.0
    for i in range(lo, hi):
        for j in range(lo, hi):
            d = signed_distance(shape, j - c, i - c, radius, aspect, thickness, verts, n_verts)
            out[i, j] = min(1.0, max(0.0, 0.5 - d))


@njit(cache=True, no_cfunc_wrapper=True)
def bilinear(img, x, y):
    """Bilinear sample at continuous (x, y) with zeros outside the image."""
    h, w = img.shape
    x0f = math.floor(x)
    y0f = math.floor(y)
    fx, fy = x - x0f, y - y0f
    x0, y0 = int(x0f), int(y0f)
    v = 0.0
    if 0 <= y0 < h:
        if 0 <= x0 < w:
            v += (1 - fx) * (1 - fy) * img[y0, x0]
        if 0 <= x0 + 1 < w:
            v += fx * (1 - fy) * img[y0, x0 + 1]
    if 0 <= y0 + 1 < h:
        if 0 <= x0 < w:
            v += (1 - fx) * fy * img[y0 + 1, x0]
        if 0 <= x0 + 1 < w:
            v += fx * fy * img[y0 + 1, x0 + 1]
    return v


@njit(cache=True, no_cfunc_wrapper=True)
def resample_sprite(src, size, out):
    """Scale a digit image (h×w) so that its longer side spans `size` pixels, centred in the sprite (bilinear)."""
    h, w = src.shape
    s = out.shape[0]
    c = 0.5 * (s - 1)
    scale = max(h, w) / size  # source pixels per sprite pixel
    for i in range(s):
        for j in range(s):
            out[i, j] = bilinear(src, (j - c) * scale + 0.5 * (w - 1), (i - c) * scale + 0.5 * (h - 1))


@njit(cache=True, no_cfunc_wrapper=True)
def convolve_same(src, kernel, out):
    """2-D correlation with zero padding, output the size of `src` (scipy.ndimage.correlate(mode='constant'))."""
    h, w = src.shape
    kh, kw = kernel.shape
    rh, rw = kh // 2, kw // 2
    for i in range(h):
        for j in range(w):
            if rh <= i < h - rh and rw <= j < w - rw:
                out[i, j] = _correlate_at(src, kernel, i, j)
                continue
            acc = 0.0
            for a in range(kh):
                ii = i + a - rh
                if ii < 0 or ii >= h:
                    continue
                for b in range(kw):
                    jj = j + b - rw
                    if 0 <= jj < w:
                        acc += kernel[a, b] * src[ii, jj]
            out[i, j] = acc


@njit(cache=True, no_cfunc_wrapper=True)
def _correlate_at(src, kernel, i, j):
    """Correlation at an interior pixel (every tap inside): no bounds checks."""
    kh, kw = kernel.shape
    rh, rw = kh // 2, kw // 2
    acc = 0.0
    for a in range(kh):
        for b in range(kw):
            acc += kernel[a, b] * src[i + a - rh, j + b - rw]
    return acc


@njit(cache=True, no_cfunc_wrapper=True)
def convolve_window(src, kernel, out, lo, hi):
    """`convolve_same` restricted to rows and columns [lo, hi), which must keep every tap inside the image.

    Used for the intensity step: the mass can only have spread `kernel radius` pixels per frame from the object, and
    the sprite's margin guarantees it never reaches the border, so the rest of `out` stays zero. Taps are the outer
    loops so that the inner loop runs along contiguous rows (vectorised).
    """
    kh, kw = kernel.shape
    rh, rw = kh // 2, kw // 2
    n = hi - lo
    for i in range(lo, hi):
        # 1-D row slices starting at the window: indices run from 0, so numba emits no negative-index fix-up and the
        # inner loop vectorises (≈ 5× faster than indexing the 2-D arrays with offsets).
        o = out[i, lo:hi]
        for j in range(n):
            o[j] = 0.0
        for a in range(kh):
            for b in range(kw):
                kv = kernel[a, b]
                row = src[i + a - rh, lo + b - rw:hi + b - rw]
                for j in range(n):
                    o[j] += kv * row[j]


@njit(cache=True, no_cfunc_wrapper=True)
def texture_sprite(tex, out, lo=0, hi=-1):
    """The object's fill in its own coordinates, sampled at the sprite's pixel centres (rows/columns [lo, hi) only).

    `tex` = (textured, frequency, orientation, phase, contrast): 1 − contrast·(1 − sin(2π f (u cos φ + v sin φ) + phase))/2,
    or 1 when untextured. Attached to the object, so it moves and turns with it.
    """
    s = out.shape[0]
    c = 0.5 * (s - 1)
    if hi < 0:
        hi = s
    if tex[0] <= 0.5:
        out[:, :] = 1.0
        return
    k = 2.0 * math.pi * tex[1]
    cph, sph = math.cos(tex[2]), math.sin(tex[2])
    # sin(a_j + b_i) = sin a_j cos b_i + cos a_j sin b_i: 2(hi − lo) sines instead of one per pixel (equal to the direct
    # form within ~1e-14, far below float32's resolution), and a vectorised inner loop.
    n = hi - lo
    sa, ca = np.empty(n, np.float64), np.empty(n, np.float64)
    for j in range(n):
        a = k * ((lo + j - c) * cph)
        sa[j], ca[j] = math.sin(a), math.cos(a)
    half = 0.5 * tex[4]
    for i in range(lo, hi):
        b = k * ((i - c) * sph) + tex[3]
        sb, cb = math.sin(b), math.cos(b)
        row = out[i, lo:hi]
        for j in range(n):
            row[j] = 1.0 - half * (1.0 - (sa[j] * cb + ca[j] * sb))


@njit(cache=True, no_cfunc_wrapper=True)
def brightest(colour):
    """colour.max() of a 1-D array, without compiling numba's np.max overload (≈ 0.3 s of a first run)."""
    m = colour[0]
    for ch in range(1, colour.size):
        m = max(m, colour[ch])
    return m


@njit(cache=True, no_cfunc_wrapper=True)
def draw_sprite(frame, owner, value_max, obj_id, sprite, cx, cy, theta, reach, colour, wrap, additive):
    """Composite one object's sprite into `frame` (C, H, W) at pose (cx, cy, θ radians), bilinear, zeros outside
    (see `draw_sprite_box`, here with the whole sprite as the box)."""
    draw_sprite_box(frame, owner, value_max, obj_id, sprite, cx, cy, theta, reach, colour, wrap, additive, 0,
                    sprite.shape[0])


@njit(cache=True, no_cfunc_wrapper=True)
def _span(q0, dq, a, b, x_ref, x_lo, x_hi):
    """Pixels x in [x_lo, x_hi] whose coordinate q0 + dq·(x − x_ref) may lie in the open interval (a, b), widened by
    one pixel on each side against rounding (an empty span has x_b < x_a)."""
    if dq == 0.0:
        if a < q0 < b:
            return x_lo, x_hi
        return x_lo, x_lo - 1
    t1 = min(max((a - q0) / dq, -1e6), 1e6)  # clamped: int() of a huge float would overflow
    t2 = min(max((b - q0) / dq, -1e6), 1e6)
    if t1 > t2:
        t1, t2 = t2, t1
    lo, hi = x_lo, x_hi
    if t1 > x_lo - x_ref:
        lo = x_ref + int(math.floor(t1)) - 1
    if t2 < x_hi - x_ref:
        hi = x_ref + int(math.ceil(t2)) + 1
    return max(lo, x_lo), min(hi, x_hi)


@njit(cache=True, no_cfunc_wrapper=True)
def draw_sprite_box(frame, owner, value_max, obj_id, sprite, cx, cy, theta, reach, colour, wrap, additive, b_lo,
                    b_hi):
    """`draw_sprite` for a sprite whose non-zero pixels all lie in rows and columns [b_lo, b_hi): each row only visits
    the span of pixels whose sample can touch that box (found once per row; the sprite coordinates still advance one
    step per pixel, so every sample is computed exactly as in `draw_sprite`).

    Composite one object's sprite into `frame` (C, H, W) at pose (cx, cy, θ radians), bilinear, zeros outside.

    Only pixels within `reach` of the centre are visited (the caller knows how far the object's mass extends).
    `owner`/`value_max` (H, W) track which object is brightest at each pixel and its value there (property map).
    With `wrap` the object is also drawn shifted by ±W, ±H so that it re-enters on the opposite side.
    Overlap: `additive` sums (clipped later), otherwise the brightest object wins per pixel and channel.
    """
    nc, h, w = frame.shape
    s = sprite.shape[0]
    c = 0.5 * (s - 1)
    ct, st = math.cos(theta), math.sin(theta)
    cmax = brightest(colour)
    last = s - 1.0
    inner = b_lo >= 1 and b_hi <= s - 1  # then a sample off [0, last)² only meets zeros (the fast path covers the rest)
    for sy in range(-1, 2):
        for sx in range(-1, 2):
            if (sx != 0 or sy != 0) and not wrap:
                continue
            ox = cx + sx * w
            oy = cy + sy * h
            x_lo = max(0, int(math.floor(ox - reach)))
            x_hi = min(w - 1, int(math.ceil(ox + reach)))
            y_lo = max(0, int(math.floor(oy - reach)))
            y_hi = min(h - 1, int(math.ceil(oy + reach)))
            for y in range(y_lo, y_hi + 1):
                dy = y - oy
                # sprite coordinates of (x_lo, y), then one step (cos θ, sin θ) per pixel to the right
                su = ct * (x_lo - ox) - st * dy + c
                sv = st * (x_lo - ox) + ct * dy + c
                # `reach` bounds the Euclidean distance of every non-zero sample: keep the row's chord of that disk
                # (≈ 20 % fewer pixels than its bounding square), then the pixels whose sample can touch the box.
                chord = reach * reach - dy * dy
                if chord < 0.0:
                    continue
                half = math.sqrt(chord)
                x_a, x_b = max(x_lo, int(math.floor(ox - half))), min(x_hi, int(math.ceil(ox + half)))
                x_a, x_b = _span(su, ct, b_lo - 1.0, b_hi, x_lo, x_a, x_b)
                x_a, x_b = _span(sv, st, b_lo - 1.0, b_hi, x_lo, x_a, x_b)
                if x_b < x_a:
                    continue
                for x in range(x_lo, x_a):  # the same additions as the loop below, for identical coordinates
                    su += ct
                    sv += st
                # Row views, and no `m > 0` test: a zero sample changes nothing (max, +0, not brighter).
                vrow, orow = value_max[y], owner[y]
                for x in range(x_a, x_b + 1):
                    if su >= 0.0 and sv >= 0.0 and su < last and sv < last:
                        # fast path, all four taps inside: truncation is floor for non-negative coordinates
                        x0, y0 = int(su), int(sv)
                        fx, fy = su - x0, sv - y0
                        r0, r1 = sprite[y0], sprite[y0 + 1]
                        top = r0[x0] + fx * (r0[x0 + 1] - r0[x0])
                        bottom = r1[x0] + fx * (r1[x0 + 1] - r1[x0])
                        m = top + fy * (bottom - top)
                    elif inner:  # every tap of this sample lies outside the box, where the sprite is zero
                        m = 0.0
                    else:
                        m = bilinear(sprite, su, sv)
                    v = m * cmax
                    hit = v > vrow[x]
                    vrow[x] = v if hit else vrow[x]
                    orow[x] = obj_id if hit else orow[x]
                    for ch in range(nc):
                        val = m * colour[ch]
                        if additive:
                            frame[ch, y, x] += val
                        else:
                            frame[ch, y, x] = max(frame[ch, y, x], val)
                    su += ct
                    sv += st


@njit(cache=True, no_cfunc_wrapper=True)
def object_layer(h, w, sprite, cx, cy, theta, reach, wrap, out):
    """One sprite alone at a pose (brightness 1): the same sampling as draw_sprite, for masks and tests."""
    frame = np.zeros((1, h, w), np.float32)
    owner = np.zeros((h, w), np.int16)
    vmax = np.zeros((h, w), np.float32)
    draw_sprite(frame, owner, vmax, 1, sprite, cx, cy, theta, reach, np.ones(1, np.float32), wrap, False)
    out[:, :] = frame[0]


SUPPORT_FLOOR = 1e-7  # evolving mass below this (a 4e-5 fraction of one grey level) is dropped from the sprite


@njit(cache=True, no_cfunc_wrapper=True)
def mass_support(img, lo, hi, floor, c):
    """Support of the mass above `floor` inside the window [lo, hi)²: (box_lo, box_hi, reach).

    [box_lo, box_hi) is the smallest square range of rows and columns holding it, and reach bounds how far from the
    centre (c, c) a bilinear sample can be non-zero: the farthest such pixel plus √2 (the four taps), rounded up to 1.5.
    An empty support gives an empty box at the centre and reach 0.
    """
    b_lo, b_hi = hi, lo
    far = -1.0
    for i in range(lo, hi):
        # Only a row's first and last pixels above the floor matter (the farthest of the row is one of them), so each
        # row is scanned from both ends and its middle is skipped.
        first = lo
        while first < hi and not img[i, first] > floor:
            first += 1
        if first == hi:
            continue
        last = hi - 1
        while not img[i, last] > floor:
            last -= 1
        b_lo = min(b_lo, i, first)
        b_hi = max(b_hi, i + 1, last + 1)
        di = (i - c) * (i - c)
        far = max(far, di + (first - c) * (first - c), di + (last - c) * (last - c))
    if far < 0.0:
        mid = int(c)
        return mid, mid, 0.0
    return b_lo, b_hi, math.sqrt(far) + 1.5


@njit(cache=True, no_cfunc_wrapper=True)
def refill_every_frame(tex):
    """Whether the fill phase changes at every frame of tex (T, 5), so that a fill is never reused later."""
    for t in range(1, tex.shape[0]):
        if tex[t, 3] == tex[t - 1, 3]:
            return False
    return True


@njit(cache=True, no_cfunc_wrapper=True)
def compose_sequence(masses, kernels, evolve, tex, poses, reaches, colours, background, additive, wrap,
                     clean, owner, value_max, masks, want_masks, sprite_hist, sprite_slot, reach_hist, want_hist):
    """Draw all frames of a sequence in one call.

    masses (N, S, S): each object's mass image M_0; evolving objects follow M_t = K * M_{t−1} (paper §3.2: a kernel
    of sum g per time step). tex (N, T, 5) fill parameters per frame; poses (N, T, 3) (cx, cy, θ); reaches (N, T);
    colours (N, C); background (T, 5) (level, frequency, orientation, phase, contrast; level 0 = none).
    Writes clean (T, C, H, W) clipped to [0, 1], owner/value_max (T, H, W), and masks (T, N', H, W) when want_masks;
    with want_hist, for kernels.flow: each object's sprite as drawn at frame t is sprite_hist[sprite_slot[t, k], k]
    (sprite_hist (T, N, S, S), sprite_slot (T, N): a sprite is copied only in a frame where it changes — its mass
    evolved or its fill moved — and the frames that repeat it point back there), and reach_hist (T, N) holds the
    radius around its centre that holds every pixel it touched.
    """
    n, s, _ = masses.shape
    nt = clean.shape[0]
    h, w = clean.shape[2], clean.shape[3]
    cur = masses.copy()
    # np.empty and assignments rather than np.zeros/np.ones/np.full: fewer numba overloads to compile on a first run
    tmp = np.empty((s, s), np.float32)
    fill = np.empty((n, s, s), np.float32)
    sprites = np.empty((n, s, s), np.float32)
    scratch = np.empty((1, h, w), np.float32)
    so = np.empty((h, w), np.int16)
    sv = np.empty((h, w), np.float32)
    one = np.empty(1, np.float32)
    tmp[:, :] = 0.0
    fill[:] = 0.0
    so[:] = 0
    sv[:] = 0.0
    c = 0.5 * (s - 1)
    r = kernels.shape[1] // 2
    # The square [box_lo, box_hi) of sprite rows/columns holding mass and the Euclidean radius of that mass around the
    # centre; for evolving objects tracked per frame instead of the worst case `reaches` (which grows by r every frame
    # while a narrow Gaussian leaves almost nothing out there).
    box_lo = np.empty(n, np.int64)  # all three set by the loop below
    box_hi = np.empty(n, np.int64)
    radius = np.empty(n, np.float64)
    for k in range(n):  # every sprite M_t ⊙ fill is zero outside its object's box (the draw skips those pixels)
        # np.int64/np.float32: the same argument types as the call below, so one compiled variant serves both (a
        # literal 0 or a float64 floor would compile a second one; the comparisons are the same).
        box_lo[k], box_hi[k], radius[k] = mass_support(cur[k], np.int64(0), s, np.float32(0.0), c)
    for t in range(nt):
        if background[t, 0] > 0:
            sine_background(clean[t], background[t, 0], background[t, 1], background[t, 2], background[t, 3],
                            background[t, 4])
        for k in range(n):
            new_fill = t == 0 or tex[k, t, 3] != tex[k, t - 1, 3]
            step = t > 0 and evolve[k]
            if step:
                # The mass lies within r of last frame's support: convolve and re-bake only that window (it also
                # holds every pixel of the old support, so stale sprite values are overwritten).
                lo = max(r, box_lo[k] - r)
                hi = min(s - r, box_hi[k] + r)
                convolve_window(cur[k], kernels[k], tmp, lo, hi)
                b_lo, b_hi, rad = mass_support(tmp, lo, hi, np.float32(SUPPORT_FLOOR), c)
                box_lo[k], box_hi[k], radius[k] = b_lo, b_hi, rad
                if new_fill:  # the fill only matters where the mass is now
                    texture_sprite(tex[k, t], fill[k], lo, hi)
                floor = np.float32(SUPPORT_FLOOR)
                for i in range(lo, hi):  # mass under SUPPORT_FLOOR is dropped, so `rad` bounds all that is left
                    # row slices from the window's start: indices from 0 vectorise (see convolve_window)
                    t_row, c_row, s_row, f_row = tmp[i, lo:hi], cur[k, i, lo:hi], sprites[k, i, lo:hi], fill[k, i, lo:hi]
                    for j in range(hi - lo):
                        v = t_row[j] if t_row[j] > floor else np.float32(0.0)
                        c_row[j] = v
                        s_row[j] = v * f_row[j]  # re-bake M_t ⊙ fill
            else:
                if new_fill:  # the fill only matters where the mass can ever be
                    if evolve[k] and refill_every_frame(tex[k]):
                        texture_sprite(tex[k, t], fill[k], box_lo[k], box_hi[k])
                    else:
                        texture_sprite(tex[k, t], fill[k], max(0, int(math.floor(c - reaches[k, nt - 1]))),
                                       min(s, int(math.ceil(c + reaches[k, nt - 1])) + 1))
                    for i in range(s):  # re-bake M_t ⊙ fill only when the fill changed
                        for j in range(s):
                            sprites[k, i, j] = cur[k, i, j] * fill[k, i, j]
            # The draw keeps a disk of radius `reach`: radius[k] bounds the mass's Euclidean distance exactly (tracked
            # per frame while it evolves); reaches[k, t] is Euclidean only for objects that do not spread (a 3×3
            # kernel spreads √2 px per step along diagonals).
            reach = radius[k] if evolve[k] else min(reaches[k, t], radius[k])
            cx, cy, th = poses[k, t, 0], poses[k, t, 1], poses[k, t, 2]
            if want_hist:
                if step or new_fill:  # the sprite changed (t = 0 has a new fill)
                    sprite_hist[t, k] = sprites[k]
                    sprite_slot[t, k] = t
                else:
                    sprite_slot[t, k] = sprite_slot[t - 1, k]
                reach_hist[t, k] = reach
            draw_sprite_box(clean[t], owner[t], value_max[t], k + 1, sprites[k], cx, cy, th, reach, colours[k],
                            wrap, additive, box_lo[k], box_hi[k])
            if want_masks:
                scratch[:, :, :] = 0.0
                one[0] = brightest(colours[k])
                draw_sprite_box(scratch, so, sv, np.int64(1), sprites[k], cx, cy, th, reach, one, wrap,
                                np.bool_(False), box_lo[k], box_hi[k])  # not literals: one compiled variant
                for y in range(h):
                    for x in range(w):
                        masks[t, k, y, x] = 1 if scratch[0, y, x] >= 1.0 / 255.0 else 0
        frame = clean[t]
        for ch in range(frame.shape[0]):  # growth and additive overlap can exceed 1: saturate
            for y in range(h):
                row = frame[ch, y]
                for x in range(w):
                    row[x] = min(max(row[x], np.float32(0.0)), np.float32(1.0))


@njit(cache=True, no_cfunc_wrapper=True)
def sine_background(frame, level, frequency, orientation, phase, contrast):
    """Fill `frame` (C, H, W) with level·(1 + contrast·sin(2π f (x cos φ + y sin φ) + phase)), clipped to [0, 1]."""
    nc, h, w = frame.shape
    k = 2.0 * math.pi * frequency
    cph, sph = math.cos(orientation), math.sin(orientation)
    for y in range(h):
        for x in range(w):
            val = level * (1.0 + contrast * math.sin(k * (x * cph + y * sph) + phase))
            val = min(1.0, max(0.0, val))
            for ch in range(nc):
                frame[ch, y, x] = val
