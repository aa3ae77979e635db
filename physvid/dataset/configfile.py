"""`physvid generate --config FILE`: YAML, JSON or TOML holding the same settings as the command line.

The file is a RenderConfig dict (nested sections such as `noise: {ratio: 0.26}`, or dotted keys such as
`noise.ratio: 0.26`) plus the run settings `n`, `out`, `shard_size`, `workers` and `compression`. A dataset's
manifest.json is accepted too: it reproduces that dataset. Unknown keys and wrong types are usage errors (exit 2).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..config import RenderConfig, merge_dicts, unflatten
from ..errors import ConfigError
from .layout import FORMAT_NAME

RUN_KEYS = ("n", "out", "shard_size", "workers", "compression")


def _parse(path: Path) -> Any:
    suffix = path.suffix.lower()
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        from .regular import file_kind

        raise ConfigError(f"config file {path} is {file_kind(path)}, not a regular file; give a YAML, JSON or TOML "
                          "text file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; give a YAML, JSON or TOML text file") from None
    try:
        if suffix in (".yaml", ".yml"):
            from ..yamlload import safe_load

            return safe_load(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            return tomllib.loads(text)
    except Exception as exc:  # noqa: BLE001 - each parser has its own error class; all mean "fix the file"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid {suffix[1:].upper()}: {first}") from None
    raise ConfigError(f"config file {path} must end in .yaml, .yml, .json or .toml")


def read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(render config dict, run settings dict) from a config file; nothing is filled in that the file does not say."""
    path = Path(path)
    doc = _parse(path)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, got {type(doc).__name__}")
    if doc.get("format") == FORMAT_NAME and "config" in doc:  # a manifest: reproduce that dataset
        run = {"n": doc.get("total_sequences"), "shard_size": doc.get("shard_size"),
               "compression": doc.get("compression")}
        return dict(doc["config"]), {k: v for k, v in run.items() if v is not None}
    # Dotted keys refine sections whatever their order in the file ({"noise.white": 0.5, "noise": {...}}).
    nested = {str(k): v for k, v in doc.items() if "." not in str(k)}
    doc = merge_dicts(nested, unflatten({str(k): v for k, v in doc.items() if "." in str(k)}))
    allowed = [f.name for f in dataclasses.fields(RenderConfig)] + list(RUN_KEYS)
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in config file {path}; allowed: {', '.join(allowed)}")
    run = {k: doc.pop(k) for k in RUN_KEYS if k in doc}
    for key in ("n", "shard_size", "workers"):
        v = run.get(key)
        if key in run and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{key} in config file {path} must be an integer >= 1, got {v!r}")
    for key in ("out", "compression"):
        if key in run and not isinstance(run[key], str):
            raise ConfigError(f"{key} in config file {path} must be a string, got {run[key]!r}")
    return doc, run


def build_render_config(file_config: dict[str, Any], overrides: dict[str, Any], where: str = "") -> RenderConfig:
    """RenderConfig from the file's dict with the command line's dotted keys on top; errors name the file."""
    merged = merge_dicts(file_config, unflatten(overrides))
    try:
        return RenderConfig.from_dict(merged)
    except ConfigError as exc:
        if where:  # say "in the file" only when the file alone is what fails
            try:
                RenderConfig.from_dict(file_config)
            except ConfigError as alone:
                if str(alone) == str(exc):
                    raise ConfigError(f"{exc} (in {where})") from None
        raise ConfigError(str(exc)) from None
