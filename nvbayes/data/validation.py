"""Validation of settings tables: the one way a TOML table or a set of options becomes a typed,
checked object, for the model files, the α-RuCl3 file and the sweep plans.

Every failure is a :class:`~nvbayes.errors.ParameterError` naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import math

from nvbayes.errors import ParameterError


def build(cls, table, where: str, exact: bool = False, hint: str = "check the file"):
    """``cls(**table)`` for a dataclass ``cls``: unknown keys are refused, and with ``exact``
    missing ones too; a wrong value raises from ``cls.__post_init__``."""
    if not isinstance(table, dict):
        raise ParameterError(f"{where} is missing or not a table", hint)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(table) - names), sorted(names - set(table))
    if unknown or (exact and missing):
        problem = (f"unknown key(s) {', '.join(unknown)}" if unknown
                   else f"missing key(s) {', '.join(missing)}")
        raise ParameterError(f"{where}: {problem}",
                             f"use {'exactly' if exact else 'only'} {', '.join(sorted(names))}")
    try:
        return cls(**table)
    except TypeError as exc:
        raise ParameterError(f"{where}: {exc}", hint) from None


def positive(name: str, value, hint: str = "use a number > 0") -> None:
    """Refuse anything but a finite number > 0."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0):
        raise ParameterError(f"{name} = {value!r} must be a positive number", hint)


def interval(name: str, value) -> tuple[float, float]:
    """``(low, high)`` from a pair of finite numbers with ``low < high``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be [low, high]", "give two numbers") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ParameterError(f"{name} = [{lo}, {hi}] is not an interval", "give low < high")
    return lo, hi


__all__ = ["build", "interval", "positive"]
