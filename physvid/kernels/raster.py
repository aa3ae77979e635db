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
    """Anti-aliased coverage of a geometric shape: clamp(0.5 − signed distance, 0, 1) per pixel (a 1-pixel box filter)."""
    s = out.shape[0]
    c = 0.5 * (s - 1)
    for i in range(s):
        for j in range(s):
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
def draw_object(frame, owner, value_max, obj_id, sprite, cx, cy, theta, reach, colour, tex, wrap, additive):
    """Composite one object's sprite into `frame` (C, H, W) at pose (cx, cy, θ radians).

    Only pixels within `reach` of the centre are visited (the caller knows how far the object's mass extends).

    `tex` = (textured, frequency, orientation, phase, contrast): the object's fill is
    brightness·(1 − contrast·(1 − sin(2π f (u cos φ + v sin φ) + phase))/2), attached to the object.
    `owner`/`value_max` (H, W) track which object is brightest at each pixel and its value there (property map).
    With `wrap` the object is also drawn shifted by ±W, ±H so that it re-enters on the opposite side.
    """
    nc, h, w = frame.shape
    s = sprite.shape[0]
    c = 0.5 * (s - 1)
    ct, st = math.cos(theta), math.sin(theta)
    two_pi_f = 2.0 * math.pi * tex[1]
    cph, sph = math.cos(tex[2]), math.sin(tex[2])
    cmax = colour.max()
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
                for x in range(x_lo, x_hi + 1):
                    dx = x - ox
                    u = ct * dx - st * dy
                    v = st * dx + ct * dy
                    m = bilinear(sprite, u + c, v + c)
                    if m <= 0.0:
                        continue
                    if tex[0] > 0.5:
                        m *= 1.0 - tex[4] * 0.5 * (1.0 - math.sin(two_pi_f * (u * cph + v * sph) + tex[3]))
                    if m * cmax > value_max[y, x]:
                        value_max[y, x] = m * cmax
                        owner[y, x] = obj_id
                    for ch in range(nc):
                        val = m * colour[ch]
                        if additive:
                            frame[ch, y, x] += val
                        elif val > frame[ch, y, x]:
                            frame[ch, y, x] = val


@njit(cache=True)
def object_layer(h, w, sprite, cx, cy, theta, reach, tex, wrap, out):
    """The object's own layer (brightness 1) at a pose: used for masks and by tests; same sampling as draw_object."""
    frame = np.zeros((1, h, w), np.float32)
    owner = np.zeros((h, w), np.int16)
    vmax = np.zeros((h, w), np.float32)
    draw_object(frame, owner, vmax, 1, sprite, cx, cy, theta, reach, np.ones(1, np.float32), tex, wrap, False)
    out[:, :] = frame[0]


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
