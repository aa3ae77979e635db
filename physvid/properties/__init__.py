"""Property presets: which physical property drives each object of a sequence (the paper's D^k, §3.2).

A preset is one file in this folder that defines a `Property` subclass and registers an instance with `@register`.
A preset only decides, per sequence, the list of object plans (role, shape); sampling the dynamics and rendering are shared.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

TRANSLATION, ROTATION, INTENSITY = 1, 2, 3  # also the values of the per-pixel property map (0 = background)

PROPERTIES: dict[str, "Property"] = {}


def register(cls: type["Property"]) -> type["Property"]:
    if cls.name in PROPERTIES:
        raise RuntimeError(f"property {cls.name!r} registered twice")
    PROPERTIES[cls.name] = cls()
    return cls


class Property:
    """Base preset: `plan` returns one (role, shape) pair per object."""

    name = ""
    description = ""

    def validate(self, config) -> None:
        """Reject configs this preset cannot honour (raise ConfigError)."""

    def max_objects(self, config) -> int:
        return int(config.shape.num_objects[1])

    def num_objects(self, rng: np.random.Generator, config) -> int:
        lo, hi = config.shape.num_objects
        return int(rng.integers(lo, hi + 1))

    def shapes(self, rng: np.random.Generator, config, n: int) -> list[str]:
        return [config.shape.shapes[int(k)] for k in rng.integers(0, len(config.shape.shapes), n)]

    def plan(self, index: int, rng: np.random.Generator, config) -> list[tuple[int, str]]:
        raise NotImplementedError


class SingleProperty(Property):
    """Every object of every sequence exercises one property only (D^translation, D^rotation, D^intensity)."""

    role = 0

    def plan(self, index, rng, config):
        n = self.num_objects(rng, config)
        return list(zip([self.role] * n, self.shapes(rng, config, n)))


def _check_min_objects(config, name: str, needed: int) -> None:
    if config.shape.num_objects[1] < needed:
        raise ConfigError(f"property {name!r} needs shape.num_objects high >= {needed}, got {config.shape.num_objects!r}")


# Importing the preset modules registers them (one file per preset).
from . import translation, rotation, intensity, all as _all, mixed, dynamic_mnist  # noqa: E402,F401
