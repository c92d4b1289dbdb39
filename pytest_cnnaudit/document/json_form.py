"""Dataclasses to JSON values and back, by their type hints.

Why one generic walk: every type of the audit document is a frozen dataclass, so writing
and reading them by their fields keeps the JSON keys and the Python names identical by
construction. Reading is strict: an unknown key, or a missing one without a default, is a
``TypeError`` that names the class. Floats are rounded to 6 significant digits when
written, so that reports are byte-identical across runs and machines whose float
arithmetic differs in the last bits.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Union


def round_float(value: float | None) -> float | None:
    """``value`` to 6 significant digits (None stays None)."""
    return None if value is None else float(f"{float(value):.6g}")


def to_json_value(value: Any) -> Any:
    """A JSON-able value: dataclasses as objects, tuples as lists, floats rounded, numpy scalars as Python."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_json_value(getattr(value, field.name)) for field in _fields(type(value))}
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return round_float(value)
    if isinstance(value, dict):
        return {str(key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(item) for item in value]
    if hasattr(value, "item"):  # numpy scalars
        return to_json_value(value.item())
    raise TypeError(f"cannot write {type(value).__name__} to the JSON report")


def from_json_value(hint: Any, value: Any) -> Any:
    """Read ``value`` as the type ``hint`` (dataclasses, tuples, optionals, dicts, scalars)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in args if a is not type(None)]
        return from_json_value(options[0], value) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return from_json_object(hint, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json_value(args[0], item) for item in value)
        return tuple(from_json_value(arg, item) for arg, item in zip(args, value))
    if origin is dict:
        return {key: from_json_value(args[1], item) for key, item in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def from_json_object(cls: type, data: dict[str, Any]) -> Any:
    """An instance of dataclass ``cls`` from its JSON object; unknown or missing keys raise ``TypeError``."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = _hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}")
    return cls(**{key: from_json_value(hints[key], value) for key, value in data.items()})


def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return tuple(field for field in dataclasses.fields(cls) if not field.metadata.get("internal"))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    names = {field.name for field in _fields(cls)}
    return {name: hint for name, hint in typing.get_type_hints(cls).items() if name in names}
