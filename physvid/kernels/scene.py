"""Numba twin of `physvid.render.sample_scene`: every per-object and per-sequence parameter from the pre-drawn uniforms.

`render()` samples a whole batch in compiled code; the readable Python `sample_scene` stays the definition and the tests
compare the two value for value. Parameters are packed into arrays whose columns follow `render.OBJECT_FLOAT_FIELDS`,
`render.OBJECT_INT_FIELDS` and `render.SEQUENCE_FIELDS` (the index constants below; a test checks the orders agree), and
the config's ranges into one float64 vector (`render.pack_config`, slots `C_*`).

Draw layout of one object's block (`OBJECT_DRAWS` + `VERTEX_DRAWS` uniforms; the same order as `sample_scene`):
 0 size, 1 aspect, 2 thickness, 3 sides, 4 digit, 5 brightness, 6 hue, 7 saturation, 8 x0, 9 y0, 10 angle0,
 11-12 velocity (magnitude, direction), 13-14 acceleration, 15-16 jerk, 17-18 angular velocity (magnitude, sign),
 19-20 angular acceleration, 21-22 angular jerk, 23-24 gain (side, value), 25 spread, 26 textured, 27 texture frequency,
 28 orientation, 29 phase, 30 contrast, 31-32 drift (magnitude, sign); 33-39 unused; then the polygon's vertex draws.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

MAX_VERTICES = 12
OBJECT_DRAWS = 40

# Integer columns (render.OBJECT_INT_FIELDS).
I_ROLE, I_SHAPE, I_DIGIT, I_SIDES, I_TEXTURED = range(5)
# Float columns (render.OBJECT_FLOAT_FIELDS).
(F_SIZE, F_ASPECT, F_THICKNESS, F_BRIGHTNESS, F_R, F_G, F_B, F_X0, F_Y0, F_VX, F_VY, F_AX, F_AY, F_JX, F_JY,
 F_ANGLE0, F_ANG_V, F_ANG_A, F_ANG_J, F_GAIN, F_SPREAD, F_TEX_FREQ, F_TEX_ORIENT, F_TEX_PHASE, F_TEX_CONTRAST,
 F_TEX_DRIFT) = range(26)
N_FLOAT, N_INT = 26, 5
# Sequence columns (render.SEQUENCE_FIELDS).
(S_NUM_OBJECTS, S_ROLE, S_BG_LEVEL, S_BG_FREQ, S_BG_ORIENT, S_BG_PHASE, S_BG_CONTRAST, S_BG_DRIFT, S_FRAME_GAIN,
 S_FRAME_SPREAD, S_NOISE_SCALE, S_NOISE_RATIO) = range(12)
N_SEQ = 12

# Config slots (render.pack_config). The (low, high) slots are np.int64, not int: numba would compile `_u` and
# `_signed` once per literal slot they are called with (13 variants, ~0.5 s of a first run).
(C_SIZE, C_ASPECT, C_THICKNESS, C_SIDES, C_BRIGHTNESS, C_ANGLE, C_SPEED, C_ACCEL, C_JERK, C_ANG_SPEED, C_ANG_ACCEL,
 C_ANG_JERK, C_GAIN, C_SPREAD, C_TEX_FREQ, C_TEX_CONTRAST, C_TEX_DRIFT, C_BG_LEVEL) = np.arange(0, 36, 2)  # (low, high)
(C_MIN_CHANGE, C_GROW_P, C_TEX_P, C_BG_P, C_CHANNELS, C_HEIGHT, C_WIDTH, C_FRAMES, C_OBJECT_SCOPE, C_FRAME_SCOPE,
 C_KERNEL, C_KERNEL_SIZE, C_BOUNDARY, C_ADDITIVE, C_N_DIGITS) = range(36, 51)
N_CONFIG = 51
TRANSLATION, ROTATION, INTENSITY = 1, 2, 3
DIGIT = 6


@njit(cache=True, no_cfunc_wrapper=True)
def _u(cfg, slot, x):
    """Uniform on the config range at `slot` from the uniform x (Uniforms.u)."""
    lo = cfg[slot]
    return lo + (cfg[slot + 1] - lo) * x


@njit(cache=True, no_cfunc_wrapper=True)
def _integer(lo, hi, x):
    """Uniform on {lo, ..., hi} (Uniforms.integer)."""
    return lo + min(int(x * (hi - lo + 1)), hi - lo)


@njit(cache=True, no_cfunc_wrapper=True)
def _signed(cfg, slot, x, sign):
    mag = _u(cfg, slot, x)
    return mag if sign < 0.5 else -mag


@njit(cache=True, no_cfunc_wrapper=True)
def _gain(cfg, side, x):
    """Uniforms.gain: a gain outside the no-change band, growing with probability grow_probability."""
    lo, hi = cfg[C_GAIN], cfg[C_GAIN + 1]
    grow_lo, decay_hi = max(lo, 1.0 + cfg[C_MIN_CHANGE]), min(hi, 1.0 - cfg[C_MIN_CHANGE])
    grow = side < cfg[C_GROW_P]
    if grow and grow_lo > hi:
        grow = False
    if not grow and decay_hi < lo:
        grow = True
    return grow_lo + (hi - grow_lo) * x if grow else lo + (decay_hi - lo) * x


@njit(cache=True, no_cfunc_wrapper=True)
def hsv_to_rgb(h, s, v):
    """colorsys.hsv_to_rgb."""
    if s == 0.0:
        return v, v, v
    i = int(h * 6.0)
    f = (h * 6.0) - i
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    i = i % 6
    if i == 0:
        return v, t, p
    if i == 1:
        return q, v, p
    if i == 2:
        return p, v, t
    if i == 3:
        return p, q, v
    if i == 4:
        return t, p, v
    return v, p, q


@njit(cache=True, no_cfunc_wrapper=True)
def polygon(draws, n, radius, irregular, out):
    """Vertices (n, 2) into out[:n] (render._polygon)."""
    two_pi = 2.0 * math.pi
    phase = draws[2 * MAX_VERTICES] * two_pi
    jitter = min(0.7, 170.0 * n / 360.0 - 1.0)
    for i in range(n):
        if irregular:
            angle = (i + jitter * (draws[i] - 0.5)) * (two_pi / n) + phase
            r = (0.45 + 0.55 * draws[MAX_VERTICES + i]) * radius
        else:
            angle = i * (two_pi / n) + phase
            r = radius
        out[i, 0] = r * math.cos(angle)
        out[i, 1] = r * math.sin(angle)


@njit(cache=True, no_cfunc_wrapper=True)
def sample_objects(blocks, roles, shapes, n, cfg, pf, pi, verts):
    """Per-object parameters of the first n objects into pf (rows, N_FLOAT), pi (rows, N_INT), verts (rows, 12, 2).
    Twin of the per-object loop of physvid.render.sample_scene (the readable definition): change both together.

    roles/shapes: the preset's plan; blocks (rows, OBJECT_DRAWS + VERTEX_DRAWS) the object's uniforms. Rows past n are
    left untouched (the caller fills them with the padding values).
    """
    width, height = cfg[C_WIDTH], cfg[C_HEIGHT]
    object_scope = cfg[C_OBJECT_SCOPE] > 0.5
    n_digits = int(cfg[C_N_DIGITS])
    for k in range(n):
        d = blocks[k]
        role, shape = roles[k], shapes[k]
        size = _u(cfg, C_SIZE, d[0])
        pi[k, I_ROLE], pi[k, I_SHAPE] = role, shape
        pf[k, F_SIZE] = size
        pf[k, F_ASPECT] = _u(cfg, C_ASPECT, d[1])
        pf[k, F_THICKNESS] = min(_u(cfg, C_THICKNESS, d[2]), size)
        sides = _integer(int(cfg[C_SIDES]), int(cfg[C_SIDES + 1]), d[3])
        digit = _integer(np.int64(0), max(n_digits - 1, 0), d[4])  # not a literal 0: one compiled variant
        if shape == 4 or shape == 5:  # polygon, irregular
            pi[k, I_SIDES] = sides
            polygon(d[OBJECT_DRAWS:], sides, 0.5 * size, shape == 5, verts[k])
        if shape == DIGIT:
            pi[k, I_DIGIT] = digit
        b = _u(cfg, C_BRIGHTNESS, d[5])
        pf[k, F_BRIGHTNESS] = b
        if cfg[C_CHANNELS] == 3:
            pf[k, F_R], pf[k, F_G], pf[k, F_B] = hsv_to_rgb(d[6], 0.3 + 0.7 * d[7], b)
        r = 0.5 * size  # start fully inside the frame
        pf[k, F_X0] = r + (max(r, width - 1 - r) - r) * d[8]
        pf[k, F_Y0] = r + (max(r, height - 1 - r) - r) * d[9]
        pf[k, F_ANGLE0] = _u(cfg, C_ANGLE, d[10])
        moving, spinning = role == TRANSLATION, role == ROTATION
        changing = role == INTENSITY and object_scope
        for j, slot in enumerate((C_SPEED, C_ACCEL, C_JERK)):
            mag, ang = _u(cfg, slot, d[11 + 2 * j]), 2.0 * math.pi * d[12 + 2 * j]
            vx, vy = mag * math.cos(ang), mag * math.sin(ang)
            pf[k, F_VX + 2 * j] = vx if moving else 0.0
            pf[k, F_VY + 2 * j] = vy if moving else 0.0
        for j, slot in enumerate((C_ANG_SPEED, C_ANG_ACCEL, C_ANG_JERK)):
            value = _signed(cfg, slot, d[17 + 2 * j], d[18 + 2 * j])
            pf[k, F_ANG_V + j] = value if spinning else 0.0
        gain, spread = _gain(cfg, d[23], d[24]), _u(cfg, C_SPREAD, d[25])
        pf[k, F_GAIN] = gain if changing else 1.0
        pf[k, F_SPREAD] = spread if changing else 0.0
        textured = d[26] < cfg[C_TEX_P]
        pi[k, I_TEXTURED] = 1 if textured else 0
        pf[k, F_TEX_FREQ] = _u(cfg, C_TEX_FREQ, d[27]) if textured else 0.0
        pf[k, F_TEX_ORIENT] = math.pi * d[28] if textured else 0.0
        pf[k, F_TEX_PHASE] = 2.0 * math.pi * d[29] if textured else 0.0
        pf[k, F_TEX_CONTRAST] = _u(cfg, C_TEX_CONTRAST, d[30]) if textured else 0.0
        pf[k, F_TEX_DRIFT] = _signed(cfg, C_TEX_DRIFT, d[31], d[32]) if textured else 0.0


@njit(cache=True, no_cfunc_wrapper=True)
def sample_sequence(u, roles, n, cfg, ps):
    """Per-sequence parameters into ps (N_SEQ,) from the sequence's uniforms u (SEQUENCE_DRAWS; sample_scene's tail).
    Twin of the per-sequence tail of physvid.render.sample_scene: change both together.
    The noise columns are left for the noise stage."""
    ps[S_NUM_OBJECTS] = n
    single, has_intensity = True, False
    for k in range(n):
        single = single and roles[k] == roles[0]
        has_intensity = has_intensity or roles[k] == INTENSITY
    ps[S_ROLE] = roles[0] if single else 0  # 0: several properties in one sequence
    has_bg = u[0] < cfg[C_BG_P]
    ps[S_BG_LEVEL] = _u(cfg, C_BG_LEVEL, u[1]) if has_bg else 0.0
    ps[S_BG_FREQ] = _u(cfg, C_TEX_FREQ, u[2]) if has_bg else 0.0
    ps[S_BG_ORIENT] = math.pi * u[3] if has_bg else 0.0
    ps[S_BG_PHASE] = 2.0 * math.pi * u[4] if has_bg else 0.0
    ps[S_BG_CONTRAST] = _u(cfg, C_TEX_CONTRAST, u[5]) if has_bg else 0.0
    ps[S_BG_DRIFT] = _signed(cfg, C_TEX_DRIFT, u[6], u[7]) if has_bg else 0.0
    frame_scope = cfg[C_FRAME_SCOPE] > 0.5 and has_intensity
    gain, spread = _gain(cfg, u[8], u[9]), _u(cfg, C_SPREAD, u[10])
    ps[S_FRAME_GAIN] = gain if frame_scope else 1.0
    ps[S_FRAME_SPREAD] = spread if frame_scope else 0.0
