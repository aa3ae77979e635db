"""Numba kernel for the third-order dynamics (twin: physvid.reference.trajectories_reference)."""
from __future__ import annotations

import math

from numba import njit

BOUNDARY_CODES = {"free": 0, "bounce": 1, "wrap": 2}


@njit(cache=True, no_cfunc_wrapper=True)
def _fold(x, lo, hi):
    """Reflect x into [lo, hi]: an exact elastic bounce off both walls (the centre when the object is too big)."""
    span = hi - lo
    if span <= 0.0:
        return 0.5 * (lo + hi)
    y = (x - lo) % (2.0 * span)
    return lo + (y if y <= span else 2.0 * span - y)


@njit(cache=True, no_cfunc_wrapper=True)
def integrate_poses(coeffs, radius, height, width, boundary, out):
    """out[k, t] = (cx, cy, θ radians) with q(t) = q0 + v t + a t²/2 + j t³/6 for q in (x, y, angle in degrees).

    coeffs (n, 3, 4): per object, rows x, y, angle; columns q0, v, a, j. boundary: 0 free, 1 bounce, 2 wrap.
    """
    n, nt = out.shape[0], out.shape[1]
    for k in range(n):
        r = radius[k]
        for t in range(nt):
            tf = float(t)
            basis0, basis1, basis2, basis3 = 1.0, tf, tf * tf / 2.0, tf * tf * tf / 6.0
            q = [0.0, 0.0, 0.0]
            for d in range(3):
                q[d] = (coeffs[k, d, 0] * basis0 + coeffs[k, d, 1] * basis1 + coeffs[k, d, 2] * basis2
                        + coeffs[k, d, 3] * basis3)
            cx, cy = q[0], q[1]
            if boundary == 1:
                cx = _fold(cx, r, width - 1 - r)
                cy = _fold(cy, r, height - 1 - r)
            elif boundary == 2:
                cx = cx % width
                cy = cy % height
            out[k, t, 0] = cx
            out[k, t, 1] = cy
            out[k, t, 2] = math.radians(q[2])


WALLS = ("left", "right", "top", "bottom")  # wall_events columns: x = low, x = high, y = low, y = high
STATE_FIELDS = ("state_x", "state_y", "state_vx", "state_vy", "state_angle", "state_angular_velocity")


@njit(cache=True, no_cfunc_wrapper=True)
def _cubic(c, t):
    """q(t) = q0 + v t + a t²/2 + j t³/6 for c = (q0, v, a, j), in the same arithmetic as `integrate_poses`."""
    return c[0] * 1.0 + c[1] * t + c[2] * (t * t / 2.0) + c[3] * (t * t * t / 6.0)


@njit(cache=True, no_cfunc_wrapper=True)
def _slope(c, t):
    return c[1] + c[2] * t + c[3] * (t * t / 2.0)


@njit(cache=True, no_cfunc_wrapper=True)
def _cell(q, lo, span):
    """Index m of the cell [lo + m·span, lo + (m+1)·span) holding q (bounce: the fold's segment; wrap: the copy)."""
    return math.floor((q - lo) / span)


@njit(cache=True, no_cfunc_wrapper=True)
def _count_crossings(c, t0, t1, lo, span, bounce, low_wall, events_row):
    """Add to events_row[low_wall] / events_row[low_wall + 1] every wall the unfolded coordinate q meets in (t0, t1].

    q is split at the roots of q' (at most two) into monotone pieces; a monotone piece from q_a to q_b crosses the cell
    boundaries lo + m·span between their cells, one wall each: bounce meets the low wall at even m and the high wall
    at odd m (the fold maps lo + m·span there); wrap leaves through the high edge going up, the low edge going down.
    """
    cuts = [t0, t1, t1, t1]
    n_cuts = 1
    a2, a1, a0 = 0.5 * c[3], c[2], c[1]  # q'(t) = a2 t² + a1 t + a0
    roots = [0.0, 0.0]
    n_roots = 0
    if a2 != 0.0:
        disc = a1 * a1 - 4.0 * a2 * a0
        if disc > 0.0:
            sq = math.sqrt(disc)
            roots[0], roots[1] = (-a1 - sq) / (2.0 * a2), (-a1 + sq) / (2.0 * a2)
            n_roots = 2
    elif a1 != 0.0:
        roots[0] = -a0 / a1
        n_roots = 1
    if n_roots == 2 and roots[0] > roots[1]:
        roots[0], roots[1] = roots[1], roots[0]
    for i in range(n_roots):
        if t0 < roots[i] < t1:
            cuts[n_cuts] = roots[i]
            n_cuts += 1
    cuts[n_cuts] = t1
    q_a = _cubic(c, t0)
    for i in range(1, n_cuts + 1):
        q_b = _cubic(c, cuts[i])
        m_a, m_b = _cell(q_a, lo, span), _cell(q_b, lo, span)
        up = q_b > q_a
        first, last = (m_a + 1, m_b) if up else (m_b + 1, m_a)
        for m in range(first, last + 1):
            if bounce:
                wall = low_wall if m % 2 == 0 else low_wall + 1
            else:
                wall = low_wall + 1 if up else low_wall
            events_row[wall] = min(events_row[wall] + 1, 127)
        q_a = q_b


@njit(cache=True, no_cfunc_wrapper=True)
def motion_states(coeffs, radius, height, width, boundary, states, events):
    """Per-frame state of each object after the boundary rule, and the rule's events.

    coeffs (n, 3, 4): as `integrate_poses` (rows x, y, angle in degrees; columns q0, v, a, j); a row whose x0 is NaN
    is an empty slot (states NaN, events −1). radius (n,): half the object's size. boundary: 0 free, 1 bounce, 2 wrap.
    states (n, T, 6) float64: x, y (pixels, the drawn centre: `integrate_poses`), vx, vy (pixels/frame, the derivative
    of the drawn centre: the fold flips the sign of q' on odd segments), angle (degrees, never wrapped) and angular
    velocity (degrees/frame). events (n, T, 4) int8: how many times the object met each wall (left, right, top,
    bottom; see WALLS) in the frame interval (t − 1, t]; row t = 0 is 0. Counts saturate at 127.
    """
    n, nt = states.shape[0], states.shape[1]
    for k in range(n):
        if math.isnan(coeffs[k, 0, 0]):
            states[k, :, :] = math.nan
            events[k, :, :] = -1
            continue
        events[k, :, :] = 0
        r = radius[k]
        for d in range(2):
            c = coeffs[k, d]
            size = width if d == 0 else height
            lo, hi = (r, size - 1 - r) if boundary == 1 else (0.0, float(size))
            span = hi - lo
            for t in range(nt):
                tf = float(t)
                u = _cubic(c, tf)
                q, dq = u, _slope(c, tf)
                if boundary == 1:
                    q = _fold(u, lo, hi)  # the drawn centre, bit for bit
                    if span <= 0.0:  # too big to move: pinned at the centre
                        dq = 0.0
                    elif _cell(u, lo, span) % 2 != 0:
                        dq = -dq
                elif boundary == 2:
                    q = u % size
                states[k, t, d] = q
                states[k, t, 2 + d] = dq
                if t > 0 and boundary != 0 and span > 0.0:
                    _count_crossings(c, tf - 1.0, tf, lo, span, boundary == 1, 2 * d, events[k, t])
        for t in range(nt):
            states[k, t, 4] = _cubic(coeffs[k, 2], float(t))
            states[k, t, 5] = _slope(coeffs[k, 2], float(t))
