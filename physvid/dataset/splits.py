"""Named splits recorded in a dataset: `train=0.8,val=0.1,test=0.1` -> index ranges in manifest.json (docs/FORMAT.md).

A split is a half-open range [first, stop) of global sequence indices. Fractions are cut in the order given, each
boundary at round(n * cumulative fraction), so the ranges are contiguous, never overlap and cover 0 .. n-1 exactly
(the cut `stmoe` has always made from `data.split`, now written down for every reader).
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from ..errors import ConfigError

SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
MAX_SPLITS = 16


def parse_splits(spec: str | Mapping[str, Any]) -> dict[str, float]:
    """`"train=0.8,val=0.1,test=0.1"` (or a mapping) -> {name: fraction}, in order; fractions in [0, 1] summing to 1.

    Raises ConfigError (a usage error) naming what is wrong and what is allowed.
    """
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = []
        for part in (p.strip() for p in str(spec).split(",")):
            name, sep, value = part.partition("=")
            if not sep:
                raise ConfigError(f"--splits: {part!r} is not NAME=FRACTION; give e.g. train=0.8,val=0.1,test=0.1")
            items.append((name.strip(), value.strip()))
    out: dict[str, float] = {}
    for name, value in items:
        if not SPLIT_NAME.match(name):
            raise ConfigError(f"--splits: split name {name!r} is not allowed (a letter, then letters, digits, _ or -; "
                              "at most 32)")
        if name in out:
            raise ConfigError(f"--splits: split {name!r} is given twice")
        try:
            frac = float(value)
        except (TypeError, ValueError):
            frac = math.nan
        if isinstance(value, bool) or not 0.0 <= frac <= 1.0:
            raise ConfigError(f"--splits: {name}={value!r} is not a fraction in [0, 1]")
        out[name] = frac
    if not out or len(out) > MAX_SPLITS:
        raise ConfigError(f"--splits: give 1 to {MAX_SPLITS} splits, e.g. train=0.8,val=0.1,test=0.1")
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise ConfigError(f"--splits: the fractions sum to {sum(out.values()):g}; they must sum to 1")
    return out


def split_ranges(n: int, fractions: Mapping[str, float]) -> dict[str, list[int]]:
    """{name: [first, stop)} for n sequences: contiguous, in the order given, covering 0 .. n-1 exactly."""
    out: dict[str, list[int]] = {}
    total, first = 0.0, 0
    names = list(fractions)
    for k, name in enumerate(names):
        total += float(fractions[name])
        stop = n if k == len(names) - 1 else min(n, int(round(n * total)))
        out[name] = [first, stop]
        first = stop
    return out


def splits_problem(splits: Any, n: int) -> str | None:
    """What is wrong with a manifest's `splits` (ranges that overlap, leave gaps or leave 0..n-1), or None."""
    if not isinstance(splits, dict) or not 1 <= len(splits) <= MAX_SPLITS:
        return f"splits must map 1 to {MAX_SPLITS} names to [first, stop) ranges, got {str(splits)[:80]}"
    expected = 0
    for name, rng in splits.items():
        if not isinstance(name, str) or not SPLIT_NAME.match(name):
            return f"splits has the name {name!r} (a letter, then letters, digits, _ or -)"
        if (not isinstance(rng, list) or len(rng) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in rng)):
            return f"splits.{name} is {str(rng)[:40]} (a pair [first, stop) of integers)"
        if rng[0] != expected or not rng[0] <= rng[1] <= n:
            return (f"splits.{name} is {rng}; splits must be contiguous ranges in order, from 0 to total_sequences "
                    f"({n}), the next one starting at {expected}")
        expected = rng[1]
    if expected != n:
        return f"splits end at {expected}, not at total_sequences ({n})"
    return None


__all__ = ["parse_splits", "split_ranges", "splits_problem"]
