"""The renderer: draw every random parameter of sequence i from its own streams, then call the numba kernels.

Sequence i is a pure function of (config, i): a scene stream and a noise stream, two PCG64 generators keyed by
(config.seed, preset, i, stream) (`stream_state`), so the clean signal does not depend on the noise settings and a
clean/noisy pair is made by rendering twice. Nothing depends on batching, worker count or order.
`render_sequence` is the readable one-sequence path (Python `sample_scene`); `render` runs a whole batch in one numba
call (`kernels.pipeline.render_batch`) and gives the same bytes.
"""
from __future__ import annotations

import colorsys
import functools
import math
import time
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .config import RenderConfig
from .digits import digit_images
from .kernels import motion as mk
from .kernels import noise as nk
from .kernels import pipeline as pk
from .kernels import raster as rk
from .kernels import scene as sc
from .dataset.schema import FLOW_FIELDS
from .kernels.flow import NOISE
from .properties import INTENSITY, PROPERTIES, ROTATION, TRANSLATION

MAX_VERTICES = 12
VISIBLE = 1.0 / 255.0  # a layer "touches" a pixel when it changes it by at least one grey level (masks, property map)
# Per-object parameters, padded to max_objects with NaN (floats) or -1 (ints); see docs/FORMAT.md.
OBJECT_INT_FIELDS = ("role", "shape", "digit", "sides", "textured")
OBJECT_FLOAT_FIELDS = (
    "size", "aspect", "thickness", "brightness", "colour_r", "colour_g", "colour_b",
    "x0", "y0", "vx", "vy", "ax", "ay", "jx", "jy",
    "angle0", "angular_velocity", "angular_acceleration", "angular_jerk",
    "gain", "spread", "tex_frequency", "tex_orientation", "tex_phase", "tex_contrast", "tex_drift",
)
SEQUENCE_FIELDS = (
    "num_objects", "sequence_role", "background_level", "background_frequency", "background_orientation",
    "background_phase", "background_contrast", "background_drift", "frame_gain", "frame_spread",
    "noise_scale", "noise_ratio",
)
SHAPE_NAMES = {v: k for k, v in rk.SHAPE_IDS.items()}


@dataclass
class Sequence:
    """One rendered sequence: the stored video plus everything a test or a preview may want."""

    video: np.ndarray  # uint8 (T, C, H, W)
    clean: np.ndarray  # float32 (T, C, H, W) in [0, 1], before noise and quantisation
    params: dict  # name -> array (per object: (max_objects,), vertices (max_objects, 12, 2), per sequence: scalar)
    masks: np.ndarray | None  # uint8 (T, max_objects, H, W)
    property_map: np.ndarray | None  # uint8 (T, H, W): 0 background, 1 translation, 2 rotation, 3 intensity
    flow: dict | None = None  # with config.flow: the FLOW_FIELDS of docs/flow.md, each (T−1, ...)


_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    """SplitMix64's finaliser on a Python int (a bijection of 64-bit words with full avalanche)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


@functools.lru_cache(maxsize=64)
def _prefix_hash(seed: int, preset: str) -> int:
    h = _mix64((seed + _GOLDEN) & _M64)
    return _mix64(((h ^ zlib.crc32(preset.encode())) + _GOLDEN) & _M64)


def stream_state(seed: int, index: int, preset: str, stream: int) -> dict:
    """The PCG64 state of stream `stream` (0 scene, 1 noise) of sequence `index`: a SplitMix64 hash chain over
    (seed, crc32(preset), index, stream) gives the 128-bit state and the (odd) 128-bit increment.

    Setting a state costs ~2 µs where building a SeedSequence and a PCG64 costs ~30 µs, and the hash is as much a pure
    function of its inputs; the preset's name is part of the key so that D^translation and D^rotation made with one
    seed do not share scenes.
    """
    h = _prefix_hash(int(seed), preset)
    for word in (int(index), int(stream)):
        h = _mix64(((h ^ word) + _GOLDEN) & _M64)
    w = [_mix64((h + (j + 1) * _GOLDEN) & _M64) for j in range(4)]
    return {"bit_generator": "PCG64", "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3] | 1},
            "has_uint32": 0, "uinteger": 0}


def sequence_rngs(seed: int, index: int, preset: str = "") -> tuple[np.random.Generator, np.random.Generator]:
    """(scene, noise) generators of sequence `index`: independent streams, so noise settings never touch the scene."""
    gens = (np.random.Generator(np.random.PCG64(0)), np.random.Generator(np.random.PCG64(0)))
    reseed(gens, seed, index, preset)
    return gens


def reseed(gens, seed: int, index: int, preset: str) -> None:
    """Point the (scene, noise) generators `gens` at sequence `index` (reused across a batch: no allocation)."""
    for stream, gen in enumerate(gens):
        gen.bit_generator.state = stream_state(seed, index, preset, stream)


class Uniforms:
    """Parameters from a pre-drawn block of uniforms: one NumPy call per object instead of dozens.

    Every method consumes a fixed number of draws whatever the outcome, so switching a feature on or off (a texture, a
    property) never shifts the values of the other parameters of that object.
    """

    def __init__(self, values: np.ndarray):
        self.values = values.tolist()
        self.pos = 0

    def next(self) -> float:
        x = self.values[self.pos]
        self.pos += 1
        return x

    def u(self, rng_range) -> float:
        lo, hi = rng_range
        return lo + (hi - lo) * self.next()

    def chance(self, p: float) -> bool:
        return self.next() < p

    def signed(self, rng_range) -> float:
        mag = self.u(rng_range)
        return mag if self.next() < 0.5 else -mag

    def vector(self, rng_range) -> tuple[float, float]:
        mag, ang = self.u(rng_range), 2.0 * math.pi * self.next()
        return mag * math.cos(ang), mag * math.sin(ang)

    def integer(self, lo: int, hi: int) -> int:
        """Uniform on {lo, ..., hi}."""
        return lo + min(int(self.next() * (hi - lo + 1)), hi - lo)

    def gain(self, cfg) -> float:
        lo, hi = cfg.gain
        grow_lo, decay_hi = max(lo, 1.0 + cfg.min_change), min(hi, 1.0 - cfg.min_change)
        grow = self.next() < cfg.grow_probability
        x = self.next()
        if grow and grow_lo > hi:
            grow = False
        if not grow and decay_hi < lo:
            grow = True
        return grow_lo + (hi - grow_lo) * x if grow else lo + (decay_hi - lo) * x


OBJECT_DRAWS = 40  # uniforms per object (fixed, see Uniforms)
VERTEX_DRAWS = 2 * MAX_VERTICES + 1
SEQUENCE_DRAWS = 12


def kernel_for(kind: str, size: int, gain: float, spread: float) -> np.ndarray:
    """Convolution kernel with sum `gain` (paper §3.2: sum > 1 increments, < 1 decrements the intensity)."""
    r = size // 2
    if kind == "delta" or size == 1:
        k = np.zeros((size, size))
        k[r, r] = 1.0
    elif kind == "box":
        k = np.ones((size, size))
    else:
        a = np.arange(-r, r + 1, dtype=np.float64)
        k = np.exp(-(a[:, None] ** 2 + a[None, :] ** 2) / (2.0 * spread * spread))
    return (k / k.sum() * gain).astype(np.float32)


def _polygon(draws: np.ndarray, n: int, radius: float, irregular: bool) -> np.ndarray:
    """Vertices (n, 2) of a regular polygon (random phase) or a star-shaped irregular one, from VERTEX_DRAWS uniforms.

    Irregular vertices sit at jittered angles (k + j·(u_k − 1/2))·2π/n with j <= 0.7 chosen so that consecutive
    vertices are less than 170° apart: the polygon always contains its centre and is never a sliver.
    """
    out = np.empty((n, 2))
    phase = draws[-1] * 2.0 * math.pi
    jitter = min(0.7, 170.0 * n / 360.0 - 1.0)  # a gap is at most (1 + j)·360°/n
    for i in range(n):  # math.cos/sin (libm, as in the numba twin), not NumPy's SIMD versions, so both agree exactly
        if irregular:
            angle = (i + jitter * (draws[i] - 0.5)) * (2.0 * math.pi / n) + phase
            r = (0.45 + 0.55 * draws[MAX_VERTICES + i]) * radius
        else:
            angle = i * (2.0 * math.pi / n) + phase
            r = radius
        out[i] = r * math.cos(angle), r * math.sin(angle)
    return out


MOTION_FIELDS = (("x0", "vx", "ax", "jx"), ("y0", "vy", "ay", "jy"),
                 ("angle0", "angular_velocity", "angular_acceleration", "angular_jerk"))


def trajectories(p: dict, n: int, frames: int, height: int, width: int, boundary: str) -> np.ndarray:
    """(n, T, 3) poses (cx, cy, θ radians) of the first n objects: x(t) = x0 + v t + a t²/2 + j t³/6, likewise for
    y and the angle (degrees in the parameters), then the boundary rule (bounce folds, wrap takes the modulo)."""
    coeffs = np.empty((n, 3, 4))
    for d, names in enumerate(MOTION_FIELDS):
        for j, name in enumerate(names):
            coeffs[:, d, j] = p[name][:n]
    out = np.empty((n, frames, 3))
    mk.integrate_poses(coeffs, 0.5 * p["size"][:n], height, width, mk.BOUNDARY_CODES[boundary], out)
    return out


def object_states(config: RenderConfig, p: dict) -> dict:
    """Per-frame object state after the boundary rule, and the rule's events (docs/renderer.md#motion-and-the-boundary-rule).

    p holds per-object arrays of shape (..., objects) (one sequence, or a batch). Returns `state_x`, `state_y`
    (pixels: the drawn centre), `state_vx`, `state_vy` (pixels/frame), `state_angle` (degrees, unwrapped),
    `state_angular_velocity` (degrees/frame), each float64 (..., T, objects), NaN in empty slots, and `wall_events`
    int8 (..., T, objects, 4): how often the object met the left, right, top, bottom wall in (t − 1, t] (−1 in empty
    slots). Computed by `kernels.motion.motion_states` (twin: `reference.motion_states_reference`).
    """
    lead = np.shape(p["x0"])[:-1]
    n_max, T = np.shape(p["x0"])[-1], config.frames
    coeffs = np.empty(lead + (n_max, 3, 4))
    for d, names in enumerate(MOTION_FIELDS):
        for j, name in enumerate(names):
            coeffs[..., d, j] = p[name]
    rows = int(np.prod(lead, dtype=np.int64)) * n_max
    states = np.empty((rows, T, 6))
    events = np.empty((rows, T, 4), np.int8)
    mk.motion_states(coeffs.reshape(rows, 3, 4), 0.5 * np.asarray(p["size"], np.float64).reshape(rows), config.height,
                     config.width, mk.BOUNDARY_CODES[config.motion.boundary], states, events)
    # (rows, T, ...) -> (..., T, objects, ...): the (N, T, object) axis order of masks
    states = np.moveaxis(states.reshape(lead + (n_max, T, 6)), -3, -2)
    out = {name: np.ascontiguousarray(states[..., j]) for j, name in enumerate(mk.STATE_FIELDS)}
    out["wall_events"] = np.ascontiguousarray(np.moveaxis(events.reshape(lead + (n_max, T, 4)), -3, -3 + 1))
    return out


def wall_events(params: dict, boundary: str) -> list[dict]:
    """The boundary rule's events as a list, from the stored `wall_events` counts (one sequence (T, objects, 4) or a
    batch (n, T, objects, 4)): dicts {sequence (batch only), frame, object, wall, kind}, `frame` t meaning "in the
    interval (t − 1, t]", `kind` the rule ("bounce" or "wrap"); a wall met twice in one interval is listed twice."""
    counts = np.asarray(params["wall_events"])
    batch = counts.ndim == 4
    out = []
    for where in zip(*np.nonzero(counts > 0)):
        *seq, t, k, w = (int(v) for v in where)
        event = {"frame": t, "object": k, "wall": mk.WALLS[w], "kind": boundary}
        if batch:
            event = {"sequence": seq[0], **event}
        out.extend([event] * int(counts[where]))
    return out


def trajectory(p: dict, k: int, frames: int, height: int, width: int, boundary: str) -> np.ndarray:
    """(T, 3) poses of object k (see `trajectories`)."""
    return trajectories(p, k + 1, frames, height, width, boundary)[k]


@functools.lru_cache(maxsize=16)
def _empty_objects(n_max: int) -> dict:
    """Per-object parameter arrays filled with the documented padding (-1 for integers, NaN for floats)."""
    p = {name: np.full(n_max, -1, np.int32) for name in OBJECT_INT_FIELDS}
    p.update({name: np.full(n_max, np.nan, np.float64) for name in OBJECT_FLOAT_FIELDS})
    p["vertices"] = np.full((n_max, MAX_VERTICES, 2), np.nan, np.float64)
    return p


def sample_scene(config: RenderConfig, index: int, rng: np.random.Generator, objects: dict | None = None) -> dict:
    """Draw every scene parameter of one sequence (no pixels): the ground truth stored with the video.

    `objects` may hold padded per-object arrays to fill in place (rows of a batch, see `render`).
    Twin: physvid.kernels.scene.sample_objects + sample_sequence draw the same parameters from the same uniforms in
    compiled code (what `render` uses); a change here must be made there too (tests/test_render.py compares them).
    """
    if objects is None:
        objects = {name: value.copy() for name, value in _empty_objects(config.max_objects).items()}
    p = dict(objects)
    s, tx, mo, it = config.shape, config.texture, config.motion, config.intensity
    plan = PROPERTIES[config.property].plan(index, rng, config)
    roles = {r for r, _ in plan}
    n_digits = len(digit_images(s.digits, s.digit_range)) if any(sh == "digit" for _, sh in plan) else 0
    blocks = rng.random((len(plan), OBJECT_DRAWS + VERTEX_DRAWS))
    for k, (role, shape) in enumerate(plan):
        d = Uniforms(blocks[k, :OBJECT_DRAWS])
        size = d.u(s.size)
        p["role"][k], p["shape"][k], p["size"][k] = role, rk.SHAPE_IDS[shape], size
        p["aspect"][k], p["thickness"][k] = d.u(s.aspect), min(d.u(s.thickness), size)
        sides = d.integer(s.sides[0], s.sides[1])
        digit = d.integer(0, max(n_digits - 1, 0))
        if shape in ("polygon", "irregular"):
            p["sides"][k] = sides
            p["vertices"][k, :sides] = _polygon(blocks[k, OBJECT_DRAWS:], sides, 0.5 * size, shape == "irregular")
        if shape == "digit":
            p["digit"][k] = digit
        b = d.u(s.brightness)
        p["brightness"][k] = b
        hue, sat = d.next(), 0.3 + 0.7 * d.next()
        if config.channels == 3:
            p["colour_r"][k], p["colour_g"][k], p["colour_b"][k] = colorsys.hsv_to_rgb(hue, sat, b)
        r = 0.5 * size  # start fully inside the frame
        p["x0"][k] = d.u((r, max(r, config.width - 1 - r)))
        p["y0"][k] = d.u((r, max(r, config.height - 1 - r)))
        p["angle0"][k] = d.u(mo.angle)
        moving, spinning = role == TRANSLATION, role == ROTATION
        changing = role == INTENSITY and it.scope == "object"
        for names, value in ((("vx", "vy"), d.vector(mo.speed)), (("ax", "ay"), d.vector(mo.acceleration)),
                             (("jx", "jy"), d.vector(mo.jerk))):
            p[names[0]][k], p[names[1]][k] = value if moving else (0.0, 0.0)
        for name, rng_range in (("angular_velocity", mo.angular_speed), ("angular_acceleration", mo.angular_acceleration),
                                ("angular_jerk", mo.angular_jerk)):
            value = d.signed(rng_range)
            p[name][k] = value if spinning else 0.0
        gain, spread = d.gain(it), d.u(it.spread)
        p["gain"][k], p["spread"][k] = (gain, spread) if changing else (1.0, 0.0)
        textured = d.chance(tx.object_probability)
        fill = (d.u(tx.frequency), math.pi * d.next(), 2.0 * math.pi * d.next(), d.u(tx.contrast), d.signed(tx.drift))
        p["textured"][k] = int(textured)
        for name, value in zip(("tex_frequency", "tex_orientation", "tex_phase", "tex_contrast", "tex_drift"), fill):
            p[name][k] = value if textured else 0.0
    p["num_objects"] = len(plan)
    p["sequence_role"] = plan[0][0] if len(roles) == 1 else 0  # 0: several properties in one sequence
    d = Uniforms(rng.random(SEQUENCE_DRAWS))
    has_bg = d.chance(tx.background_probability)
    background = (d.u(tx.background_level), d.u(tx.frequency), math.pi * d.next(), 2.0 * math.pi * d.next(),
                  d.u(tx.contrast), d.signed(tx.drift))
    for name, value in zip(("background_level", "background_frequency", "background_orientation", "background_phase",
                            "background_contrast", "background_drift"), background):
        p[name] = value if has_bg else 0.0
    frame_scope = it.scope == "frame" and INTENSITY in roles
    gain, spread = d.gain(it), d.u(it.spread)
    p["frame_gain"], p["frame_spread"] = (gain, spread) if frame_scope else (1.0, 0.0)
    return p


def sprite_side(p: dict, k: int, config: RenderConfig) -> int:
    """Side of object k's sprite: its size plus a rim, plus room for the intensity kernel to spread over T frames."""
    it = config.intensity
    spreading = p["role"][k] == INTENSITY and it.kernel != "delta" and it.scope == "object"
    margin = (it.kernel_size // 2) * config.frames if spreading else 0  # one step more than needed: taps stay inside
    return int(math.ceil(float(p["size"][k]))) + 3 + 2 * margin


def make_sprite(p: dict, k: int, config: RenderConfig, side: int | None = None) -> np.ndarray:
    """The object's mass image M_0 (coverage in [0, 1]) on a `side`×`side` grid centred on the object."""
    size = float(p["size"][k])
    side = sprite_side(p, k, config) if side is None else side
    out = np.zeros((side, side), np.float32)
    shape = int(p["shape"][k])
    if shape == rk.SHAPE_IDS["digit"]:
        rk.resample_sprite(digit_images(config.shape.digits, config.shape.digit_range)[int(p["digit"][k])], size, out)
    else:
        n = max(int(p["sides"][k]), 0)
        verts = np.where(np.isnan(p["vertices"][k]), 0.0, p["vertices"][k])
        rk.shape_sprite(shape, 0.5 * size, float(p["aspect"][k]), float(p["thickness"][k]), verts, n, out)
    return out


def reaches(p: dict, n: int, config: RenderConfig) -> np.ndarray:
    """(n, T): how far from its centre each object can have mass at each frame (bounds the pixels visited): a
    Euclidean radius for objects that do not spread, a per-axis one (the kernel spreads √2 px per step diagonally) for
    those that do, whose draws use their tracked support radius instead (raster.compose_sequence)."""
    half = 0.5 * p["size"][:n].astype(np.float64)
    half = np.where(p["shape"][:n] == rk.SHAPE_IDS["digit"], half * math.sqrt(2.0), half)  # a digit's box spans `size`
    it = config.intensity
    spreading = (p["role"][:n] == INTENSITY) & (it.kernel != "delta")
    step = np.where(spreading, it.kernel_size // 2, 0)
    return half[:, None] + 2.0 + step[:, None] * np.arange(config.frames)[None, :]


def _colour(p, k, channels):
    if channels == 1:
        return np.array([p["brightness"][k]], np.float32)
    return np.array([p["colour_r"][k], p["colour_g"][k], p["colour_b"][k]], np.float32)


def _texture(p, k, t):
    return np.array([p["textured"][k], p["tex_frequency"][k], p["tex_orientation"][k],
                     p["tex_phase"][k] + p["tex_drift"][k] * t, p["tex_contrast"][k]], np.float64)


@functools.lru_cache(maxsize=16)
def pack_config(config: RenderConfig) -> np.ndarray:
    """The config as the float64 vector the numba kernels read (slots `C_*` of physvid.kernels.scene).

    The digit count slot is 0 here; `render` fills it when a plan draws digits (the file is read only then)."""
    s, tx, mo, it = config.shape, config.texture, config.motion, config.intensity
    v = np.zeros(sc.N_CONFIG)
    for slot, rng_range in ((sc.C_SIZE, s.size), (sc.C_ASPECT, s.aspect), (sc.C_THICKNESS, s.thickness),
                            (sc.C_SIDES, s.sides), (sc.C_BRIGHTNESS, s.brightness), (sc.C_ANGLE, mo.angle),
                            (sc.C_SPEED, mo.speed), (sc.C_ACCEL, mo.acceleration), (sc.C_JERK, mo.jerk),
                            (sc.C_ANG_SPEED, mo.angular_speed), (sc.C_ANG_ACCEL, mo.angular_acceleration),
                            (sc.C_ANG_JERK, mo.angular_jerk), (sc.C_GAIN, it.gain), (sc.C_SPREAD, it.spread),
                            (sc.C_TEX_FREQ, tx.frequency), (sc.C_TEX_CONTRAST, tx.contrast), (sc.C_TEX_DRIFT, tx.drift),
                            (sc.C_BG_LEVEL, tx.background_level)):
        v[slot], v[slot + 1] = rng_range
    v[sc.C_MIN_CHANGE], v[sc.C_GROW_P] = it.min_change, it.grow_probability
    v[sc.C_TEX_P], v[sc.C_BG_P] = tx.object_probability, tx.background_probability
    v[sc.C_CHANNELS], v[sc.C_HEIGHT], v[sc.C_WIDTH], v[sc.C_FRAMES] = (config.channels, config.height, config.width,
                                                                       config.frames)
    v[sc.C_OBJECT_SCOPE], v[sc.C_FRAME_SCOPE] = it.scope == "object", it.scope == "frame"
    v[sc.C_KERNEL], v[sc.C_KERNEL_SIZE] = pk.KERNEL_CODES[it.kernel], it.kernel_size
    v[sc.C_BOUNDARY], v[sc.C_ADDITIVE] = mk.BOUNDARY_CODES[mo.boundary], s.overlap == "add"
    v.setflags(write=False)
    return v


def pack_params(p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A sequence's parameter dict as the kernels' arrays: per-object floats (N, 26), ints (N, 5), vertices (N, 12, 2)
    and per-sequence scalars (12,), columns in the orders of OBJECT_FLOAT_FIELDS, OBJECT_INT_FIELDS, SEQUENCE_FIELDS."""
    pf = np.stack([np.asarray(p[name], np.float64) for name in OBJECT_FLOAT_FIELDS], axis=1)
    pi = np.stack([np.asarray(p[name], np.int32) for name in OBJECT_INT_FIELDS], axis=1)
    ps = np.array([float(p.get(name, 0.0)) for name in SEQUENCE_FIELDS])
    return pf, pi, np.ascontiguousarray(p["vertices"], np.float64), ps


_NO_DIGITS = np.zeros((1, 1, 1), np.float32)
_NO_MASKS = np.zeros((1, 1, 1, 1), np.uint8)
_NO_FLOWS = np.zeros((1, 1, 1, 1, 1), np.float32)
_NO_FLAGS = np.zeros((1, 1, 1, 1), np.uint8)


def _flow_arrays(config: RenderConfig, lead: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """Output arrays of kernels.flow.motion_fields with leading axes `lead` (None: 1-sized dummies, flow off)."""
    if lead is None:
        return _NO_FLOWS, _NO_FLAGS
    T, H, W = config.frames, config.height, config.width
    return (np.empty(lead + (2, T - 1, 2, H, W), np.float32), np.empty(lead + (5, T - 1, H, W), np.uint8))


def _flow_params(flows: np.ndarray, flags: np.ndarray) -> dict:
    """The kernel's packed outputs as the FLOW_FIELDS datasets (views). The NOISE bit of `appearance_change` is the
    caller's (render_batch_noisy sets it in the batch; render_sequence after its noise)."""
    out = {name: flows[..., j, :, :, :, :] for j, name in enumerate(FLOW_FIELDS[:2])}
    out.update({name: flags[..., j, :, :, :] for j, name in enumerate(FLOW_FIELDS[2:])})
    return out


def render_clean(config: RenderConfig, p: dict, want_masks: bool = False, want_map: bool = False,
                 flow_out: dict | None = None):
    """Float32 (T, C, H, W) clean frames in [0, 1] plus optional masks (T, N, H, W) and property map (T, H, W).

    With `flow_out` (a dict), the motion ground truth of docs/flow.md goes into it, one array per FLOW_FIELDS name
    (needs intensity scope "object", which RenderConfig(flow=True) checks)."""
    T, C, H, W = config.frames, config.channels, config.height, config.width
    n = int(p["num_objects"])
    additive = config.shape.overlap == "add"
    wrap = config.motion.boundary == "wrap"
    roles = p["role"][:n]
    # Under scope "frame" the intensity objects form one joint layer evolved by a shared kernel (drawn below).
    joint_ids = [k for k in range(n) if roles[k] == INTENSITY] if config.intensity.scope == "frame" else []
    ids = [k for k in range(n) if k not in joint_ids]
    m = len(ids)
    digits = digit_images(config.shape.digits, config.shape.digit_range) \
        if (p["shape"][:n] == rk.SHAPE_IDS["digit"]).any() else _NO_DIGITS
    clean = np.zeros((T, C, H, W), np.float32)
    owner = np.zeros((T, H, W), np.int16)
    vmax = np.zeros((T, H, W), np.float32)
    masks = np.zeros((T, config.max_objects, H, W), np.uint8) if want_masks else None
    pf, pi, verts, ps = pack_params(p)
    flows, flags = _flow_arrays(config, None if flow_out is None else ())
    pk.render_objects(pf, pi, verts, n, np.array(ids, np.int64), ps, pack_config(config), digits, clean, owner, vmax,
                      _NO_MASKS if masks is None else masks, want_masks, flows, flags, flow_out is not None)
    if flow_out is not None:
        flow_out.update(_flow_params(flows, flags))
    if masks is not None and ids != list(range(m)):
        masks[:, ids] = masks[:, :m].copy()  # kernel rows -> object slots
        masks[:, [k for k in range(n) if k not in ids]] = 0
    pmap = None
    if want_map or joint_ids:
        owner_role = np.concatenate([[0], roles[ids]]).astype(np.uint8)[owner]
        if joint_ids:
            side = max([sprite_side(p, k, config) for k in range(n)] + [3])
            _draw_joint_layer(config, p, joint_ids, side, clean, owner_role, vmax, masks, additive, wrap,
                              trajectories(p, n, T, H, W, config.motion.boundary), reaches(p, n, config))
            np.clip(clean, 0.0, 1.0, out=clean)
        if want_map:
            pmap = np.where(vmax >= VISIBLE, owner_role, 0).astype(np.uint8)
    return clean, masks, pmap


def _draw_joint_layer(config, p, joint_ids, side, clean, owner_role, vmax, masks, additive, wrap, poses, extents):
    """Scope "frame": the static intensity objects are drawn once into a joint layer that a single kernel of sum
    `frame_gain` convolves at every step, so their intensity spreads across object boundaries."""
    T, C, H, W = clean.shape
    it = config.intensity
    joint = np.zeros((C, H, W), np.float32)
    jo, jv = np.zeros((H, W), np.int16), np.zeros((H, W), np.float32)
    fill = np.empty((side, side), np.float32)
    for k in joint_ids:
        rk.texture_sprite(_texture(p, k, 0), fill)
        cx, cy, th = poses[k, 0]
        rk.draw_sprite(joint, jo, jv, k + 1, make_sprite(p, k, config, side) * fill, cx, cy, th, extents[k, 0],
                       _colour(p, k, C), wrap, additive)
    kernel = kernel_for(it.kernel, it.kernel_size, p["frame_gain"], max(p["frame_spread"], 1e-3))
    out = np.empty((H, W), np.float32)
    for t in range(T):
        if t > 0:
            for c in range(C):
                rk.convolve_same(joint[c], kernel, out)
                joint[c] = out
        if additive:
            clean[t] += joint
        else:
            np.maximum(clean[t], joint, out=clean[t])
        jmax = joint.max(axis=0)
        hit = jmax > vmax[t]
        vmax[t][hit] = jmax[hit]
        owner_role[t][hit] = INTENSITY
        if masks is not None:
            for k in joint_ids:
                masks[t, k] = jmax >= VISIBLE


@functools.lru_cache(maxsize=4)
def perlin_bank(octaves, persistence, lacunarity, frequency, speed, depth, height, width) -> np.ndarray:
    """A fractal Perlin volume (time, y, x) of `depth` slices followed by the same slices transposed (2·depth, y, x;
    height == width), built once per process; every sequence samples a drifting window of one half."""
    from .kernels.perlin import perlin_volume

    return nk.oriented_bank(perlin_volume(depth, height, width, frequency, speed, octaves, persistence, lacunarity, 0,
                                          1024, 1024, 1024))


def bank_shape(config: RenderConfig) -> tuple[int, int, int]:
    T, H, W = config.frames, config.height, config.width
    travel = int(math.ceil(config.noise.perlin_drift * (T - 1))) + 2
    side = max(H, W)
    return T + max(T, 32), 2 * side + 2 * travel, 2 * side + 2 * travel


def noise_draws(config: RenderConfig, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """The noise stream's draws for one sequence: the hash key of the Gaussian/white fields and NOISE_DRAWS uniforms
    per channel for its Perlin window (a fixed count, so every setting consumes the stream the same way)."""
    key = int(rng.integers(0, 2**63))
    return key, rng.random((config.channels, pk.NOISE_DRAWS))


def _bank(config: RenderConfig) -> np.ndarray:
    nc = config.noise
    if nc.perlin <= 0:
        return _NO_DIGITS
    depth, bh, bw = bank_shape(config)
    return perlin_bank(nc.perlin_octaves, nc.perlin_persistence, nc.perlin_lacunarity, nc.perlin_frequency,
                       nc.perlin_speed, depth, bh, bw)


def noise_field(config: RenderConfig, rng: np.random.Generator) -> np.ndarray:
    """Mixed noise (T, C, H, W) float32: Σ weight · field, each field scaled to unit mean magnitude (docs/noise.md)."""
    nc = config.noise
    total = np.empty((config.frames, config.channels, config.height, config.width), np.float32)
    key, draws = noise_draws(config, rng)
    pk.noise_mix(key, draws, _bank(config), nc.gaussian, nc.white, nc.perlin, nc.perlin_drift, nk.gaussian_table(),
                 nk.uniform_table(), total)
    return total


def check_noise_reachable(config: RenderConfig) -> None:
    """Refuse (ConfigError) a config whose noise field is identically zero while a ratio > 0 is asked (e.g. Perlin-only
    noise with perlin_frequency 1 and perlin_speed 0 samples only lattice points, where Perlin noise is exactly 0):
    it would render noise-free videos recorded as noise ratio 0. Every entry point (render, render_sequence, generate,
    estimate) calls it, so no path renders such a config."""
    nc = config.noise
    if nc.ratio <= 0 or nc.gaussian > 0 or nc.white > 0:  # Gaussian and white fields are never 0 everywhere
        return
    try:
        silent = _perlin_silent(config)
    except TypeError:  # an unhashable config (a list where a tuple belongs): decide without the cache
        silent = _perlin_silent.__wrapped__(config)
    if silent:
        from .errors import ConfigError

        raise ConfigError(f"noise.ratio {nc.ratio:g} cannot be reached: the noise field is 0 everywhere (weights "
                          f"gaussian {nc.gaussian:g}, white {nc.white:g}, perlin {nc.perlin:g}; Perlin noise is 0 at "
                          f"its lattice points, which perlin_frequency {nc.perlin_frequency:g} and perlin_speed "
                          f"{nc.perlin_speed:g} sample); add gaussian or white noise or change those two")


@functools.lru_cache(maxsize=16)
def _perlin_silent(config: RenderConfig) -> bool:
    return not np.any(noise_field(config, sequence_rngs(config.seed, 0, config.property)[1]))


def render_sequence(config: RenderConfig, index: int, *, with_clean: bool = True, objects: dict | None = None,
                    video: np.ndarray | None = None) -> Sequence:
    """Render sequence `index` of the dataset described by `config` (into `objects`/`video` rows when given)."""
    check_noise_reachable(config)
    scene_rng, noise_rng = sequence_rngs(config.seed, index, config.property)
    p = sample_scene(config, index, scene_rng, objects)
    flow = {} if config.flow else None
    clean, masks, pmap = render_clean(config, p, config.masks, config.property_maps, flow)
    p.update(object_states(config, p))
    if video is None:
        video = np.empty(clean.shape, np.uint8)
    scale, achieved = 0.0, 0.0
    if config.noise.ratio > 0:
        noise = noise_field(config, noise_rng)
        # The ratio is met on the stored bytes, after clipping and quantisation (docs/noise.md).
        scale, achieved = nk.noise_scale_quantise(clean, noise, config.noise.ratio, video)
    else:
        nk.quantise(clean, clean, 0.0, video)
    p["noise_scale"], p["noise_ratio"] = float(scale), float(achieved)
    if flow is not None and scale > 0:
        flow["appearance_change"] |= NOISE
    return Sequence(video=video, clean=clean if with_clean else None, params=p, masks=masks, property_map=pmap,
                    flow=flow)


def render(config: RenderConfig, indices) -> tuple[np.ndarray, dict]:
    """Render sequences `indices` -> (video uint8 [n, T, C, H, W], parameters dict of stacked arrays).

    The parameters dict also holds `masks` (n, T, N, H, W) and `property_map` (n, T, H, W) when the config asks for them.
    Python only runs each sequence's plan and draws its uniforms; sampling, drawing, noise and calibration for the whole
    batch are one numba call (`kernels.pipeline.render_batch`, the same arithmetic as `render_sequence`).
    """
    check_noise_reachable(config)
    indices = [int(i) for i in np.atleast_1d(np.asarray(indices, dtype=np.int64))]
    if any(i < 0 for i in indices):
        from .errors import ConfigError

        raise ConfigError(f"indices must be >= 0, got {min(indices)}")
    # joint intensity layers (scope "frame") are drawn in Python (render_clean)
    video, params = (_render_each if config.intensity.scope == "frame" else _render_batch)(config, indices)
    params.update(object_states(config, params))
    return video, params


def _render_batch(config: RenderConfig, indices: list[int]) -> tuple[np.ndarray, dict]:
    """`render` for every config but intensity scope "frame": the whole batch in one numba call."""
    n, n_max = len(indices), config.max_objects
    T, C, H, W = config.frames, config.channels, config.height, config.width
    roles = np.zeros((n, n_max), np.int32)
    shapes = np.zeros((n, n_max), np.int32)
    counts = np.zeros(n, np.int64)
    blocks = np.zeros((n, n_max, OBJECT_DRAWS + VERTEX_DRAWS))
    seq_u = np.empty((n, SEQUENCE_DRAWS))
    keys = np.zeros(n, np.uint64)
    noise_u = np.zeros((n, C, pk.NOISE_DRAWS))
    noisy = config.noise.ratio > 0
    gens = (np.random.Generator(np.random.PCG64(0)), np.random.Generator(np.random.PCG64(0)))
    scene, noise_rng = gens
    preset = PROPERTIES[config.property]
    shape_ids = rk.SHAPE_IDS
    for row, i in enumerate(indices):  # the same draws, in the same order, as render_sequence/sample_scene
        reseed(gens, config.seed, i, config.property)
        plan = preset.plan(i, scene, config)
        k = len(plan)
        counts[row] = k
        for j, (role, shape) in enumerate(plan):
            roles[row, j], shapes[row, j] = role, shape_ids[shape]
        scene.random(out=blocks[row, :k])
        scene.random(out=seq_u[row])
        if noisy:
            keys[row], noise_u[row] = noise_draws(config, noise_rng)
    cfg = pack_config(config)
    digits = _NO_DIGITS
    if (shapes[roles > 0] == shape_ids["digit"]).any():
        digits = digit_images(config.shape.digits, config.shape.digit_range)
        cfg = cfg.copy()
        cfg[sc.C_N_DIGITS] = len(digits)
    pad = _empty_objects(n_max)
    pf = np.repeat(np.stack([pad[name] for name in OBJECT_FLOAT_FIELDS], axis=1)[None], n, axis=0)
    pi = np.repeat(np.stack([pad[name] for name in OBJECT_INT_FIELDS], axis=1)[None], n, axis=0)
    verts = np.repeat(pad["vertices"][None], n, axis=0)
    ps = np.zeros((n, len(SEQUENCE_FIELDS)))
    video = np.empty((n, T, C, H, W), np.uint8)
    masks = np.zeros((n, T, n_max, H, W), np.uint8) if config.masks else None
    pmap = np.zeros((n, T, H, W), np.uint8) if config.property_maps else None
    flows, flags = _flow_arrays(config, (n,) if config.flow else None)
    nc = config.noise
    outputs = (video, pf, pi, verts, ps, _NO_MASKS[None] if masks is None else masks,
               _NO_MASKS if pmap is None else pmap, masks is not None, pmap is not None,
               flows[None] if not config.flow else flows, flags[None] if not config.flow else flags, config.flow)
    if noisy:
        pk.render_batch_noisy(roles, shapes, counts, blocks, seq_u, keys, noise_u, cfg, nc.ratio, nc.gaussian,
                              nc.white, nc.perlin, nc.perlin_drift, digits, _bank(config), nk.gaussian_table(),
                              nk.uniform_table(), *outputs)
    else:
        pk.render_batch(roles, shapes, counts, blocks, seq_u, cfg, digits, *outputs)
    params = {name: np.ascontiguousarray(pf[:, :, j]) for j, name in enumerate(OBJECT_FLOAT_FIELDS)}
    params.update({name: np.ascontiguousarray(pi[:, :, j]) for j, name in enumerate(OBJECT_INT_FIELDS)})
    params["vertices"] = verts
    for j, name in enumerate(SEQUENCE_FIELDS):
        params[name] = ps[:, j].astype(np.int64) if name in ("num_objects", "sequence_role") else ps[:, j].copy()
    if masks is not None:
        params["masks"] = masks
    if pmap is not None:
        params["property_map"] = pmap
    if config.flow:
        params.update(_flow_params(flows, flags))  # the kernel set the NOISE bits
    return video, params


class _CompileWatch:
    """A numba event listener: numba fires "numba:compile" only when it compiles (a cache miss), never when it loads
    machine code from its cache, so this tells a compile from a slow cached load (a wall-clock timer cannot)."""

    def __init__(self, notice: Callable[[str], None] | None) -> None:
        self.notice = notice
        self.started: float | None = None

    def listener(self):
        from numba.core import event

        watch = self

        class Listener(event.Listener):
            def on_start(self, ev) -> None:
                if watch.started is None:
                    watch.started = time.perf_counter()
                    if watch.notice is not None:
                        watch.notice("compiling the numba kernels this configuration needs (once per install and "
                                     "kernel set; later runs load them from numba's cache) ...")

            def on_end(self, ev) -> None:
                pass

        return Listener()


def compile_kernels(config: RenderConfig, notice: Callable[[str], None] | None = None) -> float:
    """Compile or load from numba's cache the kernels `config` needs, by rendering its sequence 0; returns the seconds
    spent compiling (0.0 when every kernel came from the cache).

    `notice` gets one line when numba starts compiling (so that a first run does not look stuck) and one with the
    elapsed time when it is done; nothing when the kernels only load, however long that takes on a loaded machine.
    A noise-free config compiles fewer kernels, so a later noisy config compiles the rest (and says so)."""
    from numba.core import event

    watch = _CompileWatch(notice)
    with event.install_listener("numba:compile", watch.listener()):
        render(config, [0])
    if watch.started is None:
        return 0.0
    seconds = time.perf_counter() - watch.started
    if notice is not None:
        notice(f"compiled the numba kernels in {seconds:.1f} s")
    return seconds


def _render_each(config: RenderConfig, indices: list[int]) -> tuple[np.ndarray, dict]:
    """`render` one `render_sequence` at a time (scope "frame", whose joint layer is drawn in Python)."""
    n = len(indices)
    T, C, H, W = config.frames, config.channels, config.height, config.width
    video = np.empty((n, T, C, H, W), np.uint8)
    # Per-object parameters are sampled straight into rows of the batch arrays; per-sequence scalars are gathered.
    stacked = {name: np.repeat(value[None], n, axis=0) for name, value in _empty_objects(config.max_objects).items()}
    scalars: dict = {}
    if config.masks:
        stacked["masks"] = np.empty((n, T, config.max_objects, H, W), np.uint8)
    if config.property_maps:
        stacked["property_map"] = np.empty((n, T, H, W), np.uint8)
    object_names = list(_empty_objects(config.max_objects))
    for row, i in enumerate(indices):
        seq = render_sequence(config, i, with_clean=False, objects={k: stacked[k][row] for k in object_names},
                              video=video[row])
        for name, value in seq.params.items():
            if not isinstance(value, np.ndarray):
                scalars.setdefault(name, []).append(value)
        if seq.masks is not None:
            stacked["masks"][row] = seq.masks
        if seq.property_map is not None:
            stacked["property_map"][row] = seq.property_map
    stacked.update({name: np.array(values) for name, values in scalars.items()})
    return video, stacked
