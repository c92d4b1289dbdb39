"""The helpers the config dataclasses are written with: field metadata, cross-field rules, overrides.

Kept apart from :mod:`.model` so that the contract there reads as the list of sections and
keys it is.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def described(text: str, low: float | None = None, high: float | None = None, **extra: Any) -> dict[str, Any]:
    """A field's metadata: its documentation and, for numbers, the allowed range (None: unbounded)."""
    return {"doc": text, "low": low, "high": high, **extra}


class FieldRuleError(ValueError):
    """A broken cross-field rule: ``key`` is the field the loader points the error at (dotted when nested)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def require(condition: bool, key: str, message: str) -> None:
    """Cross-field rule inside ``__post_init__``: raised as (key, message) and located by the loader."""
    if not condition:
        raise FieldRuleError(key, message)


def apply_overrides(base: Any, overrides: dict[str, Any]) -> Any:
    """``base`` with the (already validated) partial ``overrides`` dict applied, recursively.

    A nested section is merged key by key; any other value (a list of bounds included) replaces
    the base's. A cross-field rule the result breaks raises :class:`FieldRuleError` with the
    dotted key inside ``overrides`` (``sparsity.min``).
    """
    changes = {}
    for key, value in overrides.items():
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            try:
                changes[key] = apply_overrides(current, value)
            except FieldRuleError as exc:
                raise FieldRuleError(f"{key}.{exc.key}", str(exc)) from None
        else:
            changes[key] = value
    return dataclasses.replace(base, **changes) if changes else base


def enable_given_sections(checks: Any, given: dict[str, Any]) -> Any:
    """A checks section (a ``ChecksConfig`` or a partial dict of one) with every check whose section was
    ``given`` turned on, unless that section sets ``enabled`` itself: a configured check runs."""
    switched_on = [name for name, section in given.items() if isinstance(section, dict) and "enabled" not in section]
    if isinstance(checks, dict):
        return {
            name: {"enabled": True, **section} if name in switched_on else section for name, section in checks.items()
        }
    changes = {name: dataclasses.replace(getattr(checks, name), enabled=True) for name in switched_on}
    return dataclasses.replace(checks, **changes) if changes else checks
