"""The renderer as a dataset source: `RenderSource` (what `generate` writes), its kernel warm-up and its noise policy.

A source is any picklable callable `source(indices) -> (video, params)` (shard.py says what it must return); this is
the one the `generate` entry point wraps around a RenderConfig.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..config import RenderConfig
from ..errors import ConfigError
from .layout import ShardSpec

# Relative tolerance of the achieved noise ratio (docs/noise.md): the solver stops within 1 %.
NOISE_TOLERANCE = 0.10


class RenderSource:
    """The physvid renderer as a dataset source (picklable, so spawned workers can call it)."""

    name = "physvid.render"
    fresh_arrays = True  # every call returns new arrays and keeps none: shard.py may hold several batches

    def __init__(self, config: RenderConfig):
        self.config = config

    def __call__(self, indices: np.ndarray):
        from ..render import render

        return render(self.config, indices)

    def check_shard(self, params: dict[str, np.ndarray], spec: ShardSpec) -> None:
        """Refuse (ConfigError) a shard whose sequences systematically miss the requested noise ratio: the median
        achieved ratio of the sequences that got noise lies outside NOISE_TOLERANCE of the request. (Single sequences
        may miss it, e.g. bright scenes where the noise is clipped; each one's achieved ratio is stored.)"""
        ratio = self.config.noise.ratio
        if ratio <= 0 or "noise_ratio" not in params:
            return
        got = params["noise_ratio"][params["noise_scale"] > 0]  # scale 0: an empty clean signal gets no noise
        median = float(np.median(got)) if got.size else 0.0
        if got.size and abs(median / ratio - 1) > NOISE_TOLERANCE:
            raise ConfigError(f"sequences {spec.first_index}..{spec.first_index + spec.count - 1} reach a median noise "
                              f"ratio of {median:.3g}, {ratio:g} requested (tolerance {NOISE_TOLERANCE:.0%}): these "
                              "noise settings cannot deliver it on these scenes; lower --noise-ratio or change the "
                              "noise types")

    def warm_up(self, notice: Callable[[str], None] | None = None) -> float:
        """Compile (first run of an install) or load the kernels this config needs, before any timing starts and
        before workers are spawned (they then load the cache instead of each compiling it); returns the seconds spent
        compiling (0.0: all loaded from the cache)."""
        from ..render import compile_kernels

        return compile_kernels(self.config, notice)


def check_noise_reachable(config: RenderConfig) -> None:
    """physvid.render.check_noise_reachable (kept here for callers of the writer; the renderer checks it too)."""
    from ..render import check_noise_reachable as check

    check(config)


def render_config(config: RenderConfig | dict) -> RenderConfig:
    """The RenderConfig of a `generate`/`estimate` call, with everything a run needs checked before any folder is
    touched: its digits file loads and its noise ratio is reachable."""
    if isinstance(config, dict):
        config = RenderConfig.from_dict(config)
    if not isinstance(config, RenderConfig):
        raise ConfigError(f"config must be a RenderConfig or a dict, got {type(config).__name__}")
    if config.shape.digits:
        from ..digits import load_digits

        load_digits(config.shape.digits)  # a missing or corrupt file fails now, before any folder is touched
    check_noise_reachable(config)
    return config
