"""Configuration documents: deep merge by presence, dotted keys (``--set optim.lr=1e-3``), YAML files in and out."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

from ..errors import TrainConfigError

def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge where every key present in ``override`` wins (presence decides, never truthiness)."""
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"optim.lr": 0.01} -> {"optim": {"lr": 0.01}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        if not all(parts):
            raise TrainConfigError(f"bad dotted key {key!r}: empty part")
        node = out
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise TrainConfigError(f"dotted key {key!r} conflicts with a value set at {part!r}")
            node = nxt
        node[parts[-1]] = value
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-3"`` -> ("optim.lr", 0.001); the value is read as YAML (numbers, lists, true/false, null)."""
    import yaml

    from physvid.yamlload import safe_load

    key, sep, raw = str(text).partition("=")
    if not sep or not key.strip():
        raise TrainConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=0.001), got {text!r}")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads "1e-3" as a string; numbers written that way are meant as numbers.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else int(value)
        except ValueError:
            pass
    return key.strip(), value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) config file as a dict; dotted keys at any level are unflattened."""
    import yaml

    from physvid.yamlload import safe_load

    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        from physvid.dataset.regular import file_kind

        raise TrainConfigError(f"config file {path} is {file_kind(path)}, not a regular file; give a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise TrainConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        doc = safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainConfigError(f"config file {path} is not valid YAML: {first}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise TrainConfigError(f"config file {path} must hold a mapping of settings, got {type(doc).__name__}")
    return _unflatten_deep(doc)


def _unflatten_deep(d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        v = _unflatten_deep(v) if isinstance(v, Mapping) else v
        out = merge(out, unflatten({str(k): v}))
    return out


def dump_yaml(doc: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(_plain(doc), sort_keys=False, default_flow_style=None)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


