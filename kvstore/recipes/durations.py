"""Validation of durations given to the recipes, in one place so every recipe refuses the same values."""

from __future__ import annotations

from kvstore.errors import ConfigError

__all__ = ["check_seconds"]


def check_seconds(what: str, value: object, *, allow_zero: bool = False) -> None:
    """Refuse ``value`` unless it is a positive (or, with ``allow_zero``, non-negative) number.

    ``bool`` is refused although it is an ``int``, and so is NaN (it compares false to everything).

    :raises ConfigError: naming ``what``, e.g. ``"mutex timeout must be a positive number of seconds"``.
    """
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and (value >= 0 if allow_zero else value > 0)):  # type: ignore[operator]
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{what} must be a {kind} number of seconds, not {value!r}")
