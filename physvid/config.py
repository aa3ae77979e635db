"""Configuration of the renderer: one frozen dataclass per concern, validated on construction.

Every range is a `(low, high)` pair with `low <= high`; a value is drawn uniformly from it (directions and signs are drawn
separately, so speed ranges are magnitudes). Units: pixels, frames and degrees. `RenderConfig.to_dict()` /
`RenderConfig.from_dict()` round-trip through JSON; that dict is what datasets store in their manifest and attributes.
"""
from __future__ import annotations

import builtins
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .checks import Checks
from .errors import ConfigError

CHECK = Checks(ConfigError)

SHAPES = ("circle", "line", "rectangle", "ellipse", "polygon", "irregular", "digit")
DEFAULT_SHAPES = ("circle", "line", "rectangle", "ellipse", "polygon", "irregular")
BOUNDARIES = ("bounce", "wrap", "free")
OVERLAPS = ("max", "add")
KERNELS = ("gaussian", "box", "delta")
SCOPES = ("object", "frame")
# Upper bounds of every range, far beyond any useful value: they keep float32 positions, sprite sizes and memory
# finite (memory itself is estimated before a run, dataset/budget.py). Pixels (per frame^k), degrees, other rates.
MAX_PIXELS, MAX_DEGREES, MAX_RATE = 8192.0, 36000.0, 1000.0
# Role codes, also the values of the per-pixel property map (0 is background).
ROLES = ("background", "translation", "rotation", "intensity")


def _range(name: str, value: Any, *, low: float | None = None, high: float | None = None, integer: bool = False) -> None:
    ok = isinstance(value, tuple) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok:
        raise ConfigError(f"{name} must be a pair of finite numbers (low, high), got {value!r}")
    lo, hi = value
    if integer and not all(float(v).is_integer() for v in value):
        raise ConfigError(f"{name} must be a pair of integers, got {value!r}")
    if lo > hi:
        raise ConfigError(f"{name} is inverted: low {lo} > high {hi}; give (low, high) with low <= high")
    if low is not None and lo < low:
        raise ConfigError(f"{name} must be >= {low}, got {value!r}")
    if high is not None and hi > high:
        raise ConfigError(f"{name} must be <= {high}, got {value!r}")


def _number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, integer: bool = False) -> None:
    # JSON and YAML give 3.0 for 3: an integral float passes as an integer here (manifests round-trip through JSON)
    CHECK.float(name, value, low=low, high=high, low_open=low_open)
    if integer and not float(value).is_integer():
        raise CHECK.fail(name, f"must be an integer, got {value!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    CHECK.choice(name, value, allowed)


@dataclass(frozen=True)
class ShapeConfig:
    """What the objects are (paper §3.2: circles, lines, polygons; §4.1: MNIST digits)."""

    shapes: tuple[str, ...] = DEFAULT_SHAPES
    num_objects: tuple[int, int] = (1, 3)
    size: tuple[float, float] = (12.0, 24.0)  # diameter of the bounding circle, pixels
    aspect: tuple[float, float] = (0.4, 1.0)  # minor/major axis of ellipses and rectangles
    thickness: tuple[float, float] = (2.0, 4.0)  # lines, pixels
    sides: tuple[int, int] = (3, 8)  # regular and irregular polygons
    brightness: tuple[float, float] = (0.6, 1.0)
    overlap: str = "max"  # "max" keeps the brightest object per pixel; "add" sums and clips at 1
    digits: str | None = None  # path to an MNIST idx3 images file (.gz or raw) for the "digit" shape
    # [first, stop) of the digit images to draw from (e.g. 0:9000 for training data and 9000:10000 for a test set
    # that shares no digit with it); None = every image of the file
    digit_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.shapes, tuple) or not self.shapes:
            raise ConfigError(f"shape.shapes must be a non-empty list of shapes; allowed: {', '.join(SHAPES)}")
        for s in self.shapes:
            _choice("shape", s, SHAPES)
        _range("shape.num_objects", self.num_objects, low=1, high=16, integer=True)
        _range("shape.size", self.size, low=2.0, high=MAX_PIXELS)
        _range("shape.aspect", self.aspect, low=0.05, high=1.0)
        _range("shape.thickness", self.thickness, low=0.5, high=MAX_PIXELS)
        _range("shape.sides", self.sides, low=3, high=12, integer=True)
        _range("shape.brightness", self.brightness, low=0.0, high=1.0)
        _choice("shape.overlap", self.overlap, OVERLAPS)
        if "digit" in self.shapes and not self.digits:
            raise ConfigError("shape 'digit' needs shape.digits (--digits PATH): an MNIST idx3 images file")
        if self.digits is not None and not isinstance(self.digits, str):
            raise ConfigError(f"shape.digits must be a path string, got {self.digits!r}")
        if self.digit_range is not None:
            # idx3 headers count images in 32 bits; the file itself bounds the range when it is read
            _range("shape.digit_range", self.digit_range, low=0, high=2**32 - 1, integer=True)
            if self.digit_range[1] <= self.digit_range[0]:
                raise ConfigError(f"shape.digit_range {self.digit_range!r} is empty; give FIRST:STOP with FIRST < STOP")


@dataclass(frozen=True)
class TextureConfig:
    """Sine-wave textures inside objects and on the background (paper §3.2: "initial textures are generated from a sine wave")."""

    object_probability: float = 0.5  # chance that an object is textured; otherwise it is flat-filled
    background_probability: float = 0.0  # chance that a sequence has a sine background
    background_level: tuple[float, float] = (0.1, 0.3)  # mean brightness of a textured background
    frequency: tuple[float, float] = (0.08, 0.25)  # cycles per pixel
    contrast: tuple[float, float] = (0.3, 0.8)  # 0 = flat, 1 = full modulation
    drift: tuple[float, float] = (0.0, 0.0)  # phase speed, radians per frame (random sign)

    def __post_init__(self) -> None:
        _number("texture.object_probability", self.object_probability, low=0.0, high=1.0)
        _number("texture.background_probability", self.background_probability, low=0.0, high=1.0)
        _range("texture.background_level", self.background_level, low=0.0, high=1.0)
        _range("texture.frequency", self.frequency, low=0.0, high=0.5)
        _range("texture.contrast", self.contrast, low=0.0, high=1.0)
        _range("texture.drift", self.drift, low=0.0, high=MAX_RATE)


@dataclass(frozen=True)
class MotionConfig:
    """Third-order dynamics, integrated exactly: x(t) = x0 + v t + a t²/2 + j t³/6, likewise for the angle.

    Magnitudes are drawn from the ranges; translation directions are uniform on the circle and angular signs are ±1.
    """

    speed: tuple[float, float] = (1.0, 3.0)  # pixels/frame
    acceleration: tuple[float, float] = (0.0, 0.2)  # pixels/frame²
    jerk: tuple[float, float] = (0.0, 0.03)  # pixels/frame³
    angle: tuple[float, float] = (0.0, 360.0)  # initial orientation, degrees
    angular_speed: tuple[float, float] = (4.0, 15.0)  # degrees/frame
    angular_acceleration: tuple[float, float] = (0.0, 1.0)  # degrees/frame²
    angular_jerk: tuple[float, float] = (0.0, 0.2)  # degrees/frame³
    boundary: str = "bounce"  # bounce off the frame edges, wrap around (torus), or fly free out of the frame

    def __post_init__(self) -> None:
        for name in ("speed", "acceleration", "jerk"):
            _range(f"motion.{name}", getattr(self, name), low=0.0, high=MAX_PIXELS)
        for name in ("angular_speed", "angular_acceleration", "angular_jerk"):
            _range(f"motion.{name}", getattr(self, name), low=0.0, high=MAX_DEGREES)
        _range("motion.angle", self.angle, low=-MAX_DEGREES, high=MAX_DEGREES)
        _choice("motion.boundary", self.boundary, BOUNDARIES)


@dataclass(frozen=True)
class IntensityConfig:
    """Intensity increments/decrements by convolution (paper §3.2): each step convolves the layer with a kernel of sum g.

    g > 1 grows, g < 1 decays; the kernel's shape and width control how the intensity spreads. Gains are drawn from `gain`,
    excluding the band |g - 1| < `min_change` so that every intensity object visibly changes; `grow_probability` picks the side.
    """

    gain: tuple[float, float] = (0.8, 1.25)
    min_change: float = 0.05
    grow_probability: float = 0.5
    kernel: str = "gaussian"  # gaussian (sigma from `spread`), box (uniform), delta (no spreading)
    kernel_size: int = 3  # odd
    spread: tuple[float, float] = (0.3, 0.7)  # gaussian sigma in pixels
    scope: str = "object"  # "object": each intensity object's own layer; "frame": the whole clean frame

    def __post_init__(self) -> None:
        _range("intensity.gain", self.gain, low=0.0, high=4.0)
        _number("intensity.min_change", self.min_change, low=0.0, high=1.0)
        _number("intensity.grow_probability", self.grow_probability, low=0.0, high=1.0)
        lo, hi = self.gain
        if hi < 1 + self.min_change and lo > 1 - self.min_change:
            raise ConfigError(f"intensity.gain {self.gain!r} lies inside the no-change band 1 ± {self.min_change}; "
                              "widen the range or lower intensity.min_change")
        _choice("intensity.kernel", self.kernel, KERNELS)
        _number("intensity.kernel_size", self.kernel_size, low=1, high=15, integer=True)
        if int(self.kernel_size) % 2 != 1:
            raise ConfigError(f"intensity.kernel_size must be odd (1, 3, 5, ...), got {self.kernel_size}")
        _range("intensity.spread", self.spread, low=0.01, high=MAX_RATE)
        _choice("intensity.scope", self.scope, SCOPES)


@dataclass(frozen=True)
class NoiseConfig:
    """Gaussian, white (uniform) and Perlin noise mixed at a noise ratio (paper §3.2, §4.5: ratios 0, 0.26, 0.70).

    The ratio is measured on what reaches the frame: r = Σ|clip(clean + s·noise) − clean| / Σ|clean| over the sequence,
    and the scale s is solved per sequence so that this holds (docs/noise.md). Weights mix the unit-mean-magnitude fields.
    """

    ratio: float = 0.0
    gaussian: float = 1.0
    white: float = 1.0
    perlin: float = 1.0
    perlin_octaves: int = 4
    perlin_persistence: float = 0.5
    perlin_lacunarity: float = 2.0
    perlin_frequency: float = 0.0625  # lattice cells per pixel of the first octave (1/16: features ~16 px)
    perlin_speed: float = 0.1  # lattice cells per frame along the time axis (how fast the field evolves)
    perlin_drift: float = 1.0  # maximal drift of the field, pixels/frame (random direction)

    def __post_init__(self) -> None:
        _number("noise.ratio", self.ratio, low=0.0, high=10.0)
        for name in ("gaussian", "white", "perlin"):
            _number(f"noise.{name}", getattr(self, name), low=0.0, high=MAX_RATE)
        if self.ratio > 0 and self.gaussian + self.white + self.perlin == 0:
            raise ConfigError("noise.ratio > 0 needs at least one noise type with a positive weight (gaussian, white, perlin)")
        _number("noise.perlin_octaves", self.perlin_octaves, low=1, high=16, integer=True)
        _number("noise.perlin_persistence", self.perlin_persistence, low=0.0, high=1.0, low_open=True)
        _number("noise.perlin_lacunarity", self.perlin_lacunarity, low=1.0, high=MAX_RATE)
        from .kernels.perlin import check_perlin_params  # the kernel module owns the limits of its float32 arithmetic

        try:
            check_perlin_params(int(self.perlin_octaves), self.perlin_persistence, self.perlin_lacunarity, 0)
        except ValueError as exc:
            raise ConfigError(f"noise: {exc}") from None
        _number("noise.perlin_frequency", self.perlin_frequency, low=0.0, high=1.0, low_open=True)
        _number("noise.perlin_speed", self.perlin_speed, low=0.0, high=1.0)
        _number("noise.perlin_drift", self.perlin_drift, low=0.0, high=8.0)


@dataclass(frozen=True)
class RenderConfig:
    """Everything that determines a dataset: sequence i is a pure function of (this config, i).

    `seed` is part of the config so that a config file or a manifest fully reproduces the data.
    """

    property: str = "all"
    height: int = 64
    width: int = 64
    frames: int = 10
    channels: int = 1
    seed: int = 0
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    masks: bool = False
    property_maps: bool = False
    flow: bool = False  # exact motion ground truth per frame pair (docs/flow.md)

    def __post_init__(self) -> None:
        from .properties import PROPERTIES  # late import: properties register themselves

        _choice("property", self.property, tuple(PROPERTIES))
        _number("height", self.height, low=16, high=4096, integer=True)
        _number("width", self.width, low=16, high=4096, integer=True)
        _number("frames", self.frames, low=2, high=10000, integer=True)
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        _number("seed", self.seed, low=0, high=2**63 - 1, integer=True)
        for name, kind in (("shape", ShapeConfig), ("texture", TextureConfig), ("motion", MotionConfig),
                           ("intensity", IntensityConfig), ("noise", NoiseConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        for name in ("masks", "property_maps", "flow"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.flow and self.intensity.scope == "frame":
            raise ConfigError("flow needs intensity.scope 'object' (the joint intensity layer of scope 'frame' is drawn "
                              "apart from the objects whose motion the flow follows); allowed with flow: object")
        side = max(self.height, self.width)
        for name in ("size", "thickness"):  # an object twice the frame's side is already all frame
            if getattr(self.shape, name)[1] > 2 * side:
                raise ConfigError(f"shape.{name} must be <= {2 * side} (twice the frame's side {side}), got "
                                  f"{getattr(self.shape, name)!r}")
        PROPERTIES[self.property].validate(self)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RenderConfig":
        """Inverse of `to_dict`; unknown keys and wrong types raise ConfigError naming the key."""
        return _build(cls, data, "")

    def replace(self, **changes: Any) -> "RenderConfig":
        """`dataclasses.replace` that also accepts dotted keys for sections, e.g. replace(**{"noise.ratio": 0.7})."""
        return RenderConfig.from_dict(merge_dicts(self.to_dict(), unflatten(changes)))

    @builtins.property  # the field `property` shadows the builtin inside this class body
    def max_objects(self) -> int:
        """Padding width of the per-object parameter arrays."""
        from .properties import PROPERTIES

        return PROPERTIES[self.property].max_objects(self)


SECTIONS = {"shape": ShapeConfig, "texture": TextureConfig, "motion": MotionConfig,
            "intensity": IntensityConfig, "noise": NoiseConfig}


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{"noise.ratio": 0.7} -> {"noise": {"ratio": 0.7}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def merge_dicts(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge where keys present in `override` win (presence, never truthiness, decides)."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_dicts(out[k], v)
        else:
            out[k] = v
    return out


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Check `value` against the annotation `tp` (JSON/YAML/TOML types in, dataclass types out)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(name, next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(name, args[0], v) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{name} must have {len(args)} items (low, high), got {value!r}")
        return tuple(_coerce(name, a, v) for a, v in zip(args, value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r}")  # programming error, not user input


def _build(cls: type, data: Any, prefix: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!s}; allowed keys: {', '.join(names)}")
    kwargs = {}
    for key, value in data.items():
        if key in SECTIONS and cls is RenderConfig:
            kwargs[key] = _build(SECTIONS[key], value, f"{key}.")
        else:
            kwargs[key] = _coerce(prefix + key, hints[key], value)
    return cls(**kwargs)
