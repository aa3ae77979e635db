"""Slow, obviously correct twins of the numba kernels (NumPy, scikit-image, SciPy and the `noise` package).

The tests compare every kernel with its twin; `benchmarks/bench_render.py` times `render_reference` as the
"first implementation a researcher would write" of the same workload. Needs the `dev` extra (scipy, noise).
"""
from __future__ import annotations

import math

import numpy as np

from .config import RenderConfig
from .digits import load_digits
from .kernels.raster import SHAPE_IDS
from .properties import INTENSITY


# ---------------------------------------------------------------- shapes
def inside(shape: int, u: np.ndarray, v: np.ndarray, radius: float, aspect: float, thickness: float,
           verts: np.ndarray, n_verts: int) -> np.ndarray:
    """Exact point-in-shape test on arrays of local coordinates."""
    if shape == SHAPE_IDS["circle"]:
        return u * u + v * v <= radius * radius
    if shape == SHAPE_IDS["line"]:
        half = max(radius - 0.5 * thickness, 0.0)
        du = np.clip(u, -half, half) - u
        return du * du + v * v <= (0.5 * thickness) ** 2
    if shape == SHAPE_IDS["rectangle"]:
        hx = radius / math.sqrt(1 + aspect * aspect)
        return (np.abs(u) <= hx) & (np.abs(v) <= aspect * hx)
    if shape == SHAPE_IDS["ellipse"]:
        return (u / radius) ** 2 + (v / (radius * aspect)) ** 2 <= 1.0
    from skimage.measure import points_in_poly

    pts = np.stack([u.ravel(), v.ravel()], axis=1)
    return points_in_poly(pts, verts[:n_verts]).reshape(u.shape)


def coverage_reference(shape, radius, aspect, thickness, verts, n_verts, side, supersample=16) -> np.ndarray:
    """Fraction of each sprite pixel inside the shape, by supersampling on a regular sub-grid."""
    c = 0.5 * (side - 1)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(side) - c
    v = (grid[:, None] + offs[None, :]).reshape(-1)  # rows × sub-rows
    u = (grid[:, None] + offs[None, :]).reshape(-1)
    uu, vv = np.meshgrid(u, v)
    inn = inside(shape, uu, vv, radius, aspect, thickness, verts, n_verts)
    return inn.reshape(side, supersample, side, supersample).mean(axis=(1, 3)).astype(np.float32)


def digit_sprite_reference(digit: np.ndarray, size: float, side: int) -> np.ndarray:
    """Scale a digit so its longer side spans `size` pixels, centred (skimage.transform.warp, bilinear)."""
    from skimage.transform import AffineTransform, warp

    h, w = digit.shape
    scale = max(h, w) / size
    c = 0.5 * (side - 1)
    m = np.array([[scale, 0, -c * scale + 0.5 * (w - 1)], [0, scale, -c * scale + 0.5 * (h - 1)], [0, 0, 1]])
    return warp(digit, AffineTransform(matrix=m), output_shape=(side, side), order=1, mode="constant", cval=0.0,
                preserve_range=True).astype(np.float32)


# ---------------------------------------------------------------- placement
def place_reference(sprite: np.ndarray, cx: float, cy: float, theta: float, height: int, width: int) -> np.ndarray:
    """The sprite rotated by θ (counter-clockwise as displayed) and centred at (cx, cy): skimage.transform.warp, order 1."""
    from skimage.transform import AffineTransform, warp

    c = 0.5 * (sprite.shape[0] - 1)
    ct, st = math.cos(theta), math.sin(theta)
    # output (x, y) -> sprite (u + c, v + c) with u = cosθ dx − sinθ dy, v = sinθ dx + cosθ dy
    m = np.array([[ct, -st, -ct * cx + st * cy + c], [st, ct, -st * cx - ct * cy + c], [0, 0, 1]])
    return warp(sprite.astype(np.float64), AffineTransform(matrix=m), output_shape=(height, width), order=1,
                mode="constant", cval=0.0, preserve_range=True)


def texture_reference(side: int, tex) -> np.ndarray:
    """The object's sine fill at the sprite's pixel centres (1 where untextured)."""
    if tex[0] <= 0.5:
        return np.ones((side, side))
    c = 0.5 * (side - 1)
    v, u = np.mgrid[0:side, 0:side].astype(np.float64) - c
    phase = 2 * math.pi * tex[1] * (u * math.cos(tex[2]) + v * math.sin(tex[2])) + tex[3]
    return 1.0 - tex[4] * 0.5 * (1.0 - np.sin(phase))


def convolve_reference(src: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    from scipy.ndimage import correlate

    return correlate(src.astype(np.float64), kernel.astype(np.float64), mode="constant", cval=0.0)


def mass_support_reference(img: np.ndarray, lo: int, hi: int, floor: float) -> tuple[int, int, float]:
    """Square box of rows/columns holding values > floor in img[lo:hi, lo:hi], and the farthest such pixel centre's
    distance from the sprite centre plus 1.5 (an empty support: an empty box at the centre, reach 0)."""
    s = img.shape[0]
    c = 0.5 * (s - 1)
    rows, cols = np.nonzero(img[lo:hi, lo:hi] > floor)
    if rows.size == 0:
        return int(c), int(c), 0.0
    rows, cols = rows + lo, cols + lo
    box = (int(min(rows.min(), cols.min())), int(max(rows.max(), cols.max())) + 1)
    return box + (float(np.hypot(rows - c, cols - c).max()) + 1.5,)


def background_reference(height, width, level, frequency, orientation, phase, contrast) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    val = level * (1 + contrast * np.sin(2 * math.pi * frequency * (x * math.cos(orientation) + y * math.sin(orientation))
                                         + phase))
    return np.clip(val, 0, 1)


# ---------------------------------------------------------------- motion
def trajectories_reference(p: dict, n: int, frames: int, height: int, width: int, boundary: str) -> np.ndarray:
    """The third-order trajectories with NumPy polynomials, then the boundary rule (twin of kernels.motion)."""
    t = np.arange(frames, dtype=np.float64)
    poly = np.stack([np.ones_like(t), t, t * t / 2, t ** 3 / 6])
    cx = np.stack([p[k][:n] for k in ("x0", "vx", "ax", "jx")], 1) @ poly
    cy = np.stack([p[k][:n] for k in ("y0", "vy", "ay", "jy")], 1) @ poly
    th = np.stack([p[k][:n] for k in ("angle0", "angular_velocity", "angular_acceleration", "angular_jerk")], 1) @ poly
    r = 0.5 * p["size"][:n, None]

    def fold(x, lo, hi):
        span = hi - lo
        y = np.mod(x - lo, 2 * np.maximum(span, 1e-12))
        return np.where(span > 0, lo + np.where(y <= span, y, 2 * span - y), 0.5 * (lo + hi))

    if boundary == "bounce":
        cx, cy = fold(cx, r, width - 1 - r), fold(cy, r, height - 1 - r)
    elif boundary == "wrap":
        cx, cy = np.mod(cx, width), np.mod(cy, height)
    return np.stack([cx, cy, np.deg2rad(th)], axis=2)


def motion_states_reference(p: dict, n: int, frames: int, height: int, width: int, boundary: str):
    """Twin of kernels.motion.motion_states for the first n objects: (states (n, T, 6), events (n, T, 4)).

    Velocities are central differences (step 1e-6 frame) of the folded positions, angles and angular velocities
    NumPy polynomials; a wall event is a real root, in (t − 1, t], of q(τ) = wall for every wall position q can reach
    (numpy.roots of the cubic), and its wall follows from the fold's parity (bounce) or the sign of q' there (wrap).
    """
    names = [("x0", "vx", "ax", "jx"), ("y0", "vy", "ay", "jy"),
             ("angle0", "angular_velocity", "angular_acceleration", "angular_jerk")]
    c = np.array([[[p[name][k] for name in row] for row in names] for k in range(n)], np.float64).reshape(n, 3, 4)
    t = np.arange(frames, dtype=np.float64)
    h = 1e-6

    def unfolded(k, d, tau):
        q0, v, a, j = c[k, d]
        return q0 + v * tau + a * tau ** 2 / 2 + j * tau ** 3 / 6

    def placed(k, d, tau):
        size = width if d == 0 else height
        q = unfolded(k, d, tau)
        r = 0.5 * p["size"][k]
        if boundary == "bounce":
            lo, hi = r, size - 1 - r
            if hi <= lo:
                return np.full_like(q, 0.5 * (lo + hi))
            y = np.mod(q - lo, 2 * (hi - lo))
            return lo + np.where(y <= hi - lo, y, 2 * (hi - lo) - y)
        return np.mod(q, size) if boundary == "wrap" else q

    states = np.empty((n, frames, 6))
    events = np.zeros((n, frames, 4), np.int64)
    for k in range(n):
        for d in range(2):
            states[k, :, d] = placed(k, d, t)
            # mod jumps by a whole frame side under wrap: differentiate the unfolded path there (same derivative)
            f = unfolded if boundary == "wrap" else placed
            states[k, :, 2 + d] = (f(k, d, t + h) - f(k, d, t - h)) / (2 * h)
            size = width if d == 0 else height
            r = 0.5 * p["size"][k]
            lo, span = (r, size - 1 - 2 * r) if boundary == "bounce" else (0.0, float(size))
            if boundary == "free" or span <= 0:
                continue
            q0, v, a, j = c[k, d]
            tt = frames - 1.0
            bound = abs(q0) + abs(v) * tt + abs(a) * tt ** 2 / 2 + abs(j) * tt ** 3 / 6  # |q| on [0, T - 1]
            cells = range(int(np.floor((-bound - lo) / span)), int(np.ceil((bound - lo) / span)) + 1)
            for m in cells:
                for root in np.roots([j / 6, a / 2, v, q0 - (lo + m * span)]):
                    if abs(root.imag) > 1e-9 or not 0 < root.real <= frames - 1:
                        continue
                    tau = root.real
                    slope = v + a * tau + j * tau ** 2 / 2
                    if boundary == "bounce":
                        wall = 2 * d + (m % 2)
                    else:
                        wall = 2 * d + (1 if slope > 0 else 0)
                    events[k, int(np.ceil(tau)), wall] += 1
        states[k, :, 4] = unfolded(k, 2, t)
        states[k, :, 5] = c[k, 2, 1] + c[k, 2, 2] * t + c[k, 2, 3] * t ** 2 / 2
    return states, np.minimum(events, 127).astype(np.int8)


# ---------------------------------------------------------------- noise
MASK64 = (1 << 64) - 1


def splitmix64_reference(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_fill_reference(key: int, table: np.ndarray, shape) -> np.ndarray:
    n = int(np.prod(shape))
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = splitmix64_reference(np.uint64(key) + blocks * np.uint64(0x9E3779B97F4A7C15))
    lanes = [(z >> np.uint64(16 * k)) & np.uint64(0xFFFF) for k in range(4)]
    idx = np.stack(lanes, axis=1).reshape(-1)[:n].astype(np.int64)
    return table[idx].reshape(shape)


def mix_noise_reference(key_g: int, weight_g: float, key_u: int, weight_u: float, scales, perlin: np.ndarray):
    """(w_g·G + w_u·U) + scale_c·P in float32, G/U the hashed Gaussian/white fields looked up in their tables, P the
    unscaled Perlin fields (T, C, H, W), left out when `scales` is empty."""
    from .kernels.noise import gaussian_table, uniform_table

    f = np.float32
    shape = perlin.shape
    v = np.zeros(shape, f)
    if weight_g != 0:
        v = v + f(weight_g) * hash_fill_reference(key_g, gaussian_table(), shape)
    if weight_u != 0:
        v = v + f(weight_u) * hash_fill_reference(key_u, uniform_table(), shape)
    if len(scales):
        v = v + np.asarray(scales, f)[None, :, None, None] * perlin
    return v


def perlin_window_reference(bank: np.ndarray, oz, oy, ox, vy, vx, flip_y, flip_x, shape) -> np.ndarray:
    """Frame t: the bilinear samples of bank[oz + t] at rows py_t ± y and columns px_t ± x (px_t = ox + vx·t, plus
    W − 1 when mirrored), float32 weights; the window read from a mirrored index vector, one frame at a time."""
    nt, h, w = shape
    f = np.float32
    out = np.empty(shape, f)
    for t in range(nt):
        px = ox + vx * t + (w - 1 if flip_x else 0)
        py = oy + vy * t + (h - 1 if flip_y else 0)
        x0, y0 = math.floor(px), math.floor(py)
        fx, fy = f(px - x0), f(py - y0)
        cols = x0 + (-1 if flip_x else 1) * np.arange(w)
        rows = y0 + (-1 if flip_y else 1) * np.arange(h)
        sl = bank[oz + t]
        a, b = sl[rows[:, None], cols], sl[rows[:, None], cols + 1]
        c, d = sl[rows[:, None] + 1, cols], sl[rows[:, None] + 1, cols + 1]
        one = f(1.0)
        out[t] = ((one - fx) * (one - fy) * a + fx * (one - fy) * b) + ((one - fx) * fy * c + fx * fy * d)
    return out


def noise_scale_reference(clean: np.ndarray, noise: np.ndarray, ratio: float, iters: int = 100) -> float:
    """Bisection for Σ|q(c + s·n) − q(c)| = ratio · Σ q(c) on the 8-bit quantised values."""
    c, n = clean.astype(np.float64), noise.astype(np.float64)
    qc = quantise_reference(c, c, 0.0).astype(np.int64)
    target = ratio * qc.sum()

    def g(s):
        return np.abs(quantise_reference(c, n, s).astype(np.int64) - qc).sum()

    lo, hi = 0.0, 1e-6
    while g(hi) < target and hi < 1e6:
        hi *= 2
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) < target else (lo, mid)
    return hi


def quantise_reference(clean, noise, scale) -> np.ndarray:
    v = np.clip(clean.astype(np.float64) + scale * noise.astype(np.float64), 0, 1)
    return np.floor(v * 255.0 + 0.5).astype(np.uint8)


def perlin_field_reference(frames, height, width, nc, z0=0.0, x0=0.0, y0=0.0) -> np.ndarray:
    """A fractal 3-D Perlin field evaluated pixel by pixel with `noise.pnoise3` (how one would first write it)."""
    import noise

    out = np.empty((frames, height, width), np.float32)
    f = nc.perlin_frequency
    for t in range(frames):
        for y in range(height):
            for x in range(width):
                out[t, y, x] = noise.pnoise3((x0 + x) * f, (y0 + y) * f, z0 + t * nc.perlin_speed, octaves=nc.perlin_octaves,
                                             persistence=nc.perlin_persistence, lacunarity=nc.perlin_lacunarity)
    return out


# ---------------------------------------------------------------- whole sequences
def render_clean_reference(config: RenderConfig, p: dict) -> np.ndarray:
    """Clean frames (T, C, H, W) from the same sampled parameters, drawn with the twins above (object scope only):
    each sprite (mass × fill) is warped into the frame by scikit-image, one object and one frame at a time."""
    from .render import _colour, _texture, kernel_for, sprite_side, trajectory

    T, C, H, W = config.frames, config.channels, config.height, config.width
    n = int(p["num_objects"])
    out = np.zeros((T, C, H, W))
    it = config.intensity
    side = max([sprite_side(p, k, config) for k in range(n)] + [3])
    for k in range(n):
        size = float(p["size"][k])
        if p["shape"][k] == SHAPE_IDS["digit"]:
            sprite = digit_sprite_reference(load_digits(config.shape.digits)[int(p["digit"][k])], size, side)
        else:
            sprite = coverage_reference(int(p["shape"][k]), 0.5 * size, p["aspect"][k], p["thickness"][k],
                                        np.nan_to_num(p["vertices"][k]), max(int(p["sides"][k]), 0), side)
        sprite = sprite.astype(np.float64)
        kern = kernel_for(it.kernel, it.kernel_size, p["gain"][k], max(p["spread"][k], 1e-3)) \
            if p["role"][k] == INTENSITY else None
        pose = trajectory(p, k, T, H, W, config.motion.boundary)
        colour = _colour(p, k, C)
        for t in range(T):
            if t > 0 and kern is not None:
                sprite = convolve_reference(sprite, kern)
            cx, cy, th = pose[t]
            shifts = [(0, 0)] if config.motion.boundary != "wrap" else [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
            filled = sprite * texture_reference(side, _texture(p, k, t))
            layer = np.zeros((H, W))
            for sx, sy in shifts:
                layer = np.maximum(layer, place_reference(filled, cx + sx * W, cy + sy * H, th, H, W))
            for c in range(C):
                if config.shape.overlap == "add":
                    out[t, c] += layer * colour[c]
                else:
                    out[t, c] = np.maximum(out[t, c], layer * colour[c])
    if p["background_level"] > 0:
        for t in range(T):
            bg = background_reference(H, W, p["background_level"], p["background_frequency"], p["background_orientation"],
                                      p["background_phase"] + p["background_drift"] * t, p["background_contrast"])
            out[t] = out[t] + bg if config.shape.overlap == "add" else np.maximum(out[t], bg)
    return np.clip(out, 0, 1).astype(np.float32)


def render_reference(config: RenderConfig, index: int) -> np.ndarray:
    """The whole workload the straightforward way: shared parameter sampling, frames drawn with skimage, Gaussian and
    uniform noise from NumPy, Perlin from `noise.pnoise3` per pixel, ratio by bisection. Returns uint8 (T, C, H, W)."""
    from .render import sample_scene, sequence_rngs

    scene_rng, noise_rng = sequence_rngs(config.seed, index, config.property)
    p = sample_scene(config, index, scene_rng)
    clean = render_clean_reference(config, p)
    nc = config.noise
    if nc.ratio <= 0:
        return quantise_reference(clean, clean, 0.0)
    shape = clean.shape
    noise = np.zeros(shape)
    if nc.gaussian > 0:
        noise += nc.gaussian * noise_rng.standard_normal(shape) / math.sqrt(2 / math.pi)
    if nc.white > 0:
        noise += nc.white * 2 * noise_rng.uniform(-1, 1, shape)
    if nc.perlin > 0:
        for c in range(shape[1]):
            field = perlin_field_reference(shape[0], shape[2], shape[3], nc, z0=float(noise_rng.uniform(0, 100)),
                                           x0=float(noise_rng.uniform(0, 100)), y0=float(noise_rng.uniform(0, 100)))
            noise[:, c] += nc.perlin * field / max(np.abs(field).mean(), 1e-12)
    scale = noise_scale_reference(clean, noise, nc.ratio, iters=40)
    return quantise_reference(clean, noise, scale)


# ---------------------------------------------------------------- motion ground truth (twin of kernels.flow)
def motion_fields_reference(sprites, cmax, poses, shift, owner, vmax, evolve, drift, bg_drift, wrap):
    """Twin of kernels.flow.motion_fields, one NumPy expression per field: returns (flows (2, T−1, 2, H, W),
    flags (5, T−1, H, W)). Layers are sampled off-grid with scipy.ndimage.map_coordinates(order=1, grid-constant)."""
    from scipy.ndimage import map_coordinates

    nt, h, w = owner.shape
    n = cmax.shape[0]
    labels = np.where(vmax >= 1.0 / 255.0, owner, 0).astype(np.int64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    flows = np.zeros((2, nt - 1, 2, h, w), np.float32)
    flags = np.zeros((5, nt - 1, h, w), np.uint8)

    def value(t, j, x, y):
        """Object j's layer at frame t at points (x, y): the brightest of its drawn copies."""
        s = sprites[t, j]
        c = 0.5 * (s.shape[0] - 1)
        cx, cy, th = poses[j, t]
        best = np.zeros_like(x)
        shifts = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)] if wrap else [(0, 0)]
        for sx, sy in shifts:
            dx, dy = x - (cx + sx * w), y - (cy + sy * h)
            su, sv = math.cos(th) * dx - math.sin(th) * dy + c, math.sin(th) * dx + math.cos(th) * dy + c
            best = np.maximum(best, map_coordinates(s.astype(np.float64), [sv, su], order=1, mode="grid-constant",
                                                    cval=0.0))
        return best

    def pair(src, dst, sign, t):
        lab = labels[src]
        flow = np.zeros((2, h, w))
        occ = labels[dst] > 0  # background: hidden when an object shows there
        for k in range(n):
            sel = lab == k + 1
            if not sel.any():
                continue
            rx, ry = xx[sel] - poses[k, src, 0], yy[sel] - poses[k, src, 1]
            if wrap:
                rx, ry = rx - w * np.floor(rx / w + 0.5), ry - h * np.floor(ry / h + 0.5)
            a = poses[k, dst, 2] - poses[k, src, 2]
            fx = sign * shift[k, t, 0] + (math.cos(a) * rx + math.sin(a) * ry) - rx
            fy = sign * shift[k, t, 1] + (-math.sin(a) * rx + math.cos(a) * ry) - ry
            flow[0][sel], flow[1][sel] = fx, fy
            tx, ty = xx[sel] + fx, yy[sel] + fy
            gone = (tx < -0.5) | (tx > w - 0.5) | (ty < -0.5) | (ty > h - 0.5)
            vk = value(dst, k, tx, ty) * cmax[k]
            for j in range(n):
                if j != k:
                    vj = value(dst, j, tx, ty) * cmax[j]
                    gone |= (vj > vk) | ((j < k) & (vj == vk) & (vj > 0))
            occ[sel] = gone
        pad = np.pad(lab, 1, constant_values=-1)
        fpad = np.pad(flow, ((0, 0), (1, 1), (1, 1)))
        edge = np.zeros((h, w), bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                other = pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                jump = np.hypot(*(flow - fpad[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w])) > 0.5
                edge |= (other >= 0) & (other != lab) & jump
        return flow, occ, edge

    for t in range(nt - 1):
        for direction, (src, dst, sign) in enumerate(((t, t + 1, 1.0), (t + 1, t, -1.0))):
            flow, occ, edge = pair(src, dst, sign, t)
            flows[direction, t] = flow
            flags[direction, t], flags[2 + direction, t] = occ, edge
        a, b = labels[t], labels[t + 1]
        ev = np.concatenate([[False], np.asarray(evolve, bool)])
        dr = np.concatenate([[False], np.asarray(drift, bool)[:, t]])
        bits = np.where(a > 0, ev[a], ev[b]) * 1 + np.where(a > 0, dr[a], bool(bg_drift[t])) * 2
        flags[4, t] = bits
    return flows, flags
