"""The JSON Schema of ``cnnaudit.yaml``, generated from the config dataclasses.

Why generated: the validator in :mod:`pytest_cnnaudit.config` walks the same
dataclass fields, so editors that complete and check the file against this
schema agree with what the plugin accepts. The shipped copy
(``pytest_cnnaudit/data/cnnaudit.schema.json``) is regenerated with
``python -m pytest_cnnaudit.config.schema > pytest_cnnaudit/data/cnnaudit.schema.json``
and a test keeps it in sync.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Union

from .model import AuditConfig

SCHEMA_ID = "https://pytest-cnnaudit.invalid/cnnaudit.schema.json"


def _type_schema(hint: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [_type_schema(a) for a in args if a is not type(None)]
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        return {"anyOf": [schema, {"type": "null"}]} if type(None) in args else schema
    if dataclasses.is_dataclass(hint):
        return object_schema(hint)
    if origin is Literal:
        return {"enum": list(args)}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type_schema(args[0])}
        return {
            "type": "array",
            "prefixItems": [_type_schema(a) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin is dict or hint is dict:
        if args and dataclasses.is_dataclass(args[1]):
            return {"type": "object", "additionalProperties": _type_schema(args[1])}
        return {"type": "object"}
    return {
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        float: {"type": "number"},
        str: {"type": "string"},
    }.get(hint, {})


def _field_schema(field: dataclasses.Field, hint: Any) -> dict[str, Any]:
    overrides = field.metadata.get("overrides")
    schema = object_schema(overrides, partial=True) if overrides is not None else _type_schema(hint)
    schema = dict(schema)
    if field.metadata.get("doc"):
        schema["description"] = field.metadata["doc"]
    _apply_range(schema, field.metadata.get("low"), field.metadata.get("high"))
    if field.metadata.get("keys"):
        schema["propertyNames"] = {"enum": list(field.metadata["keys"])}
    default = field.default if field.default is not dataclasses.MISSING else None
    if isinstance(default, (bool, int, float, str)) and overrides is None:
        schema["default"] = default
    return schema


def _apply_range(schema: dict[str, Any], low: float | None, high: float | None) -> None:
    """Put the field's range on the numbers themselves (through optional and list wrappers)."""
    for option in schema.get("anyOf", []):
        _apply_range(option, low, high)
    targets = schema.get("prefixItems") or ([schema["items"]] if "items" in schema else [schema])
    for target in targets:
        if target.get("type") in ("integer", "number"):
            if low is not None:
                target["minimum"] = low
            if high is not None:
                target["maximum"] = high


def object_schema(cls: type, partial: bool = False) -> dict[str, Any]:
    """Schema of one config dataclass: every key known, no others allowed."""
    hints = typing.get_type_hints(cls)
    properties = {
        f.name: _field_schema(f, hints[f.name]) for f in dataclasses.fields(cls) if not f.metadata.get("internal")
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__:
        schema["description"] = " ".join(cls.__doc__.split())
    return schema


def config_schema() -> dict[str, Any]:
    """The whole ``cnnaudit.yaml`` schema (JSON Schema draft 2020-12)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "cnnaudit.yaml",
        **object_schema(AuditConfig),
    }


if __name__ == "__main__":
    print(json.dumps(config_schema(), indent=2, sort_keys=True))
