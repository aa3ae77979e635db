"""Value checks shared by every config of both packages: one wording for every "bad input" line.

A family of checks is bound to the exception its package raises::

    check = Checks(ConfigError)              # ConfigError("noise.ratio must be >= 0, got -1")
    check = Checks(ModelConfigError, field_first=True)   # ModelConfigError("patch_size", "must be ...")

Every check names the field, says what is allowed and shows what it got, so that a CLI can print the message as is.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable


class Checks:
    """Checks raising ``error``. ``field_first``: the exception takes (field, detail) instead of one message."""

    def __init__(self, error: Callable[..., Exception], *, field_first: bool = False) -> None:
        self.error = error
        self.field_first = field_first

    def fail(self, name: str, detail: str) -> Exception:
        """The exception for field ``name`` (returned, so that callers write ``raise check.fail(...)``)."""
        if self.field_first:
            return self.error(name, detail)
        return self.error(f"{name} {detail}")

    def int(self, name: str, value: Any, *, low: int = 1, high: int | None = None, optional: bool = False) -> Any:
        """``value`` as an int in [low, high] (None passes when ``optional``); bool is not an integer."""
        if optional and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (
                high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise self.fail(name, f"must be an integer {bounds}{' or null' if optional else ''}, got {value!r}")
        return int(value)

    def float(self, name: str, value: Any, *, low: float | None = None, high: float | None = None,
              low_open: bool = False) -> float:
        """``value`` as a finite float with low <= value (low < value when ``low_open``) <= high."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise self.fail(name, f"must be a finite number, got {value!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise self.fail(name, f"must be {'>' if low_open else '>='} {low}, got {value!r}")
        if high is not None and value > high:
            raise self.fail(name, f"must be <= {high}, got {value!r}")
        return float(value)

    def choice(self, name: str, value: Any, allowed: Iterable[Any]) -> Any:
        """``value`` if it is one of ``allowed``."""
        allowed = tuple(allowed)
        if value not in allowed:
            listed = ", ".join(map(str, allowed))
            if self.field_first:
                raise self.error(name, f"unknown value {value!r}; allowed: {listed}")
            raise self.error(f"unknown {name} {value!r}; allowed: {listed}")
        return value

    def bool(self, name: str, value: Any) -> bool:
        """``value`` if it is True or False (not 0/1, not "yes")."""
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {value!r}")
        return value
