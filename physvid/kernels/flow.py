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


@njit(cache=True, no_cfunc_wrapper=True)
def layer_value(sprite, cx, cy, ct, st, x, y, h, w, wrap):
    """The sprite drawn at pose (cx, cy, θ) (ct, st = cos θ, sin θ) sampled at the continuous point (x, y), bilinear
    with zeros outside (as raster.draw_sprite samples it at pixel centres); under wrap the largest of its copies."""
    c = 0.5 * (sprite.shape[0] - 1)
    best = 0.0
    for sy in range(-1, 2):
        for sx in range(-1, 2):
            if (sx != 0 or sy != 0) and not wrap:
                continue
            dx, dy = x - (cx + sx * w), y - (cy + sy * h)
            best = max(best, bilinear(sprite, ct * dx - st * dy + c, st * dx + ct * dy + c))
    return best


@njit(cache=True, no_cfunc_wrapper=True)
def _near(poses, reach, t, j, x, y, h, w, wrap):
    """Whether object j can have a non-zero layer at (x, y) in frame t (within its drawn reach; always under wrap)."""
    r = reach[t, j] + 1.5
    return wrap or (abs(x - poses[j, t, 0]) <= r and abs(y - poses[j, t, 1]) <= r)


@njit(cache=True, no_cfunc_wrapper=True)
def covered(sprites, reach, cmax, poses, trig, t, k, x, y, h, w, wrap):
    """Whether another object hides object k's layer at (x, y) in frame t: by the compositing rule the brightest layer
    (value × brightest colour channel) shows, and of equal ones the first drawn. trig (n, T, 2): cos θ, sin θ;
    reach (T, n): radius around each centre that holds every pixel the object touched (others are skipped)."""
    n = cmax.shape[0]
    vk = -1.0  # computed when another object is near
    for j in range(n):
        if j == k or not _near(poses, reach, t, j, x, y, h, w, wrap):
            continue
        if vk < 0.0:
            vk = layer_value(sprites[t, k], poses[k, t, 0], poses[k, t, 1], trig[k, t, 0], trig[k, t, 1], x, y, h, w,
                             wrap) * cmax[k]
        vj = layer_value(sprites[t, j], poses[j, t, 0], poses[j, t, 1], trig[j, t, 0], trig[j, t, 1], x, y, h, w,
                         wrap) * cmax[j]
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
def _pair(src, dst, sign, t, sprites, reach, cmax, poses, trig, shift, lab, wrap, boxes, flow, occ, mb):
    """Flow from frame src to frame dst on src's pixels, its occlusion and motion-boundary masks (flow and mb zeroed
    by the caller). shift[k, t]: the centre's unfolded displacement from frame t to t + 1; sign −1 goes backwards.
    Only the pixels an object touches are visited (`_boxes`): everywhere else the background is static and visible in
    both frames, and a motion boundary needs an object pixel beside it. boxes: (9, 4) scratch."""
    n = cmax.shape[0]
    h, w = lab.shape[1], lab.shape[2]
    here, there = lab[src], lab[dst]
    occ[:, :] = 0
    for j in range(n):  # background of src hidden where an object shows in dst (object pixels are set below)
        for b in range(_boxes(poses, reach, dst, j, h, w, wrap, boxes)):
            for y in range(boxes[b, 0], boxes[b, 1]):
                for x in range(boxes[b, 2], boxes[b, 3]):
                    if here[y, x] == 0 and there[y, x] > 0:
                        occ[y, x] = 1
    for k in range(n):
        turn = poses[k, dst, 2] - poses[k, src, 2]
        ca, sa = math.cos(turn), math.sin(turn)
        cx, cy = poses[k, src, 0], poses[k, src, 1]
        for b in range(_boxes(poses, reach, src, k, h, w, wrap, boxes)):
            for y in range(boxes[b, 0], boxes[b, 1]):
                for x in range(boxes[b, 2], boxes[b, 3]):
                    if here[y, x] != k + 1:
                        continue
                    rx, ry = _offset(float(x), float(y), cx, cy, h, w, wrap)
                    fx = sign * shift[k, t, 0] + (ca * rx + sa * ry) - rx
                    fy = sign * shift[k, t, 1] + (-sa * rx + ca * ry) - ry
                    flow[0, y, x] = fx
                    flow[1, y, x] = fy
                    tx, ty = x + fx, y + fy
                    if tx < -0.5 or tx > w - 0.5 or ty < -0.5 or ty > h - 0.5:
                        occ[y, x] = 1  # leaves the frame (under wrap too: it re-enters elsewhere, not at p + flow)
                    else:
                        occ[y, x] = 1 if covered(sprites, reach, cmax, poses, trig, dst, k, tx, ty, h, w, wrap) else 0
    for k in range(n):  # both pixels of a pair with different owners and flows; one of them is an object's
        for b in range(_boxes(poses, reach, src, k, h, w, wrap, boxes)):
            for y in range(boxes[b, 0], boxes[b, 1]):
                for x in range(boxes[b, 2], boxes[b, 3]):
                    if here[y, x] == k + 1:
                        _boundary(here, flow, mb, y, x)


@njit(cache=True, no_cfunc_wrapper=True)
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
def _appearance(t, lab, reach, poses, evolve, drift, bg_drift, wrap, table, boxes, app):
    """Appearance bits of frame t's pixels for the pair t → t+1, by the owners at t (a) and at t + 1 (b)."""
    n = evolve.shape[0]
    h, w = lab.shape[1], lab.shape[2]
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
            for b in range(_boxes(poses, reach, f, j, h, w, wrap, boxes)):
                for y in range(boxes[b, 0], boxes[b, 1]):
                    for x in range(boxes[b, 2], boxes[b, 3]):
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
    lab = np.empty((nt, h, w), np.int16)  # 1 + the object that shows at each pixel, 0 for background
    for t in range(nt):
        for y in range(h):
            o_row, v_row, l_row = owner[t, y], vmax[t, y], lab[t, y]
            for x in range(w):
                l_row[x] = o_row[x] if v_row[x] >= VISIBLE else 0
    trig = np.empty((n, nt, 2), np.float64)
    for k in range(n):
        for t in range(nt):
            trig[k, t, 0], trig[k, t, 1] = math.cos(poses[k, t, 2]), math.sin(poses[k, t, 2])
    flows[:] = 0.0
    flags[2:4] = 0
    table = np.empty((n + 1, n + 1), np.uint8)
    boxes = np.empty((9, 4), np.int64)
    for t in range(nt - 1):
        _pair(t, t + 1, 1.0, t, sprites, reach, cmax, poses, trig, shift, lab, wrap, boxes, flows[0, t], flags[0, t],
              flags[2, t])
        _pair(t + 1, t, -1.0, t, sprites, reach, cmax, poses, trig, shift, lab, wrap, boxes, flows[1, t],
              flags[1, t], flags[3, t])
        _appearance(t, lab, reach, poses, evolve, drift, bg_drift, wrap, table, boxes, flags[4, t])
