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
BOUNDARY_JUMP = 0.5  # pixels: neighbours of different owners whose flows differ by more are a motion boundary
# Bits of the appearance-change map (schema.APPEARANCE_BITS); NOISE is set by physvid.render once noise is added.
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
def _layer(sprites, support, poses, trig, t, k, x, y, h, w, wrap):
    """Object k's layer in frame t at the continuous point (x, y): its sprite sprites[t, k] drawn at its pose (poses,
    trig = cos θ, sin θ) sampled bilinearly with zeros outside (as raster.draw_sprite samples it at pixel centres),
    and ≥ 0; under wrap the largest of its nine copies. support[t, k] = (first row, last row + 1, first column, last
    column + 1) of the sprite's non-zero texels: a copy whose four texels all lie outside samples 0 and is skipped."""
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
            best = max(best, bilinear(sprites[t, k], u, v))
    return best


@njit(cache=True, no_cfunc_wrapper=True)
def _supports(sprites, support):
    """support (T, n, 4): rows [r0, r1) and columns [c0, c1) that hold sprites[t, k]'s non-zero texels ((s, 0, s, 0)
    when it has none)."""
    nt, n, s = sprites.shape[0], sprites.shape[1], sprites.shape[2]
    for t in range(nt):
        for k in range(n):
            r0, r1, c0, c1 = s, 0, s, 0
            for i in range(s):
                row = sprites[t, k, i]
                for j in range(s):
                    if row[j] != 0.0:
                        r0, r1 = min(r0, i), i + 1
                        c0, c1 = min(c0, j), max(c1, j + 1)
            support[t, k, 0], support[t, k, 1], support[t, k, 2], support[t, k, 3] = r0, r1, c0, c1


@njit(cache=True, no_cfunc_wrapper=True)
def _near(poses, reach, t, j, x, y, h, w, wrap):
    """Whether object j can have a non-zero layer at (x, y) in frame t (within its drawn reach; always under wrap)."""
    r = reach[t, j] + 1.5
    return wrap or (abs(x - poses[j, t, 0]) <= r and abs(y - poses[j, t, 1]) <= r)


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def covered(sprites, support, reach, cmax, poses, trig, t, k, x, y, h, w, wrap):
    """Whether another object hides object k's layer at (x, y) in frame t: by the compositing rule the brightest layer
    (value × brightest colour channel) shows, and of equal ones the first drawn. trig (n, T, 2): cos θ, sin θ;
    reach (T, n): radius around each centre that holds every pixel the object touched (others are skipped)."""
    n = cmax.shape[0]
    vk = 0.0
    known = False  # vk is computed when needed
    for j in range(n):
        if j == k or not _near(poses, reach, t, j, x, y, h, w, wrap):
            continue
        vj = _layer(sprites, support, poses, trig, t, j, x, y, h, w, wrap) * cmax[j]
        if vj == 0.0 and cmax[k] >= 0.0:
            continue  # vk >= 0 (a layer is >= 0): neither test below can hold
        if not known:
            vk = _layer(sprites, support, poses, trig, t, k, x, y, h, w, wrap) * cmax[k]
            known = True
        if vj > vk or (j < k and vj == vk and vj > 0.0):
            return True
    return False


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
    """lab (T, H, W): 1 + the object that shows at each pixel, 0 for background (lab zeroed by the caller); rects
    (T, n, 9, 4): the boxes [y_lo, y_hi) × [x_lo, x_hi) of `_boxes` shrunk to the rows and columns that hold the
    object's id in that frame (empty ones dropped), counts (T, n) how many. An object owns pixels only inside its
    boxes (the draw stays within `reach` of each copy's centre, and owner is 0 where nothing was drawn), so only the
    boxes are labelled and every later pass visits these rectangles only (¼ of the boxes' area on bench_flow's
    workload, ~1/10 of the frame)."""
    nt, h, w = lab.shape
    n = counts.shape[1]
    boxes = np.empty((9, 4), np.int64)
    for f in range(nt):
        for k in range(n):
            own = k + 1
            m = 0
            for b in range(_boxes(poses, reach, f, k, h, w, wrap, boxes)):
                y_lo, y_hi, x_lo, x_hi = h, 0, w, 0  # empty until a row holds the object
                for y in range(boxes[b, 0], boxes[b, 1]):
                    o_row, v_row, row = owner[f, y], vmax[f, y], lab[f, y]
                    for x in range(boxes[b, 2], boxes[b, 3]):
                        row[x] = o_row[x] if v_row[x] >= VISIBLE else 0
                    first = boxes[b, 2]
                    while first < boxes[b, 3] and row[first] != own:
                        first += 1
                    if first >= boxes[b, 3]:  # none here (or an empty box: an object off the frame's side)
                        continue
                    last = boxes[b, 3] - 1
                    while row[last] != own:
                        last -= 1
                    y_lo, y_hi = min(y_lo, y), y + 1
                    x_lo, x_hi = min(x_lo, first), max(x_hi, last + 1)
                if y_lo < y_hi:  # found
                    rects[f, k, m, 0], rects[f, k, m, 1], rects[f, k, m, 2], rects[f, k, m, 3] = y_lo, y_hi, x_lo, x_hi
                    m += 1
            counts[f, k] = m


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def _row_clear(k, dst, y, x_lo, x_hi, cx, cy, ca, sa, dx, dy, poses, reach, h, w):
    """Whether every pixel of row y, columns [x_lo, x_hi), of object k (no wrap) moves to a point inside the frame
    that no other object is near in frame dst: then none of them is occluded, without the per-pixel tests. The
    points p + flow = c + d + M(Δθ)(p − c) of a row segment lie between those of its two ends; the 0.25 px margin
    is far above the rounding (~1e-13 px) of the per-pixel arithmetic the tests would use."""
    margin = 0.25
    ry = float(y) - cy
    ax, bx = float(x_lo) - cx, float(x_hi - 1) - cx
    tx0, tx1 = cx + dx + (ca * ax + sa * ry), cx + dx + (ca * bx + sa * ry)
    ty0, ty1 = cy + dy + (-sa * ax + ca * ry), cy + dy + (-sa * bx + ca * ry)
    t_lo, t_hi = min(tx0, tx1) - margin, max(tx0, tx1) + margin
    u_lo, u_hi = min(ty0, ty1) - margin, max(ty0, ty1) + margin
    if t_lo < -0.5 or t_hi > w - 0.5 or u_lo < -0.5 or u_hi > h - 0.5:
        return False
    for j in range(poses.shape[0]):
        r = reach[dst, j] + 1.5
        if j != k and t_hi >= poses[j, dst, 0] - r and t_lo <= poses[j, dst, 0] + r and \
                u_hi >= poses[j, dst, 1] - r and u_lo <= poses[j, dst, 1] + r:
            return False
    return True


@njit(cache=True, no_cfunc_wrapper=True)
def _pair(src, dst, sign, t, sprites, support, reach, cmax, poses, trig, shift, lab, wrap, rects, counts, inside,
          flow, occ, mb):
    """Flow from frame src to frame dst on src's pixels, its occlusion and motion-boundary masks (flow and mb zeroed
    by the caller). shift[k, t]: the centre's unfolded displacement from frame t to t + 1; sign −1 goes backwards.
    Only the pixels an object owns are visited (`_labels`' rectangles): everywhere else the background is static and
    visible in both frames, and a motion boundary needs an object pixel beside it. inside: (W,) uint8 scratch."""
    n = cmax.shape[0]
    h, w = lab.shape[1], lab.shape[2]
    here, there = lab[src], lab[dst]
    occ[:, :] = 0
    for j in range(n):  # background of src hidden where an object shows in dst (object pixels are set below)
        for b in range(counts[dst, j]):
            for y in range(rects[dst, j, b, 0], rects[dst, j, b, 1]):
                h_row, t_row, o_row = here[y], there[y], occ[y]
                for x in range(rects[dst, j, b, 2], rects[dst, j, b, 3]):
                    if h_row[x] == 0 and t_row[x] > 0:
                        o_row[x] = 1
    for k in range(n):
        own = k + 1
        turn = poses[k, dst, 2] - poses[k, src, 2]
        ca, sa = math.cos(turn), math.sin(turn)
        cx, cy = poses[k, src, 0], poses[k, src, 1]
        dx, dy = sign * shift[k, t, 0], sign * shift[k, t, 1]
        for b in range(counts[src, k]):
            x_lo, x_hi = rects[src, k, b, 2], rects[src, k, b, 3]
            for y in range(rects[src, k, b, 0], rects[src, k, b, 1]):
                h_row, o_row, u_row, v_row = here[y], occ[y], flow[0, y], flow[1, y]
                if not wrap and _row_clear(k, dst, y, x_lo, x_hi, cx, cy, ca, sa, dx, dy, poses, reach, h, w):
                    ry = float(y) - cy  # _offset without wrap
                    for x in range(x_lo, x_hi):
                        if h_row[x] == own:
                            rx = float(x) - cx
                            u_row[x] = dx + (ca * rx + sa * ry) - rx
                            v_row[x] = dy + (-sa * rx + ca * ry) - ry
                    continue  # occ is 0 there already
                for x in range(x_lo, x_hi):
                    if h_row[x] != own:
                        continue
                    rx, ry = _offset(float(x), float(y), cx, cy, h, w, wrap)
                    fx = dx + (ca * rx + sa * ry) - rx
                    fy = dy + (-sa * rx + ca * ry) - ry
                    u_row[x] = fx
                    v_row[x] = fy
                    tx, ty = x + fx, y + fy
                    if tx < -0.5 or tx > w - 0.5 or ty < -0.5 or ty > h - 0.5:
                        o_row[x] = 1  # leaves the frame (under wrap too: it re-enters elsewhere, not at p + flow)
                    elif covered(sprites, support, reach, cmax, poses, trig, dst, k, tx, ty, h, w, wrap):
                        o_row[x] = 1
    for k in range(n):  # both pixels of a pair with different owners and flows; one of them is an object's
        own = k + 1
        for b in range(counts[src, k]):
            x_lo, x_hi = rects[src, k, b, 2], rects[src, k, b, 3]
            for y in range(rects[src, k, b, 0], rects[src, k, b, 1]):
                row = here[y]
                # inside[x]: all 8 neighbours of (y, x) are the object's too (no boundary there); one vectorised pass
                # over the row instead of a test per pixel
                i_lo, i_hi = x_lo, x_lo
                if 0 < y < h - 1:
                    i_lo, i_hi = max(x_lo, 1), min(x_hi, w - 1)
                    a, c = here[y - 1], here[y + 1]
                    for x in range(i_lo, i_hi):
                        inside[x] = (a[x - 1] == own) & (a[x] == own) & (a[x + 1] == own) & (row[x - 1] == own) & \
                            (row[x + 1] == own) & (c[x - 1] == own) & (c[x] == own) & (c[x + 1] == own)
                for x in range(x_lo, x_hi):
                    if row[x] == own and not (i_lo <= x < i_hi and inside[x]):
                        _boundary(here, flow, mb, y, x)


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def _boundary(lab, flow, mb, y, x):
    """Mark (y, x) and every 8-neighbour with another owner whose flow is more than BOUNDARY_JUMP away."""
    h, w = lab.shape
    own = lab[y, x]
    for dy in range(-1, 2):
        for dx in range(-1, 2):
            yy, xx = y + dy, x + dx
            if 0 <= yy < h and 0 <= xx < w and lab[yy, xx] != own:
                du, dv = flow[0, y, x] - flow[0, yy, xx], flow[1, y, x] - flow[1, yy, xx]
                if du * du + dv * dv > BOUNDARY_JUMP * BOUNDARY_JUMP:
                    mb[y, x] = 1
                    mb[yy, xx] = 1


@njit(cache=True, no_cfunc_wrapper=True)
def _appearance(t, lab, evolve, drift, bg_drift, table, rects, counts, app):
    """Appearance bits of frame t's pixels for the pair t → t+1, by the owners at t (a) and at t + 1 (b)."""
    n = evolve.shape[0]
    for a in range(n + 1):
        for b in range(n + 1):
            bits = 0
            if a > 0:
                bits |= INTENSITY_CHANGE if evolve[a - 1] else 0
                bits |= TEXTURE_DRIFT if drift[a - 1, t] else 0
            else:  # background: a growing object's mass may spread onto it; a sine background may drift
                bits |= INTENSITY_CHANGE if b > 0 and evolve[b - 1] else 0
                bits |= TEXTURE_DRIFT if bg_drift[t] else 0
            table[a, b] = bits
    app[:, :] = table[0, 0]  # background in both frames; pixels an object touches at t or t + 1 below
    for j in range(n):
        for f in range(t, t + 2):
            for b in range(counts[f, j]):
                for y in range(rects[f, j, b, 0], rects[f, j, b, 1]):
                    for x in range(rects[f, j, b, 2], rects[f, j, b, 3]):
                        app[y, x] = table[lab[t, y, x], lab[t + 1, y, x]]


@njit(cache=True, no_cfunc_wrapper=True)
def motion_fields(sprites, reach, cmax, poses, shift, owner, vmax, evolve, drift, bg_drift, wrap, flows, flags):
    """Forward and backward flow, occlusion, motion boundaries and appearance change of every frame pair.

    Inputs (n objects in drawing order, owner ids 1..n): sprites (T, n, S, S) float32, each object's sprite as drawn
    at each frame; reach (T, n) the radius around its centre holding every pixel the draw touched; cmax (n,) its
    colour's brightest channel; poses (n, T, 3) drawn centre (pixels) and angle (radians); shift (n, T, 2) the
    centre's unfolded displacement from frame t to t + 1 (pixels); owner / vmax (T, H, W) the compositing's brightest
    object and its value; evolve (n,) bool: the object's mass changes (growth or decay kernel); drift (n, T) bool:
    its fill changes from t to t + 1; bg_drift (T,) bool: the background does.
    Outputs for pair t = 0 .. T−2: flows (2, T−1, 2, H, W) float32 — [0, t] forward t→t+1 on frame t's pixels,
    [1, t] backward t+1→t on frame t+1's pixels, channels (u, v); flags (5, T−1, H, W) uint8 — occlusion forward
    (visible at t, hidden or out of the frame at t+1), occlusion backward, motion boundary forward, backward, and the
    appearance change (bits INTENSITY_CHANGE, TEXTURE_DRIFT) of frame t's pixels.
    """
    nt, h, w = owner.shape
    n = cmax.shape[0]
    lab = np.empty((nt, h, w), np.int16)
    lab[:] = 0
    rects = np.empty((nt, n, 9, 4), np.int64)
    counts = np.empty((nt, n), np.int64)
    _labels(owner, vmax, reach, poses, wrap, lab, rects, counts)
    inside = np.empty(w, np.uint8)
    support = np.empty((nt, n, 4), np.int64)
    _supports(sprites, support)
    trig = np.empty((n, nt, 2), np.float64)
    for k in range(n):
        for t in range(nt):
            trig[k, t, 0], trig[k, t, 1] = math.cos(poses[k, t, 2]), math.sin(poses[k, t, 2])
    flows[:] = 0.0
    flags[2:4] = 0
    table = np.empty((n + 1, n + 1), np.uint8)
    for t in range(nt - 1):
        _pair(t, t + 1, 1.0, t, sprites, support, reach, cmax, poses, trig, shift, lab, wrap, rects, counts, inside,
              flows[0, t], flags[0, t], flags[2, t])
        _pair(t + 1, t, -1.0, t, sprites, support, reach, cmax, poses, trig, shift, lab, wrap, rects, counts, inside,
              flows[1, t], flags[1, t], flags[3, t])
        _appearance(t, lab, evolve, drift, bg_drift, table, rects, counts, flags[4, t])
