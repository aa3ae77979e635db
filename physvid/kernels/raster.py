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


@njit(cache=True)
def _segment_distance(px, py, ax, ay, bx, by):
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    t = 0.0
    if ll > 0.0:
        t = ((px - ax) * dx + (py - ay) * dy) / ll
        t = min(1.0, max(0.0, t))
    ex, ey = px - (ax + t * dx), py - (ay + t * dy)
    return math.sqrt(ex * ex + ey * ey)


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def resample_sprite(src, size, out):
    """Scale a digit image (h×w) so that its longer side spans `size` pixels, centred in the sprite (bilinear)."""
    h, w = src.shape
    s = out.shape[0]
    c = 0.5 * (s - 1)
    scale = max(h, w) / size  # source pixels per sprite pixel
    for i in range(s):
        for j in range(s):
            out[i, j] = bilinear(src, (j - c) * scale + 0.5 * (w - 1), (i - c) * scale + 0.5 * (h - 1))


@njit(cache=True)
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


@njit(cache=True)
def _correlate_at(src, kernel, i, j):
    """Correlation at an interior pixel (every tap inside): no bounds checks."""
    kh, kw = kernel.shape
    rh, rw = kh // 2, kw // 2
    acc = 0.0
    for a in range(kh):
        for b in range(kw):
            acc += kernel[a, b] * src[i + a - rh, j + b - rw]
    return acc


@njit(cache=True)
def convolve_window(src, kernel, out, lo, hi):
    """`convolve_same` restricted to rows and columns [lo, hi), which must keep every tap inside the image.

    Used for the intensity step: the mass can only have spread `kernel radius` pixels per frame from the object, and
    the sprite's margin guarantees it never reaches the border, so the rest of `out` stays zero. Taps are the outer
    loops so that the inner loop runs along contiguous rows (vectorised).
    """
    kh, kw = kernel.shape
    rh, rw = kh // 2, kw // 2
    for i in range(lo, hi):
        for j in range(lo, hi):
            out[i, j] = 0.0
        for a in range(kh):
            for b in range(kw):
                kv = kernel[a, b]
                ii = i + a - rh
                off = b - rw
                for j in range(lo, hi):
                    out[i, j] += kv * src[ii, j + off]


@njit(cache=True)
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
    for i in range(lo, hi):
        for j in range(lo, hi):
            out[i, j] = 1.0 - tex[4] * 0.5 * (1.0 - math.sin(k * ((j - c) * cph + (i - c) * sph) + tex[3]))


@njit(cache=True)
def draw_sprite(frame, owner, value_max, obj_id, sprite, cx, cy, theta, reach, colour, wrap, additive):
    """Composite one object's sprite into `frame` (C, H, W) at pose (cx, cy, θ radians), bilinear, zeros outside.

    Only pixels within `reach` of the centre are visited (the caller knows how far the object's mass extends).
    `owner`/`value_max` (H, W) track which object is brightest at each pixel and its value there (property map).
    With `wrap` the object is also drawn shifted by ±W, ±H so that it re-enters on the opposite side.
    Overlap: `additive` sums (clipped later), otherwise the brightest object wins per pixel and channel.
    """
    nc, h, w = frame.shape
    s = sprite.shape[0]
    c = 0.5 * (s - 1)
    ct, st = math.cos(theta), math.sin(theta)
    cmax = colour.max()
    last = s - 1.0
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
                for x in range(x_lo, x_hi + 1):
                    if su >= 0.0 and sv >= 0.0 and su < last and sv < last:
                        # fast path, all four taps inside: truncation is floor for non-negative coordinates
                        x0, y0 = int(su), int(sv)
                        fx, fy = su - x0, sv - y0
                        top = sprite[y0, x0] + fx * (sprite[y0, x0 + 1] - sprite[y0, x0])
                        bottom = sprite[y0 + 1, x0] + fx * (sprite[y0 + 1, x0 + 1] - sprite[y0 + 1, x0])
                        m = top + fy * (bottom - top)
                    else:
                        m = bilinear(sprite, su, sv)
                    if m > 0.0:
                        if m * cmax > value_max[y, x]:
                            value_max[y, x] = m * cmax
                            owner[y, x] = obj_id
                        for ch in range(nc):
                            val = m * colour[ch]
                            if additive:
                                frame[ch, y, x] += val
                            elif val > frame[ch, y, x]:
                                frame[ch, y, x] = val
                    su += ct
                    sv += st


@njit(cache=True)
def object_layer(h, w, sprite, cx, cy, theta, reach, wrap, out):
    """One sprite alone at a pose (brightness 1): the same sampling as draw_sprite, for masks and tests."""
    frame = np.zeros((1, h, w), np.float32)
    owner = np.zeros((h, w), np.int16)
    vmax = np.zeros((h, w), np.float32)
    draw_sprite(frame, owner, vmax, 1, sprite, cx, cy, theta, reach, np.ones(1, np.float32), wrap, False)
    out[:, :] = frame[0]


@njit(cache=True)
def compose_sequence(masses, kernels, evolve, tex, poses, reaches, colours, background, additive, wrap,
                     clean, owner, value_max, masks, want_masks):
    """Draw all frames of a sequence in one call.

    masses (N, S, S): each object's mass image M_0; evolving objects follow M_t = K * M_{t−1} (paper §3.2: a kernel
    of sum g per time step). tex (N, T, 5) fill parameters per frame; poses (N, T, 3) (cx, cy, θ); reaches (N, T);
    colours (N, C); background (T, 5) (level, frequency, orientation, phase, contrast; level 0 = none).
    Writes clean (T, C, H, W) clipped to [0, 1], owner/value_max (T, H, W), and masks (T, N', H, W) when want_masks.
    """
    n, s, _ = masses.shape
    nt = clean.shape[0]
    h, w = clean.shape[2], clean.shape[3]
    cur = masses.copy()
    tmp = np.empty((s, s), np.float32)
    fill = np.zeros((n, s, s), np.float32)
    sprites = np.empty((n, s, s), np.float32)
    scratch = np.zeros((1, h, w), np.float32)
    so = np.zeros((h, w), np.int16)
    sv = np.zeros((h, w), np.float32)
    one = np.ones(1, np.float32)
    tmp[:, :] = 0.0
    c = 0.5 * (s - 1)
    for t in range(nt):
        if background[t, 0] > 0:
            sine_background(clean[t], background[t, 0], background[t, 1], background[t, 2], background[t, 3],
                            background[t, 4])
        for k in range(n):
            new_fill = t == 0 or tex[k, t, 3] != tex[k, t - 1, 3]
            if new_fill:  # the fill only matters where the mass can ever be
                texture_sprite(tex[k, t], fill[k], max(0, int(math.floor(c - reaches[k, nt - 1]))),
                               min(s, int(math.ceil(c + reaches[k, nt - 1])) + 1))
            lo, hi = 0, s
            if t > 0 and evolve[k]:
                # The mass lies within reaches[k, t] of the centre: convolve and re-bake only that window.
                r = kernels.shape[1] // 2
                lo = max(r, int(math.floor(c - reaches[k, t])))
                hi = min(s - r, int(math.ceil(c + reaches[k, t])) + 1)
                convolve_window(cur[k], kernels[k], tmp, lo, hi)
                cur[k, lo:hi, lo:hi] = tmp[lo:hi, lo:hi]
            if new_fill or (t > 0 and evolve[k]):  # re-bake M_t ⊙ fill only when the mass or the fill changed
                for i in range(lo, hi):
                    for j in range(lo, hi):
                        sprites[k, i, j] = cur[k, i, j] * fill[k, i, j]
            cx, cy, th = poses[k, t, 0], poses[k, t, 1], poses[k, t, 2]
            draw_sprite(clean[t], owner[t], value_max[t], k + 1, sprites[k], cx, cy, th, reaches[k, t], colours[k],
                        wrap, additive)
            if want_masks:
                scratch[:, :, :] = 0.0
                one[0] = colours[k].max()
                draw_sprite(scratch, so, sv, 1, sprites[k], cx, cy, th, reaches[k, t], one, wrap, False)
                for y in range(h):
                    for x in range(w):
                        masks[t, k, y, x] = 1 if scratch[0, y, x] >= 1.0 / 255.0 else 0
        frame = clean[t]
        for ch in range(frame.shape[0]):  # growth and additive overlap can exceed 1: saturate
            for y in range(h):
                for x in range(w):
                    frame[ch, y, x] = min(max(frame[ch, y, x], np.float32(0.0)), np.float32(1.0))


@njit(cache=True)
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
