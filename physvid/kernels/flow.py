"""Exact motion ground truth from the poses and sprites the renderer drew (twin: reference.motion_fields_reference).

Conventions (docs/flow.md): pixel (row i, column j) has its centre at (x, y) = (j, i); flow (u, v) = (Δx along
columns, Δy along rows) in pixels. An object's surface point at offset r from its centre at frame t sits at offset
M(Δθ)·r from its centre at frame t', with M(a) = [[cos a, sin a], [−sin a, cos a]] (the drawing's x = cx + u cosθ +
v sinθ, y = cy − u sinθ + v cosθ), so the flow of a pixel p owned by an object is d + (M(Δθ) − I)(p − c): d the
centre's displacement (for wrap the unfolded one), Δθ the angle's change. Background and static (intensity) objects
have flow 0.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .raster import bilinear

VISIBLE = 1.0 / 255.0  # as the property map: an object owns a pixel where its layer shows by at least one grey level
# the least float32 >= VISIBLE: for a float32 value v, v >= VISIBLE32 in float32 is v >= VISIBLE in float64 (a float32
# comparison vectorises, one that widens to float64 first does not)
VISIBLE32 = float(np.float32(VISIBLE)) if float(np.float32(VISIBLE)) >= VISIBLE else \
    float(np.nextafter(np.float32(VISIBLE), np.float32(1.0)))
BOUNDARY_JUMP = 0.5  # pixels: neighbours of different owners whose flows differ by more are a motion boundary
# Bits of the appearance-change map (schema.APPEARANCE_BITS); NOISE is set once noise is added
# (pipeline.render_batch_noisy, physvid.render.render_sequence).
INTENSITY_CHANGE, TEXTURE_DRIFT, NOISE = 1, 2, 4


@njit(cache=True, no_cfunc_wrapper=True)
def _offset(px, py, cx, cy, h, w, wrap):
    """p − c; under wrap to the nearest drawn copy (exact while the object is smaller than half the frame)."""
    rx, ry = px - cx, py - cy
    if wrap:
        rx -= w * math.floor(rx / w + 0.5)
        ry -= h * math.floor(ry / h + 0.5)
    return rx, ry


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def _layer(sprites, slot, support, poses, trig, t, k, x, y, h, w, wrap):
    """Object k's layer in frame t at the continuous point (x, y): its sprite sprites[slot[t, k], k] drawn at its pose
    (poses, trig = cos θ, sin θ) sampled bilinearly with zeros outside (as raster.draw_sprite samples it at pixel
    centres), and ≥ 0; under wrap the largest of its nine copies. support[t, k] = (first row, last row + 1, first
    column, last column + 1) of the sprite's non-zero texels: a copy whose four texels all lie outside samples 0 and
    is skipped."""
    c = 0.5 * (sprites.shape[2] - 1)
    cx, cy, ct, st = poses[k, t, 0], poses[k, t, 1], trig[k, t, 0], trig[k, t, 1]
    best = 0.0
    copies = 1 if wrap else 0
    for sy in range(-copies, copies + 1):
        for sx in range(-copies, copies + 1):
            dx, dy = x - (cx + sx * w), y - (cy + sy * h)
            u, v = ct * dx - st * dy + c, st * dx + ct * dy + c
            # texels floor(u), floor(u) + 1 (and rows likewise) all outside the support: the sample is 0
            if u < support[t, k, 2] - 1 or u >= support[t, k, 3] or v < support[t, k, 0] - 1 or v >= support[t, k, 1]:
                continue
            best = max(best, bilinear(sprites[slot[t, k], k], u, v))
    return best


@njit(cache=True, no_cfunc_wrapper=True)
def _supports(sprites, slot, support):
    """support (T, n, 4): rows [r0, r1) and columns [c0, c1) that hold the non-zero texels of object k's sprite in
    frame t, sprites[slot[t, k], k] ((s, 0, s, 0) when it has none); measured once per sprite (slot[t, k] == t), copied
    for the frames that repeat it. Branch-free passes: which rows and which columns hold one, then their first and
    last."""
    nt, n, s = slot.shape[0], sprites.shape[1], sprites.shape[2]
    rows = np.empty(s, np.uint8)
    cols = np.empty(s, np.uint8)
    flat = sprites.reshape(sprites.size)  # C-contiguous (motion_fields' callers allocate it): unsigned flat indices
    for t in range(nt):                   # below, no row views (no reference counting per row)
        for k in range(n):
            f = slot[t, k]
            if f != t:  # the sprite of an earlier frame, measured there
                for c in range(4):
                    support[t, k, c] = support[f, k, c]
                continue
            cols[:] = 0
            for i in range(s):
                base = np.uint64(((t * n + k) * s + i) * s)
                any_ = np.uint8(0)
                for j in range(np.uint64(s)):
                    nz = np.uint8(flat[base + j] != 0.0)
                    cols[j] |= nz
                    any_ |= nz
                rows[i] = any_
            r0, r1, c0, c1 = s, 0, s, 0
            for i in range(s):
                if rows[i]:
                    r0, r1 = min(r0, i), i + 1
                if cols[i]:
                    c0, c1 = min(c0, i), i + 1
            support[t, k, 0], support[t, k, 1], support[t, k, 2], support[t, k, 3] = r0, r1, c0, c1


@njit(cache=True, no_cfunc_wrapper=True)
def _near(poses, reach, t, j, x, y, h, w, wrap):
    """Whether object j can have a non-zero layer at (x, y) in frame t (within its drawn reach; always under wrap)."""
    r = reach[t, j] + 1.5
    return wrap or (abs(x - poses[j, t, 0]) <= r and abs(y - poses[j, t, 1]) <= r)


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def covered(sprites, slot, support, reach, cmax, poses, trig, t, k, x, y, h, w, wrap):
    """Whether another object hides object k's layer at (x, y) in frame t: by the compositing rule the brightest layer
    (value × brightest colour channel) shows, and of equal ones the first drawn. trig (n, T, 2): cos θ, sin θ;
    reach (T, n): radius around each centre that holds every pixel the object touched (others are skipped)."""
    n = cmax.shape[0]
    vk = 0.0
    known = False  # vk is computed when needed
    for j in range(n):
        if j == k or not _near(poses, reach, t, j, x, y, h, w, wrap):
            continue
        vj = _layer(sprites, slot, support, poses, trig, t, j, x, y, h, w, wrap) * cmax[j]
        if vj == 0.0 and cmax[k] >= 0.0:
            continue  # vk >= 0 (a layer is >= 0): neither test below can hold
        if not known:
            vk = _layer(sprites, slot, support, poses, trig, t, k, x, y, h, w, wrap) * cmax[k]
            known = True
        if vj > vk or (j < k and vj == vk and vj > 0.0):
            return True
    return False


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def _layer_flat(sprites, slot, support, poses, trig, t, k, x, y):
    """`_layer` without wrap (one copy), branch-free: the same arithmetic in the same order, so the same value. A
    point outside the support is moved to the sprite's centre and its sample replaced by 0 (as `_layer` skips it);
    a texel outside the sprite reads as 0 and adds (weight ≥ 0) × 0 = +0, which leaves the (≥ +0) sum unchanged where
    raster.bilinear does not add it."""
    s_h, s_w = sprites.shape[2], sprites.shape[3]
    f = slot[t, k]
    c = 0.5 * (s_w - 1)
    cx, cy, ct, st = poses[k, t, 0], poses[k, t, 1], trig[k, t, 0], trig[k, t, 1]
    dx, dy = x - (cx + 0.0), y - (cy + 0.0)  # `_layer`'s x − (cx + sx·w) with sx = 0
    u, v = ct * dx - st * dy + c, st * dx + ct * dy + c
    inside = (u >= support[t, k, 2] - 1) & (u < support[t, k, 3]) & (v >= support[t, k, 0] - 1) & \
        (v < support[t, k, 1])
    u = u if inside else c
    v = v if inside else c
    x0f = math.floor(u)
    y0f = math.floor(v)
    fx, fy = u - x0f, v - y0f
    x0, y0 = int(x0f), int(y0f)
    in_y0, in_y1, in_x0, in_x1 = (0 <= y0) & (y0 < s_h), (0 <= y0 + 1) & (y0 + 1 < s_h), (0 <= x0) & (x0 < s_w), \
        (0 <= x0 + 1) & (x0 + 1 < s_w)
    ya, yb = min(max(y0, 0), s_h - 1), min(max(y0 + 1, 0), s_h - 1)
    xa, xb = min(max(x0, 0), s_w - 1), min(max(x0 + 1, 0), s_w - 1)
    t00 = sprites[f, k, ya, xa] if in_y0 & in_x0 else np.float32(0.0)
    t01 = sprites[f, k, ya, xb] if in_y0 & in_x1 else np.float32(0.0)
    t10 = sprites[f, k, yb, xa] if in_y1 & in_x0 else np.float32(0.0)
    t11 = sprites[f, k, yb, xb] if in_y1 & in_x1 else np.float32(0.0)
    val = 0.0
    val += (1 - fx) * (1 - fy) * t00
    val += fx * (1 - fy) * t01
    val += (1 - fx) * fy * t10
    val += fx * fy * t11
    return max(0.0, val if inside else 0.0)


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def _covered_flat(sprites, slot, support, reach, cmax, poses, trig, t, k, x, y):
    """`covered` without wrap, branch-free (its outcome is data-dependent): every layer is sampled, and a layer j that
    is not near, or samples 0 (when cmax[k] ≥ 0), cannot pass the test, as `covered` skips it. Same answer."""
    n = cmax.shape[0]
    vk = _layer_flat(sprites, slot, support, poses, trig, t, k, x, y) * cmax[k]
    hidden = False
    for j in range(n):
        if j == k:
            continue
        r = reach[t, j] + 1.5
        near = (abs(x - poses[j, t, 0]) <= r) & (abs(y - poses[j, t, 1]) <= r)
        vj = _layer_flat(sprites, slot, support, poses, trig, t, j, x, y) * cmax[j]
        hidden |= near & ((vj > vk) | ((j < k) & (vj == vk) & (vj > 0.0)))
    return hidden


@njit(cache=True, no_cfunc_wrapper=True)
def _boxes(poses, reach, f, j, h, w, wrap, out):
    """The pixel boxes [y_lo, y_hi) × [x_lo, x_hi) that object j's drawn copies can touch in frame f (half-side
    reach + 1.5 around each copy's centre; one copy, or nine under wrap) into out (9, 4); returns how many."""
    half = reach[f, j] + 1.5
    copies = 1 if wrap else 0
    count = 0
    for sy in range(-copies, copies + 1):
        cy = poses[j, f, 1] + sy * h
        for sx in range(-copies, copies + 1):
            cx = poses[j, f, 0] + sx * w
            out[count, 0] = max(0, int(math.floor(cy - half)))
            out[count, 1] = min(h, int(math.ceil(cy + half)) + 1)
            out[count, 2] = max(0, int(math.floor(cx - half)))
            out[count, 3] = min(w, int(math.ceil(cx + half)) + 1)
            count += 1
    return count


@njit(cache=True, no_cfunc_wrapper=True)
def _labels(owner, vmax, reach, poses, wrap, lab, rects, counts):
    """lab (T, H, W): 1 + the object that shows at each pixel, 0 for background; rects (T, n, 9, 4): the boxes
    [y_lo, y_hi) × [x_lo, x_hi) of `_boxes` shrunk to the rows and columns that hold the object's id in that frame
    (empty ones dropped), counts (T, n) how many. An object owns pixels only inside its boxes (the draw stays within
    `reach` of each copy's centre, and owner is 0 where nothing was drawn), so every later pass visits these
    rectangles only (¼ of the boxes' area on bench_flow's workload, ~1/10 of the frame). owner, vmax and lab are
    C-contiguous (the labels are one flat pass; a box is one flat pass per row)."""
    nt, h, w = lab.shape
    n = counts.shape[1]
    size = nt * h * w
    o1, v1, l1 = owner.reshape(size), vmax.reshape(size), lab.reshape(size)
    vis = np.float32(VISIBLE32)
    for i in range(size):  # a product, not a conditional: vectorises
        l1[i] = o1[i] * np.int16(v1[i] >= vis)
    boxes = np.empty((9, 4), np.int64)
    cols = np.empty(w, np.uint8)  # which columns of a box hold the object
    for f in range(nt):
        for k in range(n):
            own = np.int16(k + 1)
            m = 0
            for b in range(_boxes(poses, reach, f, k, h, w, wrap, boxes)):
                x0, ncol = boxes[b, 2], boxes[b, 3] - boxes[b, 2]
                if ncol <= 0:  # an empty box: an object off the frame's side
                    continue
                cols[:ncol] = 0
                y_lo, y_hi = h, 0  # empty until a row holds the object
                for y in range(boxes[b, 0], boxes[b, 1]):
                    # one flat pass per row (unsigned indices: no wrap-around code, it vectorises): whether the row
                    # holds the object, and in which columns
                    base, hit = np.uint64((f * h + y) * w + x0), np.uint8(0)
                    for j in range(np.uint64(ncol)):
                        mine = np.uint8(l1[base + j] == own)
                        cols[j] |= mine
                        hit |= mine
                    if hit:
                        y_lo, y_hi = min(y_lo, y), y + 1
                if y_lo < y_hi:  # found: its first and last column
                    first, last = 0, ncol - 1
                    while cols[first] == 0:
                        first += 1
                    while cols[last] == 0:
                        last -= 1
                    rects[f, k, m, 0], rects[f, k, m, 1] = y_lo, y_hi
                    rects[f, k, m, 2], rects[f, k, m, 3] = x0 + first, x0 + last + 1
                    m += 1
            counts[f, k] = m


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def _jump(l1, u1, v1, i, j, lim):
    """1 where pixels i and j have different owners and flows more than BOUNDARY_JUMP apart (float32, as
    |a − b| = |b − a| exactly: the order of the pair changes nothing)."""
    du, dv = u1[i] - u1[j], v1[i] - v1[j]
    return np.uint8(l1[i] != l1[j]) & np.uint8(du * du + dv * dv > lim)


@njit(cache=True, no_cfunc_wrapper=True)
def _boundaries(src, rects, counts, l1, u1, v1, east, west, h, w, rows, bands, bits, m1):
    """Motion boundaries m1 (H·W,) of frame src (labels l1, flows u1, v1, all flat): both pixels of every pair of
    8-neighbours with different owners whose flows differ by more than BOUNDARY_JUMP. Such a pair holds an object
    pixel, so its first pixel (in row-major order) lies in a row of an object's rectangle (`_labels`) or the row
    above: only those bands of whole rows are visited, in two flat passes that vectorise — the pairs to the east,
    south-west, south and south-east of each pixel as the bits 1, 2, 4, 8 of bits[w + 1 + i], then each pixel's mark
    from its own bits and its four other neighbours' (bits has w + 1 zeros in front, so that these reads stay in the
    array). east / west (H·W,): 1 where a pixel has a neighbour in its row to that side (a flat neighbour across the
    frame's side is no neighbour). rows (H,) uint8 and bands (H, 2) int64: work space."""
    size = h * w
    rows[:] = 0
    for k in range(counts.shape[1]):
        for b in range(counts[src, k]):
            for y in range(max(rects[src, k, b, 0] - 1, 0), rects[src, k, b, 1]):
                rows[y] = 1
    bits[:] = 0
    m1[:] = 0
    lim = np.float32(BOUNDARY_JUMP * BOUNDARY_JUMP)
    full = max(size - w - 1, 0)  # pixels below this have all four neighbours in the array
    nb, y = 0, 0
    while y < h:  # the bands: runs of such rows
        if rows[y] == 0:
            y += 1
            continue
        bands[nb, 0] = y
        while y < h and rows[y]:
            y += 1
        bands[nb, 1] = y
        nb += 1
    for band in range(nb):  # the pairs
        s, e = bands[band, 0] * w, bands[band, 1] * w
        stop = max(min(e, full), s)  # [s, stop): all four neighbours in the array; [stop, e): some outside
        # unsigned indices: numba adds no negative-index wrap-around to them, so the pass vectorises (and, unlike
        # slices, they cost no reference counting)
        base, ue, usw, uso, use = np.uint64(s), np.uint64(1), np.uint64(w - 1), np.uint64(w), np.uint64(w + 1)
        for j in range(np.uint64(max(stop - s, 0))):
            i = base + j
            a, b, c, d = u1[i] - u1[i + ue], v1[i] - v1[i + ue], u1[i] - u1[i + usw], v1[i] - v1[i + usw]
            te = np.uint8(l1[i] != l1[i + ue]) & np.uint8(a * a + b * b > lim) & east[i]
            tsw = np.uint8(l1[i] != l1[i + usw]) & np.uint8(c * c + d * d > lim) & west[i]
            a, b, c, d = u1[i] - u1[i + uso], v1[i] - v1[i + uso], u1[i] - u1[i + use], v1[i] - v1[i + use]
            tso = np.uint8(l1[i] != l1[i + uso]) & np.uint8(a * a + b * b > lim)
            tse = np.uint8(l1[i] != l1[i + use]) & np.uint8(c * c + d * d > lim) & east[i]
            bits[i + use] = te | (tsw << np.uint8(1)) | (tso << np.uint8(2)) | (tse << np.uint8(3))
        for i in range(stop, e):  # the frame's last row and a half: only the neighbours inside it
            x = i % w
            t = np.uint8(0)
            if x + 1 < w:
                t |= _jump(l1, u1, v1, i, i + 1, lim)
            if i + w < size:
                if x > 0:
                    t |= _jump(l1, u1, v1, i, i + w - 1, lim) << 1
                t |= _jump(l1, u1, v1, i, i + w, lim) << 2
                if x + 1 < w:
                    t |= _jump(l1, u1, v1, i, i + w + 1, lim) << 3
            bits[w + 1 + i] = t
    for band in range(nb):  # the marks: a band's pixels and the row below it (the far ends of its pairs)
        s, e = bands[band, 0] * w, min(bands[band, 1] * w + w + 1, size)
        # pixel i (bits[i + w + 1] its own pairs): the pair east of i − 1 (bits[i + w]), south-west of i − w + 1
        # (bits[i + 2]), south of i − w (bits[i + 1]), south-east of i − w − 1 (bits[i])
        base, one, two, we_, own = np.uint64(s), np.uint64(1), np.uint64(2), np.uint64(w), np.uint64(w + 1)
        for j in range(np.uint64(e - s)):
            i = base + j
            m1[i] = np.uint8(bits[i + own] != 0) | (bits[i + we_] & np.uint8(1)) | \
                ((bits[i + two] >> np.uint8(1)) & np.uint8(1)) | ((bits[i + one] >> np.uint8(2)) & np.uint8(1)) | \
                ((bits[i] >> np.uint8(3)) & np.uint8(1))


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def _rect_clear(k, dst, y_lo, y_hi, x_lo, x_hi, cx, cy, ca, sa, dx, dy, poses, reach, h, w):
    """Whether every pixel of the rectangle [y_lo, y_hi) × [x_lo, x_hi) of object k (no wrap) moves to a point inside
    the frame that no other object is near in frame dst: then none of them is occluded, without the per-pixel tests.
    The points p + flow = c + d + M(Δθ)(p − c) are an affine image of the rectangle: they lie within the box of its
    four corners' images; the 0.25 px margin is far above the rounding (~1e-13 px) of the per-pixel arithmetic the
    tests would use."""
    margin = 0.25
    t_lo, t_hi, u_lo, u_hi = math.inf, -math.inf, math.inf, -math.inf
    for ry in (float(y_lo) - cy, float(y_hi - 1) - cy):
        for rx in (float(x_lo) - cx, float(x_hi - 1) - cx):
            tx, ty = cx + dx + (ca * rx + sa * ry), cy + dy + (-sa * rx + ca * ry)
            t_lo, t_hi, u_lo, u_hi = min(t_lo, tx), max(t_hi, tx), min(u_lo, ty), max(u_hi, ty)
    t_lo, t_hi, u_lo, u_hi = t_lo - margin, t_hi + margin, u_lo - margin, u_hi + margin
    if t_lo < -0.5 or t_hi > w - 0.5 or u_lo < -0.5 or u_hi > h - 0.5:
        return False
    for j in range(poses.shape[0]):
        r = reach[dst, j] + 1.5
        if j != k and t_hi >= poses[j, dst, 0] - r and t_lo <= poses[j, dst, 0] + r and \
                u_hi >= poses[j, dst, 1] - r and u_lo <= poses[j, dst, 1] + r:
            return False
    return True


@njit(cache=True, no_cfunc_wrapper=True)
def _pair(src, dst, sign, t, sprites, slot, support, reach, cmax, poses, trig, shift, lab, wrap, rects, counts,
          scratch, need, east, west, rows, bands, bits, flow, occ, mb):
    """Flow from frame src to frame dst on src's pixels, its occlusion and motion-boundary masks. shift[k, t]: the
    centre's unfolded displacement from frame t to t + 1; sign −1 goes backwards. Only the pixels an object owns are
    visited (`_labels`' rectangles): everywhere else the background is static and visible in both frames; motion
    boundaries in bands of rows around them (`_boundaries`, with east, west, rows, bands, bits). scratch (2, H·W)
    float64 and need (2, H·W) uint8: work space for one rectangle."""
    n = cmax.shape[0]
    h, w = lab.shape[1], lab.shape[2]
    size = h * w
    flow[:] = 0.0
    here1, there1, occ1 = lab[src].reshape(size), lab[dst].reshape(size), occ.reshape(size)
    for i in range(size):  # background of src hidden where an object shows in dst (object pixels are set below)
        occ1[i] = np.uint8(here1[i] == 0) & np.uint8(there1[i] > 0)
    u1, v1 = flow[0].reshape(size), flow[1].reshape(size)
    for k in range(n):
        own = k + 1
        turn = poses[k, dst, 2] - poses[k, src, 2]
        ca, sa = math.cos(turn), math.sin(turn)
        cx, cy = poses[k, src, 0], poses[k, src, 1]
        dx, dy = sign * shift[k, t, 0], sign * shift[k, t, 1]
        for b in range(counts[src, k]):
            y_lo, y_hi, x_lo, x_hi = rects[src, k, b, 0], rects[src, k, b, 1], rects[src, k, b, 2], rects[src, k, b, 3]
            if wrap:
                for y in range(y_lo, y_hi):
                    _row_wrap(k, own, dst, y, x_lo, x_hi, cx, cy, ca, sa, dx, dy, sprites, slot, support, reach, cmax,
                              poses, trig, h, w, lab[src, y], occ[y], flow[0, y], flow[1, y])
                continue
            m = x_hi - x_lo
            # unsigned flat indices, not row slices: no reference counting per row, and the loops still vectorise
            # (numba adds no negative-index wrap-around to an unsigned index)
            for y in range(y_lo, y_hi):  # the flows, stored only where the object shows: no branch
                p0 = np.uint64(y * w + x_lo)
                ry = float(y) - cy  # _offset without wrap
                for j in range(np.uint64(m)):
                    p = p0 + j
                    rx = float(x_lo) + float(j) - cx  # = float(x_lo + j) − cx: integers are exact in float64
                    fx = dx + (ca * rx + sa * ry) - rx
                    fy = dy + (-sa * rx + ca * ry) - ry
                    mine = here1[p] == own
                    u1[p] = np.float32(fx) if mine else u1[p]
                    v1[p] = np.float32(fy) if mine else v1[p]
            if _rect_clear(k, dst, y_lo, y_hi, x_lo, x_hi, cx, cy, ca, sa, dx, dy, poses, reach, h, w):
                continue  # no pixel of it is occluded: occ is 0 there already
            cells = m * (y_hi - y_lo)
            txs, tys, mines = scratch[0, :cells], scratch[1, :cells], need[1, :cells]
            for y in range(y_lo, y_hi):  # each pixel's target p + flow and owner for the occlusion tests, flat (a loop
                p0 = np.uint64(y * w + x_lo)  # of its own: the flows' loop with these stores in it does not vectorise)
                q0 = np.uint64((y - y_lo) * m)
                ry = float(y) - cy
                for j in range(np.uint64(m)):
                    p, q = p0 + j, q0 + j
                    rx = float(x_lo) + float(j) - cx
                    fx = dx + (ca * rx + sa * ry) - rx
                    fy = dy + (-sa * rx + ca * ry) - ry
                    txs[q], tys[q] = float(x_lo) + float(j) + fx, y + fy
                    mines[q] = np.uint8(here1[p] == own)
            _rect_occlusion(k, dst, y_lo, y_hi, x_lo, x_hi, sprites, slot, support, reach, cmax, poses, trig, h, w, occ,
                            txs, tys, mines, need[0, :cells])
    _boundaries(src, rects, counts, here1, u1, v1, east, west, h, w, rows, bands, bits, mb.reshape(size))


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def _rect_occlusion(k, dst, y_lo, y_hi, x_lo, x_hi, sprites, slot, support, reach, cmax, poses, trig, h, w, occ, txs,
                    tys, mines, need):
    """Occlusion of object k's pixels of the rectangle [y_lo, y_hi) × [x_lo, x_hi) (no wrap): txs, tys its pixels'
    targets p + flow and mines whether k owns them, row after row (flat, so that the passes vectorise over the whole
    rectangle rather than over its short rows): out of the frame, or `covered` in frame dst. `covered` runs only where
    another object j may show at p + flow: within `_near` of it and inside its sprite's support as `_layer` maps the
    point (with a margin of 1e-6 texels over that test's rounding); everywhere else its answer is False (a layer with
    no texel there samples 0). need: bit 0 out of the frame, bit 1 `covered` to run."""
    n = cmax.shape[0]
    m = x_hi - x_lo
    cells = txs.shape[0]
    everywhere = np.uint8(cmax[k] < 0.0)  # a negative colour: vk < 0, `covered` decides everywhere
    for q in range(cells):
        tx, ty = txs[q], tys[q]
        out = np.uint8(tx < -0.5) | np.uint8(tx > w - 0.5) | np.uint8(ty < -0.5) | np.uint8(ty > h - 0.5)
        mine = mines[q]
        need[q] = (mine & out) | ((mine & (out ^ 1) & everywhere) << 1)
    c = 0.5 * (sprites.shape[2] - 1)
    eps = 1e-6
    for j in range(n):
        if j == k:
            continue
        r = reach[dst, j] + 1.5
        pjx, pjy, ct, st = poses[j, dst, 0], poses[j, dst, 1], trig[j, dst, 0], trig[j, dst, 1]
        u_lo, u_hi = support[dst, j, 2] - 1 - eps, support[dst, j, 3] + eps
        v_lo, v_hi = support[dst, j, 0] - 1 - eps, support[dst, j, 1] + eps
        for q in range(cells):
            tx, ty = txs[q], tys[q]
            ex, ey = tx - pjx, ty - pjy
            u, v = ct * ex - st * ey + c, st * ex + ct * ey + c
            near = np.uint8(abs(ex) <= r) & np.uint8(abs(ey) <= r) & np.uint8(u >= u_lo) & np.uint8(u < u_hi) & \
                np.uint8(v >= v_lo) & np.uint8(v < v_hi)
            out = np.uint8(tx < -0.5) | np.uint8(tx > w - 0.5) | np.uint8(ty < -0.5) | np.uint8(ty > h - 0.5)
            need[q] |= (near & (out ^ 1) & mines[q]) << 1
    for q in range(cells):
        d = need[q]
        if d == 0:
            continue
        y, x = y_lo + q // m, x_lo + q % m
        if d & 1 or _covered_flat(sprites, slot, support, reach, cmax, poses, trig, dst, k, txs[q], tys[q]):
            occ[y, x] = 1


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def _row_wrap(k, own, dst, y, x_lo, x_hi, cx, cy, ca, sa, dx, dy, sprites, slot, support, reach, cmax, poses, trig, h,
              w, h_row, o_row, u_row, v_row):
    """Flow and occlusion of object k's pixels of row y, columns [x_lo, x_hi), under wrap: offsets to the nearest
    drawn copy, and `covered` over every copy."""
    for x in range(x_lo, x_hi):
        if h_row[x] != own:
            continue
        rx, ry = _offset(float(x), float(y), cx, cy, h, w, True)
        fx = dx + (ca * rx + sa * ry) - rx
        fy = dy + (-sa * rx + ca * ry) - ry
        u_row[x] = fx
        v_row[x] = fy
        tx, ty = x + fx, y + fy
        if tx < -0.5 or tx > w - 0.5 or ty < -0.5 or ty > h - 0.5:
            o_row[x] = 1  # leaves the frame (it re-enters elsewhere, not at p + flow)
        elif covered(sprites, slot, support, reach, cmax, poses, trig, dst, k, tx, ty, h, w, True):
            o_row[x] = 1


@njit(cache=True, no_cfunc_wrapper=True)
def _appearance(t, lab, evolve, drift, bg_drift, app):
    """Appearance bits of frame t's pixels for the pair t → t+1, by the owners at t (a) and at t + 1 (b): an object
    pixel (a > 0) has its own bits, a background pixel INTENSITY_CHANGE where a growing object shows at t + 1 (its
    mass may spread there) and TEXTURE_DRIFT where the sine background drifts. One flat pass, the per-owner flags
    as bit masks (bit a: owner a; owners ≤ 62, config allows 16)."""
    n = evolve.shape[0]
    grows, drifts = 0, 0
    for k in range(n):
        grows |= (1 << (k + 1)) if evolve[k] else 0
        drifts |= (1 << (k + 1)) if drift[k, t] else 0
    bg = TEXTURE_DRIFT if bg_drift[t] else 0
    h, w = app.shape
    size = h * w
    a1, b1, out = lab[t].reshape(size), lab[t + 1].reshape(size), app.reshape(size)
    if n <= 4:  # few owners: one compare-and-or pass per owner and bit (narrow lanes, no variable shifts), same bits
        z8 = np.uint8(bg)
        for i in range(size):
            out[i] = np.uint8(a1[i] == 0) * z8
        for k in range(n):
            own = np.int16(k + 1)
            mine = np.uint8(INTENSITY_CHANGE if evolve[k] else 0) | np.uint8(TEXTURE_DRIFT if drift[k, t] else 0)
            if mine:  # object k's own pixels
                for i in range(size):
                    out[i] |= np.uint8(a1[i] == own) * mine
            if evolve[k]:  # background pixels where growing object k shows at t + 1
                for i in range(size):
                    out[i] |= (np.uint8(a1[i] == 0) & np.uint8(b1[i] == own)) * np.uint8(INTENSITY_CHANGE)
        return
    g, d, z = np.int64(grows), np.int64(drifts), np.int64(bg)
    for i in range(size):
        a, b = np.int64(a1[i]), np.int64(b1[i])
        obj = ((g >> a) & 1) * INTENSITY_CHANGE | ((d >> a) & 1) * TEXTURE_DRIFT
        back = ((g >> b) & 1) * INTENSITY_CHANGE | z
        out[i] = np.uint8(obj if a > 0 else back)


@njit(cache=True, no_cfunc_wrapper=True)
def motion_fields(sprites, slot, reach, cmax, poses, shift, owner, vmax, evolve, drift, bg_drift, wrap, flows,
                  flags):
    """Forward and backward flow, occlusion, motion boundaries and appearance change of every frame pair.

    Inputs (n objects in drawing order, owner ids 1..n): sprites (T, n, S, S) float32 and slot (T, n) int64: object
    k's sprite as drawn at frame t is sprites[slot[t, k], k] (slot[t, k] ≤ t: a sprite is stored once, in the frame
    where it changed; the other slots are never read); reach (T, n) the radius around its centre holding every pixel
    the draw touched; cmax (n,) its colour's brightest channel; poses (n, T, 3) drawn centre (pixels) and angle
    (radians); shift (n, T, 2) the centre's unfolded displacement from frame t to t + 1 (pixels); owner / vmax
    (T, H, W) the compositing's brightest object and its value; evolve (n,) bool: the object's mass changes (growth
    or decay kernel); drift (n, T) bool: its fill changes from t to t + 1; bg_drift (T,) bool: the background does.
    Outputs for pair t = 0 .. T−2: flows (2, T−1, 2, H, W) float32 — [0, t] forward t→t+1 on frame t's pixels,
    [1, t] backward t+1→t on frame t+1's pixels, channels (u, v); flags (5, T−1, H, W) uint8 — occlusion forward
    (visible at t, hidden or out of the frame at t+1), occlusion backward, motion boundary forward, backward, and the
    appearance change (bits INTENSITY_CHANGE, TEXTURE_DRIFT) of frame t's pixels.
    """
    nt, h, w = owner.shape
    n = cmax.shape[0]
    lab = np.empty((nt, h, w), np.int16)
    rects = np.empty((nt, n, 9, 4), np.int64)
    counts = np.empty((nt, n), np.int64)
    _labels(owner, vmax, reach, poses, wrap, lab, rects, counts)
    scratch = np.empty((2, h * w), np.float64)
    need = np.empty((2, h * w), np.uint8)
    east = np.empty(h * w, np.uint8)  # a neighbour in the row to the east / west
    west = np.empty(h * w, np.uint8)
    for y in range(h):
        for x in range(w):
            east[y * w + x], west[y * w + x] = np.uint8(x + 1 < w), np.uint8(x > 0)
    rows = np.empty(h, np.uint8)
    bands = np.empty((h, 2), np.int64)
    bits = np.empty(h * w + w + 1, np.uint8)
    support = np.empty((nt, n, 4), np.int64)
    _supports(sprites, slot, support)
    trig = np.empty((n, nt, 2), np.float64)
    for k in range(n):
        for t in range(nt):
            trig[k, t, 0], trig[k, t, 1] = math.cos(poses[k, t, 2]), math.sin(poses[k, t, 2])
    for t in range(nt - 1):
        _pair(t, t + 1, 1.0, t, sprites, slot, support, reach, cmax, poses, trig, shift, lab, wrap, rects, counts,
              scratch, need, east, west, rows, bands, bits, flows[0, t], flags[0, t], flags[2, t])
        _pair(t + 1, t, -1.0, t, sprites, slot, support, reach, cmax, poses, trig, shift, lab, wrap, rects, counts,
              scratch, need, east, west, rows, bands, bits, flows[1, t], flags[1, t], flags[3, t])
        _appearance(t, lab, evolve, drift, bg_drift, flags[4, t])
