"""Numba kernels that run a whole sequence, or a whole batch, from packed parameters: set-up + compositing + noise +
ratio calibration + quantisation, with no Python between the steps.

`render_objects` and `noise_mix` are what `physvid.render.render_clean` and `noise_field` call for one sequence;
`render_batch_noisy` runs `sample_objects`/`sample_sequence` (the twins of `render.sample_scene`) and both stages for
every sequence of a batch in one call, which removes ~a dozen Python→numba round trips and ~60 small NumPy calls per
sequence; `render_batch` is the same without noise, a kernel of its own so that noise-free configs compile less.
Column and config-slot constants: physvid.kernels.scene.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .flow import NOISE, motion_fields
from .motion import integrate_poses
from .noise import mix_noise, noise_scale_quantise, perlin_window, quantise
from .raster import compose_sequence, resample_sprite, shape_sprite
from .scene import (C_ADDITIVE, C_BOUNDARY, C_KERNEL, C_KERNEL_SIZE, C_OBJECT_SCOPE, DIGIT, F_ANG_A, F_ANG_J, F_ANG_V, F_ANGLE0,
                    F_ASPECT, F_AX, F_AY, F_B, F_BRIGHTNESS, F_G, F_GAIN, F_JX, F_JY, F_R, F_SIZE, F_SPREAD,
                    F_TEX_CONTRAST, F_TEX_DRIFT, F_TEX_FREQ, F_TEX_ORIENT, F_TEX_PHASE, F_THICKNESS, F_VX, F_VY, F_X0,
                    F_Y0, I_DIGIT, I_ROLE, I_SHAPE, I_SIDES, I_TEXTURED, INTENSITY, S_BG_CONTRAST, S_BG_DRIFT,
                    S_BG_FREQ, S_BG_LEVEL, S_BG_ORIENT, S_BG_PHASE, S_NOISE_RATIO, S_NOISE_SCALE, sample_objects,
                    sample_sequence)

KERNEL_CODES = {"gaussian": 0, "box": 1, "delta": 2}
NOISE_DRAWS = 8  # per channel: drift magnitude, drift direction, time origin, x origin, y origin, flip y, flip x, transpose
VISIBLE = 1.0 / 255.0  # a layer "touches" a pixel when it changes it by at least one grey level (masks, property map)
WHITE_SALT = 0x5DEECE66D  # the white field's key is the Gaussian key xor this


@njit(cache=True, no_cfunc_wrapper=True)
def gain_kernel(kind, size, gain, spread, out):
    """Convolution kernel (size × size) with sum `gain` (paper §3.2): delta, box, or a Gaussian of sigma `spread`."""
    r = size // 2
    k = np.empty((size, size), np.float64)
    k[:] = 0.0
    if kind == 2 or size == 1:
        k[r, r] = 1.0
    elif kind == 1:
        k[:, :] = 1.0
    else:
        for i in range(size):
            for j in range(size):
                a, b = float(i - r), float(j - r)
                k[i, j] = math.exp(-(a * a + b * b) / (2.0 * spread * spread))
    total = 0.0
    for i in range(size):
        for j in range(size):
            total += k[i, j]
    for i in range(size):
        for j in range(size):
            out[i, j] = np.float32(k[i, j] / total * gain)


@njit(cache=True, no_cfunc_wrapper=True)
def _spreading(pi, k, kernel):
    return pi[k, I_ROLE] == INTENSITY and kernel != 2


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def render_objects(pf, pi, verts, n, ids, ps, cfg, digits, clean, owner, vmax, masks, want_masks, flows, flags,
                   want_flow):
    """Draw objects `ids` of the first n (and the sine background) into clean (T, C, H, W) with owner/vmax (T, H, W)
    and, when want_masks, masks[t, row] for the row-th id. Same set-up as the Python renderer had: sprite side from all
    n objects, trajectories, reaches, sprites, gain kernels, per-frame fills, colours; then `compose_sequence`.
    With want_flow, also the motion ground truth of kernels.flow.motion_fields into flows (2, T−1, 2, H, W) and
    flags (5, T−1, H, W)."""
    nt, nc, h, w = clean.shape
    kernel, ksize = int(cfg[C_KERNEL]), int(cfg[C_KERNEL_SIZE])
    object_scope = cfg[C_OBJECT_SCOPE] > 0.5
    side = 3
    for k in range(n):  # the sprite's rim, plus room for the intensity kernel to spread over T frames
        margin = (ksize // 2) * nt if _spreading(pi, k, kernel) and object_scope else 0
        side = max(side, int(math.ceil(pf[k, F_SIZE])) + 3 + 2 * margin)
    m = ids.size
    # np.empty with an explicit dtype, zeroed by assignment where it matters: each np.zeros/np.empty of another shape
    # or dtype spelling is one more numba overload to compile on a first run (~0.05-0.1 s each).
    coeffs = np.empty((m, 3, 4), np.float64)
    radius = np.empty(m, np.float64)
    reaches = np.empty((m, nt), np.float64)
    masses = np.empty((m, side, side), np.float32)  # every row is drawn below
    kernels = np.empty((m, ksize, ksize), np.float32)
    kernels[:] = 0.0
    evolve = np.empty(m, np.bool_)
    evolve[:] = False
    tex = np.empty((m, nt, 5), np.float64)
    colours = np.empty((m, nc), np.float32)
    vz = np.empty((verts.shape[1], 2), np.float64)
    for row in range(m):
        k = ids[row]
        for d, base in enumerate((F_X0, F_Y0, F_ANGLE0)):
            coeffs[row, d, 0] = pf[k, base]
        coeffs[row, 0, 1], coeffs[row, 0, 2], coeffs[row, 0, 3] = pf[k, F_VX], pf[k, F_AX], pf[k, F_JX]
        coeffs[row, 1, 1], coeffs[row, 1, 2], coeffs[row, 1, 3] = pf[k, F_VY], pf[k, F_AY], pf[k, F_JY]
        coeffs[row, 2, 1], coeffs[row, 2, 2], coeffs[row, 2, 3] = pf[k, F_ANG_V], pf[k, F_ANG_A], pf[k, F_ANG_J]
        size = pf[k, F_SIZE]
        radius[row] = 0.5 * size
        half = 0.5 * size * math.sqrt(2.0) if pi[k, I_SHAPE] == DIGIT else 0.5 * size  # a digit's box spans `size`
        step = ksize // 2 if _spreading(pi, k, kernel) else 0
        for t in range(nt):
            reaches[row, t] = half + 2.0 + step * t
        if pi[k, I_SHAPE] == DIGIT:
            resample_sprite(digits[pi[k, I_DIGIT]], size, masses[row])
        else:
            for v in range(vz.shape[0]):
                for c in range(2):
                    x = verts[k, v, c]
                    vz[v, c] = 0.0 if np.isnan(x) else x
            shape_sprite(pi[k, I_SHAPE], 0.5 * size, pf[k, F_ASPECT], pf[k, F_THICKNESS], vz, max(pi[k, I_SIDES], 0),
                         masses[row])
        if pi[k, I_ROLE] == INTENSITY:
            gain_kernel(kernel, ksize, pf[k, F_GAIN], max(pf[k, F_SPREAD], 1e-3), kernels[row])
            evolve[row] = True
        phase = pf[k, F_TEX_PHASE] + pf[k, F_TEX_DRIFT] * 0.0
        for t in range(nt):
            tex[row, t, 0] = pi[k, I_TEXTURED]
            tex[row, t, 1] = pf[k, F_TEX_FREQ]
            tex[row, t, 2] = pf[k, F_TEX_ORIENT]
            tex[row, t, 3] = phase + pf[k, F_TEX_DRIFT] * t
            tex[row, t, 4] = pf[k, F_TEX_CONTRAST]
        if nc == 1:
            colours[row, 0] = pf[k, F_BRIGHTNESS]
        else:
            colours[row, 0], colours[row, 1], colours[row, 2] = pf[k, F_R], pf[k, F_G], pf[k, F_B]
    poses = np.empty((m, nt, 3), np.float64)
    integrate_poses(coeffs, radius, h, w, int(cfg[C_BOUNDARY]), poses)
    background = np.empty((nt, 5), np.float64)
    background[:] = 0.0
    if ps[S_BG_LEVEL] > 0:
        for t in range(nt):
            background[t, 0], background[t, 1] = ps[S_BG_LEVEL], ps[S_BG_FREQ]
            background[t, 2], background[t, 4] = ps[S_BG_ORIENT], ps[S_BG_CONTRAST]
            background[t, 3] = ps[S_BG_PHASE] + ps[S_BG_DRIFT] * t
    # np.empty of one spelling whatever want_flow is: one compiled variant (a 1-frame dummy when flow is off)
    hist = np.empty((nt if want_flow else 1, m, side, side), np.float32)
    slot = np.empty((nt if want_flow else 1, m), np.int64)
    reach_hist = np.empty((nt if want_flow else 1, m), np.float64)
    wrap = int(cfg[C_BOUNDARY]) == 2
    compose_sequence(masses, kernels, evolve, tex, poses, reaches, colours, background, cfg[C_ADDITIVE] > 0.5,
                     wrap, clean, owner, vmax, masks, want_masks, hist, slot, reach_hist, want_flow)
    if want_flow:
        _motion_truth(coeffs, radius, poses, hist, slot, reach_hist, colours, evolve, tex, background, h, w, wrap,
                      owner, vmax, flows, flags)


@njit(cache=True, no_cfunc_wrapper=True)
def _motion_truth(coeffs, radius, poses, hist, slot, reach_hist, colours, evolve, tex, background, h, w, wrap, owner,
                  vmax, flows, flags):
    """The inputs of kernels.flow.motion_fields from render_objects' set-up: unfolded displacements (the wrap rule
    moves the drawn centre by a whole frame, the object itself does not jump), brightest colour channels, and which
    fills change from one frame to the next."""
    m, nt = poses.shape[0], poses.shape[1]
    unfolded = np.empty((m, nt, 3), np.float64)
    integrate_poses(coeffs, radius, h, w, 0, unfolded)
    shift = np.empty((m, nt, 2), np.float64)
    drift = np.empty((m, nt), np.bool_)
    cmax = np.empty(m, np.float64)
    for k in range(m):
        cmax[k] = colours[k, 0]
        for ch in range(1, colours.shape[1]):
            cmax[k] = max(cmax[k], colours[k, ch])
        for t in range(nt):
            src = unfolded if wrap else poses
            nxt = min(t + 1, nt - 1)
            shift[k, t, 0] = src[k, nxt, 0] - src[k, t, 0]
            shift[k, t, 1] = src[k, nxt, 1] - src[k, t, 1]
            drift[k, t] = tex[k, t, 0] > 0.5 and tex[k, t, 4] > 0.0 and tex[k, nxt, 3] != tex[k, t, 3]
    bg_drift = np.empty(nt, np.bool_)
    for t in range(nt):
        nxt = min(t + 1, nt - 1)
        bg_drift[t] = background[t, 0] > 0.0 and background[t, 4] > 0.0 and background[nxt, 3] != background[t, 3]
    motion_fields(hist, slot, reach_hist, cmax, poses, shift, owner, vmax, evolve, drift, bg_drift, wrap, flows, flags)


@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def noise_mix(key, draws, bank, gaussian, white, perlin, drift, gtable, utable, out):
    """Mixed noise (T, C, H, W): Σ weight · field with every field at unit mean magnitude (docs/noise.md).

    Gaussian and white fields are counter-based hashes of `key` (Gaussian levels looked up in `gtable`; `mix_noise`
    computes the white levels, the values of `utable`, which only the slow twins look up); each channel's Perlin
    field is a drifting window of the shared oriented `bank` (render.perlin_bank: the volume, then its transposed
    slices) whose drift, origin and orientation come from that channel's NOISE_DRAWS uniforms in `draws`. The Perlin
    windows are written into `out` first, then one pass adds the hashed fields.
    """
    nt, nc, h, w = out.shape
    scales = np.empty(nc if perlin > 0 else 0, np.float64)  # np.empty + assignment: no np.zeros overload to compile
    scales[:] = 0.0
    if perlin > 0:
        depth, bh, bw = bank.shape[0] // 2, bank.shape[1], bank.shape[2]
        travel = drift * (nt - 1)
        side = max(h, w)
        for c in range(nc):
            d = draws[c]
            mag, ang = drift * d[0], 2.0 * math.pi * d[1]
            vx, vy = mag * math.cos(ang), mag * math.sin(ang)
            oz = min(int(d[2] * (depth - nt + 1)), depth - nt)
            # Origins keep every drifting sample strictly inside the bank.
            lo = travel + 1.0
            ox = lo + ((bw - side - travel - 2.0) - lo) * d[3]
            oy = lo + ((bh - side - travel - 2.0) - lo) * d[4]
            # Flips and a transpose (a window of the transposed half) turn one bank into many distinct fields.
            if d[7] < 0.5:
                oz += depth
            total = perlin_window(bank, oz, oy, ox, vy, vx, d[5] < 0.5, d[6] < 0.5, out, c)
            mean = total / (nt * h * w)
            if mean > 0:
                scales[c] = perlin / mean
    # Gaussian table: unit variance, mean |g| = sqrt(2/π); uniform on [-1, 1]: mean |u| = 1/2.
    mix_noise(np.uint64(key), gtable, gaussian / math.sqrt(2.0 / math.pi), np.uint64(key) ^ np.uint64(WHITE_SALT),
              white * 2.0, scales, out)


@njit(cache=True, no_cfunc_wrapper=True)
def owner_roles(pi, ids, owner, vmax, out):
    """Per-pixel property map (T, H, W): the role of the brightest object where it shows by a grey level, else 0."""
    nt, h, w = owner.shape
    for t in range(nt):
        for y in range(h):
            for x in range(w):
                o = owner[t, y, x]
                out[t, y, x] = pi[ids[o - 1], I_ROLE] if o > 0 and vmax[t, y, x] >= VISIBLE else 0


# inline: typed inside each batch kernel, no nesting level of its own to compile
@njit(cache=True, no_cfunc_wrapper=True, inline="always")
def _draw_row(b, roles, shapes, counts, blocks, seq_u, cfg, digits, pf, pi, verts, ps, masks, pmap, want_masks,
              want_map, flows, flags, want_flow, clean, owner, vmax):
    """Sample sequence b of a batch (twins of sample_scene) and draw it into clean/owner/vmax (and masks/pmap)."""
    n = counts[b]
    ids = np.empty(n, np.int64)  # np.arange would compile an overload of its own
    for k in range(n):
        ids[k] = k
    sample_objects(blocks[b], roles[b], shapes[b], n, cfg, pf[b], pi[b], verts[b])
    sample_sequence(seq_u[b], roles[b], n, cfg, ps[b])
    clean[:] = 0.0
    owner[:] = 0
    vmax[:] = 0.0
    render_objects(pf[b], pi[b], verts[b], n, ids, ps[b], cfg, digits, clean, owner, vmax,
                   masks[b if want_masks else 0], want_masks, flows[b if want_flow else 0],
                   flags[b if want_flow else 0], want_flow)
    if want_map:
        owner_roles(pi[b], ids, owner, vmax, pmap[b])


@njit(cache=True, no_cfunc_wrapper=True)
def render_batch(roles, shapes, counts, blocks, seq_u, cfg, digits, video, pf, pi, verts, ps, masks, pmap, want_masks,
                 want_map, flows, flags, want_flow):
    """Every sequence of a noise-free batch: sample (twins of sample_scene), draw, quantise.

    Inputs per row b: the preset's plan (roles[b], shapes[b], counts[b]) and the scene uniforms blocks[b] / seq_u[b].
    Outputs: video (B, T, C, H, W) uint8, parameters pf/pi/verts/ps (padding rows are the caller's), masks
    (B, T, N, H, W) and pmap (B, T, H, W) when asked, flows (B, 2, T−1, 2, H, W) and flags (B, 5, T−1, H, W) with
    want_flow (render_objects; else 1-sized dummies). A kernel of its own, apart from
    `render_batch_noisy`, so that a noise-free config never compiles the noise kernels (the first run's cost).
    """
    nb, nt, nc, h, w = video.shape
    clean = np.empty((nt, nc, h, w), np.float32)
    owner = np.empty((nt, h, w), np.int16)
    vmax = np.empty((nt, h, w), np.float32)
    for b in range(nb):
        _draw_row(b, roles, shapes, counts, blocks, seq_u, cfg, digits, pf, pi, verts, ps, masks, pmap, want_masks,
                  want_map, flows, flags, want_flow, clean, owner, vmax)
        quantise(clean, clean, 0.0, video[b])
        ps[b, S_NOISE_SCALE], ps[b, S_NOISE_RATIO] = 0.0, 0.0


@njit(cache=True, no_cfunc_wrapper=True)
def render_batch_noisy(roles, shapes, counts, blocks, seq_u, keys, noise_u, cfg, ratio, gaussian, white, perlin, drift,
                       digits, bank, gtable, utable, video, pf, pi, verts, ps, masks, pmap, want_masks, want_map, flows,
                       flags, want_flow):
    """`render_batch` with noise (ratio > 0): draw, add noise at the calibrated scale, quantise. Per row b, also the
    noise key keys[b] and uniforms noise_u[b]. With want_flow, the NOISE bit of the appearance map (flags[b, 4]) is
    set on every pixel of the rows whose noise scale is > 0."""
    nb, nt, nc, h, w = video.shape
    clean = np.empty((nt, nc, h, w), np.float32)
    noise = np.empty((nt, nc, h, w), np.float32)
    owner = np.empty((nt, h, w), np.int16)
    vmax = np.empty((nt, h, w), np.float32)
    for b in range(nb):
        _draw_row(b, roles, shapes, counts, blocks, seq_u, cfg, digits, pf, pi, verts, ps, masks, pmap, want_masks,
                  want_map, flows, flags, want_flow, clean, owner, vmax)
        noise_mix(keys[b], noise_u[b], bank, gaussian, white, perlin, drift, gtable, utable, noise)
        # The ratio is met on the stored bytes, after clipping and quantisation (docs/noise.md).
        s, achieved = noise_scale_quantise(clean, noise, ratio, video[b])
        ps[b, S_NOISE_SCALE], ps[b, S_NOISE_RATIO] = s, achieved
        if want_flow and s > 0:  # noise changes every pixel's appearance: the NOISE bit (docs/flow.md)
            app = flags[b, 4].reshape(flags.shape[2] * flags.shape[3] * flags.shape[4])
            for i in range(app.size):
                app[i] |= np.uint8(NOISE)
