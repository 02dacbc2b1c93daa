"""One declaration per configuration field: its type, default, check, help and name part.

:class:`~pyro_dvae.config.FitConfig` is assembled from these declarations (the common
fields in :mod:`pyro_dvae.config`, each latent family's own in its class), and the
``fit`` and ``sweep`` options are generated from them, so a field is written once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


@dataclass(frozen=True)
class Param:
    """A configuration field.

    ``low``/``high`` bound numbers (``positive`` excludes 0); ``choices`` is a callable
    returning the allowed values (a registry, looked up when checked); ``short`` is the
    field's part of a run name, shown when the value is off its default (``None``: never
    shown); ``axis`` makes it a grid axis of ``sweep`` (the option may be repeated).
    """

    name: str
    kind: type
    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    positive: bool = False
    choices: Callable[[], Iterable[str]] | None = None
    short: str | None = None
    axis: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """Raise :class:`ConfigError` naming the flag if ``value`` is not allowed."""
        if not _is_kind(value, self.kind):
            raise ConfigError(
                f"{self.flag} must be {_KIND_NAMES[self.kind]}, got {json.dumps(value)}"
            )
        if self.choices is not None:
            allowed = sorted(self.choices())
            if value not in allowed:
                raise ConfigError(
                    f"unknown {self.name} {value!r} for {self.flag}; choose from "
                    f"{', '.join(allowed)}"
                )
        if self.kind in (int, float):
            self._check_range(value)

    def _check_range(self, value: float) -> None:
        if self.kind is float and not math.isfinite(value):
            raise ConfigError(f"{self.flag} must be a finite number, got {value}")
        if self.positive and not value > 0:
            what = f" ({self.help.rstrip('.')})" if self.help else ""
            raise ConfigError(f"{self.flag} must be a positive number{what}, got {value}")
        low, high = self.low, self.high
        if (low is not None and value < low) or (high is not None and value > high):
            kind = "an integer" if self.kind is int else "a number"
            if high is None:
                raise ConfigError(f"{self.flag} must be {kind} >= {low:g}, got {value}")
            raise ConfigError(f"{self.flag} must be {kind} from {low:g} to {high:g}, got {value}")

    def name_part(self, value: Any, short: str | None = None) -> str:
        """``-a1.78``: this field's part of a run name."""
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return f"-{self.short if short is None else short}{text}"


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
