"""Model registry and factory: one decorator per architecture file, one `create_model(name, **config)` for everything.

An architecture file registers a class that carries its config dataclass in the class attribute ``config_class``:

* an :class:`~stmoe.models.base.Expert` subclass (a baseline such as ``convlstm``): ``create_model`` wraps it as
  ``Predictor(config, expert)`` -- one expert plus the decoder H named in its config -- and the STMoE can use it as
  an expert F^k by name;
* a :class:`~stmoe.models.predictor.Predictor` subclass (``stmoe-id``, ``stmoe-conv``): built as ``cls(config)``.

Registration and construction live here, apart from the architectures (timm's ``_registry``/``_factory`` split).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .errors import ModelConfigError

if TYPE_CHECKING:  # imported lazily at run time: predictor.py and base.py do not depend on this module
    from .base import Expert, ModelConfig
    from .predictor import Predictor

_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: register an Expert or Predictor subclass under ``name`` (registering a name twice raises)."""
    from .base import ModelConfig

    if not isinstance(name, str) or not name or name != name.strip().lower():
        raise ModelConfigError("name", f"model names are non-empty lower-case strings, got {name!r}")

    def decorator(cls: T) -> T:
        if name in _REGISTRY:
            raise ModelConfigError("name", f"model {name!r} is already registered (by {_REGISTRY[name].__qualname__})")
        config_class = getattr(cls, "config_class", None)
        if not (isinstance(config_class, type) and issubclass(config_class, ModelConfig)):
            raise TypeError(f"{cls.__qualname__} must define config_class, a ModelConfig subclass, to be registered")
        cls.model_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _ensure_builtin_models() -> None:
    # Importing the package registers every built-in architecture; create_model works even if only this module was imported.
    importlib.import_module("stmoe.models")


def _lookup(name: str, field: str = "name") -> type:
    _ensure_builtin_models()
    if name not in _REGISTRY:
        raise ModelConfigError(field, f"unknown model {name!r}; allowed: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_models() -> list[str]:
    """Sorted names of every registered model (baselines/experts and the STMoE variants)."""
    _ensure_builtin_models()
    return sorted(_REGISTRY)


def list_experts() -> list[str]:
    """Sorted names of the registered models that can serve as an STMoE expert F^k (the Expert subclasses)."""
    from .base import Expert

    _ensure_builtin_models()
    return sorted(n for n, c in _REGISTRY.items() if issubclass(c, Expert))


def model_config_class(name: str) -> type[ModelConfig]:
    """The config dataclass of model ``name``."""
    return _lookup(name).config_class


def make_config(name: str, field: str = "name", /, **kwargs: Any) -> ModelConfig:
    """Build model ``name``'s config from keyword arguments (its fields; ``field`` names the config key of ``name`` in
    errors); ``None`` values are dropped so that they keep the defaults. Both are positional-only, so that no model
    field can collide with them."""
    config_class = _lookup(name, field).config_class
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    allowed = [f.name for f in dataclasses.fields(config_class) if f.init]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ModelConfigError(unknown[0], f"not a field of {config_class.__name__} (model {name!r}); "
                                           f"allowed: {', '.join(allowed)}")
    return config_class(**kwargs)


def create_expert(name: str, config: ModelConfig | None = None, **kwargs: Any) -> Expert:
    """Build the bare expert F^k registered as ``name`` (no decoder), from a config or from keyword arguments."""
    from .base import Expert

    cls = _lookup(name, "experts")
    if not issubclass(cls, Expert):
        raise ModelConfigError("experts", f"{name!r} is not an expert; allowed: {', '.join(list_experts())}")
    if config is None:
        config = make_config(name, "experts", **kwargs)
    elif kwargs:
        raise TypeError("create_expert takes either a config or keyword arguments, not both")
    return cls(config)


def create_model(name: str, **kwargs: Any) -> Predictor:
    """Build registered model ``name`` as a :class:`Predictor`; keyword arguments are its config fields.

    ``create_model(name, **dataclasses.asdict(model.config))`` rebuilds the same architecture, so a checkpoint only needs
    ``model.model_name`` and ``asdict(model.config)``.
    """
    from .base import Expert
    from .predictor import Predictor

    cls = _lookup(name)
    config = make_config(name, **kwargs)
    if issubclass(cls, Expert):
        model = Predictor(config, cls(config))
    else:
        model = cls(config)
    model.model_name = name
    return model


def model_spec(model: Predictor) -> dict[str, Any]:
    """``{"name": ..., "config": {...}}``, JSON-safe: what a checkpoint stores to rebuild ``model`` without arguments."""
    return {"name": model.model_name, "config": dataclasses.asdict(model.config)}


def model_from_spec(spec: dict[str, Any]) -> Predictor:
    """Rebuild the architecture saved by :func:`model_spec` (weights are loaded separately)."""
    return create_model(spec["name"], **spec["config"])
