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
