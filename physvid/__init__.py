"""physvid: fast synthetic physics videos (translation, rotation, intensity growth/decay, noise) for video prediction.

Public API:
    RenderConfig (+ ShapeConfig, TextureConfig, MotionConfig, IntensityConfig, NoiseConfig)
    render(config, indices) -> (video uint8 [n, T, C, H, W], parameters)
    render_sequence(config, index) -> Sequence (video, clean frames, parameters, masks, property map)
    wall_events(params, boundary) -> the boundary rule's events (bounce/wrap: frame, object, wall) as a list
"""
from ._version import __version__
from .config import IntensityConfig, MotionConfig, NoiseConfig, RenderConfig, ShapeConfig, TextureConfig
from .errors import ConfigError, DatasetError, DigitsError, PhysvidError
from .properties import PROPERTIES
from .render import Sequence, render, render_sequence, wall_events

__all__ = [
    "__version__", "RenderConfig", "ShapeConfig", "TextureConfig", "MotionConfig", "IntensityConfig", "NoiseConfig",
    "ConfigError", "DatasetError", "DigitsError", "PhysvidError", "PROPERTIES", "Sequence", "render", "render_sequence",
    "wall_events",
]

# Datasets on disk (docs/FORMAT.md): write, resume, read back, verify.
from .dataset import Dataset, finalize_dataset, generate, open_dataset, verify_dataset, write_dataset  # noqa: E402

__all__ += ["Dataset", "open_dataset", "generate", "write_dataset", "finalize_dataset", "verify_dataset"]
