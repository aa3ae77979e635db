"""The named presets (``--preset tiny|small|paper``): YAML files in ``presets/`` that a user can copy, diff and pass
back with ``--config FILE``; why each value is what it is lives in docs/training.md ("Presets")."""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from ..errors import TrainConfigError
from .document import merge, read_yaml, unflatten
from .experiment import Config

PRESET_DIR = Path(__file__).with_name("presets")
PRESET_NAMES = ("tiny", "small", "paper")


@lru_cache(maxsize=None)
def _read_preset(name: str) -> dict[str, Any]:
    return read_yaml(PRESET_DIR / f"{name}.yaml")


def preset_document(name: str) -> dict[str, Any]:
    """The document of preset ``name`` (a fresh copy). TrainConfigError for an unknown name."""
    if name not in PRESET_NAMES:
        raise TrainConfigError(f"unknown preset {name!r}; allowed: {', '.join(PRESET_NAMES)}")
    return copy.deepcopy(_read_preset(name))


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name`` (to copy and edit)."""
    preset_document(name)
    return PRESET_DIR / f"{name}.yaml"


class _Presets(Mapping):
    """PRESETS[name] -> the preset's document (read-only view; each lookup is a fresh copy)."""

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name not in PRESET_NAMES:
            raise KeyError(name)
        return preset_document(name)

    def __iter__(self):
        return iter(PRESET_NAMES)

    def __len__(self) -> int:
        return len(PRESET_NAMES)


PRESETS: Mapping[str, dict[str, Any]] = _Presets()


def load_config(preset: str | None = None, file: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """preset < YAML file < overrides (dotted keys, only the ones given) -> a validated :class:`Config`."""
    doc: dict[str, Any] = {}
    if preset is not None:
        doc = preset_document(preset)
    if file is not None:
        doc = merge(doc, read_yaml(file))
    if overrides:
        doc = merge(doc, unflatten(dict(overrides)))
    return Config(doc)


