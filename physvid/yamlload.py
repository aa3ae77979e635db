"""YAML as people write numbers: ``1e-3`` is a float.

PyYAML implements YAML 1.1, whose float pattern requires a dot, so ``lr: 1e-3`` loads as the string '1e-3' (and a
config is refused, or worse, compared as text). YAML 1.2 -- and every other YAML reader people are used to -- reads
it as 0.001. `safe_load` is ``yaml.safe_load`` with the YAML 1.2 float pattern added (exponent without a dot); every
other type resolves exactly as before. Used by every place that reads a config (physvid config files, stmoe config
files and ``--set KEY=VALUE``).
"""
from __future__ import annotations

import re
from typing import Any

import yaml


class SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads 1e-3, 2E5, -1.5e+2 and .5e-1 as floats (YAML 1.2 core schema)."""


SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"""),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """``yaml.safe_load(text)`` reading exponent-only numbers as floats (module docstring)."""
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - a SafeLoader subclass: no object construction
