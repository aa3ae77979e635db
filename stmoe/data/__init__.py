"""Real-data loaders (paper §4): videos, frame folders, arrays and precipitation radar -> uint8 clips (N, T, C, H, W)."""
from .errors import DataError
from .radar import RADAR_FORMATS, RadarFrame, read_radar_frame
from .real import (
    ClipConfig,
    RadarConfig,
    RadarSequence,
    load_clips,
    load_clips_from_config,
    load_radar,
    load_sequences,
    make_clips,
    rate_to_unit,
    unit_to_rate,
)

__all__ = [
    "DataError", "RADAR_FORMATS", "RadarFrame", "read_radar_frame", "ClipConfig", "RadarConfig", "RadarSequence",
    "load_clips", "load_clips_from_config", "load_radar", "load_sequences", "make_clips", "rate_to_unit", "unit_to_rate",
]
