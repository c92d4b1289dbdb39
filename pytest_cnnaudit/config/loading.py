"""Read ``cnnaudit.yaml`` into :class:`~pytest_cnnaudit.config.model.AuditConfig`, validated before any model loads.

Every error names the file, the line, the dotted key, what was given and what
is allowed; an unknown key also gets the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ..errors import ConfigError
from .model import AuditConfig
from .rules import FieldRuleError, apply_overrides, enable_given_sections


class _LinedDict(dict):
    """A mapping that remembers the line of each key (1-based) and of itself."""

    line: int = 0
    key_lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LinedDict:
    mapping = _LinedDict()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        # Keys are taken as written: YAML 1.1 would turn a key like ``no`` or ``on`` into a boolean.
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[str(key)] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 reads 1e-4 (no dot) as a string; learning rates are written that way, so read it as YAML 1.2 does.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


@dataclass(frozen=True)
class _Where:
    """Where a value sits: file, dotted key, line."""

    file: str
    path: str
    line: int

    def child(self, key: str | int, line: int) -> _Where:
        if isinstance(key, str) and not key.isprintable():
            key = repr(key)  # a key with a newline or control character must not break the one-line error
        path = f"{self.path}[{key}]" if isinstance(key, int) else (f"{self.path}.{key}" if self.path else key)
        return _Where(self.file, path, line)

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.file}:{self.line}: {self.path or 'top level'}: {message}")


def load_config(path: Path | str | None) -> AuditConfig:
    """Read and validate ``cnnaudit.yaml``; ``None`` gives the defaults."""
    if path is None:
        return AuditConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    return parse_config(text, str(path))


def parse_config(text: str, source: str = "<config>") -> AuditConfig:
    """Validate YAML text against :class:`AuditConfig`."""
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except ConfigError as exc:
        raise ConfigError(f"{source}:{str(exc).removeprefix('line ')}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{line}: not valid YAML: {problem}") from None
    if data is None:
        data = _LinedDict()
        data.line, data.key_lines = 1, {}
    config = _build(AuditConfig, data, _Where(source, "", 1))
    check_overrides(config, data, source)
    return dataclasses.replace(config, source=source)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _build(cls: type, data: Any, where: _Where, partial: bool = False) -> Any:
    """Validate ``data`` (a mapping) against dataclass ``cls``; partial returns a dict of overrides."""
    if not isinstance(data, dict):
        raise where.error(f"expected a mapping of {', '.join(_fields(cls))}, got {_describe(data)}")
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in data.items():
        line = getattr(data, "key_lines", {}).get(str(key), where.line)
        if key not in fields:
            raise _unknown_key(str(key), fields, where.child(str(key), line))
        child = where.child(key, line)
        metadata = fields[key].metadata
        if metadata.get("overrides") is not None:
            values[key] = _build(metadata["overrides"], raw, child, partial=True)
        else:
            values[key] = _convert(hints[key], raw, child, partial)
            _check_numbers(values[key], metadata, child)
            _check_keys(values[key], metadata, child)
        if metadata.get("sections_enable"):
            values[key] = enable_given_sections(values[key], raw)
    if partial:
        _validate_partial(cls, values, where)
        return values
    try:
        return cls(**values)
    except FieldRuleError as exc:
        line = getattr(data, "key_lines", {}).get(exc.key, where.line)
        raise where.child(exc.key, line).error(str(exc)) from None


def _validate_partial(cls: type, values: dict[str, Any], where: _Where) -> None:
    """A partial override must still make a valid object when applied to the defaults (applied over the
    config's own sections, it is checked again by :func:`.overrides.check_overrides`)."""
    try:
        apply_overrides(cls(), values)
    except FieldRuleError as exc:
        raise where.child(exc.key, where.line).error(str(exc)) from None


def _unknown_key(key: str, fields: dict[str, Any], where: _Where) -> ConfigError:
    nearest = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
    hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
    return where.error(f"unknown key {key!r}{hint} (valid keys: {', '.join(fields)})")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _convert(hint: Any, raw: Any, where: _Where, partial: bool) -> Any:
    """Convert one YAML value to ``hint``; raise a located error with got/expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, raw, where, partial)
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw, where, partial)
    if origin is Literal:
        if raw not in args or isinstance(raw, bool):
            raise where.error(f"got {_describe(raw)}, expected one of {', '.join(map(str, args))}")
        return raw
    if origin is tuple:
        return _convert_tuple(args, raw, where, partial)
    if origin is dict or hint is dict:
        if not isinstance(raw, dict):
            raise where.error(f"got {_describe(raw)}, expected a mapping")
        if args and dataclasses.is_dataclass(args[1]):  # like a list in an override: each entry built complete
            return {
                str(key): _build(args[1], value, where.child(str(key), _key_line(raw, key, where)))
                for key, value in raw.items()
            }
        return dict(raw)
    return _convert_scalar(hint, raw, where)


def _convert_tuple(args: tuple, raw: Any, where: _Where, partial: bool) -> tuple:
    if not isinstance(raw, list):
        raise where.error(f"got {_describe(raw)}, expected a list")
    if len(args) == 2 and args[1] is Ellipsis:
        item_types = [args[0]] * len(raw)
    else:
        if len(raw) != len(args):
            raise where.error(f"got {len(raw)} values, expected {len(args)}")
        item_types = list(args)
    # A list in an override replaces the whole list, so each of its items is built complete.
    return tuple(
        _convert(t, item, where.child(i, _line_of(item, where)), partial=False)
        for i, (t, item) in enumerate(zip(item_types, raw))
    )


def _key_line(mapping: Any, key: Any, where: _Where) -> int:
    return getattr(mapping, "key_lines", {}).get(str(key), where.line)


def _check_keys(value: Any, meta: dict[str, Any], where: _Where) -> None:
    """A mapping whose keys are names from a fixed list (activation families) names only those."""
    allowed = meta.get("keys")
    if allowed is None or not isinstance(value, dict):
        return
    for key in value:
        if key not in allowed:
            nearest = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.5)
            hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
            raise where.child(str(key), where.line).error(f"unknown name {key!r}{hint} (names: {', '.join(allowed)})")


def _line_of(item: Any, where: _Where) -> int:
    return getattr(item, "line", where.line)


def _convert_scalar(hint: type, raw: Any, where: _Where) -> Any:
    if hint is bool:
        if not isinstance(raw, bool):
            raise where.error(f"got {_describe(raw)}, expected true or false")
        return raw
    if hint in (int, float):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (hint is int and not float(raw).is_integer()):
            raise where.error(f"got {_describe(raw)}, expected {'an integer' if hint is int else 'a number'}")
        return hint(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise where.error(f"got {_describe(raw)}, expected a string")
        return raw
    if hint is typing.Any:
        return raw
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in the dataclasses above


def _check_numbers(value: Any, meta: dict[str, Any], where: _Where) -> None:
    """Numbers (and tuples of numbers) must be finite and lie in the field's [low, high]."""
    low, high = meta.get("low"), meta.get("high")
    allowed = f"{low if low is not None else '-inf'} .. {high if high is not None else 'inf'}"
    for number in value if isinstance(value, tuple) else (value,):
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            continue
        if not math.isfinite(number):
            within = f" (allowed: {allowed})" if low is not None or high is not None else ""
            raise where.error(f"got {number!r}, expected a finite number{within}")
        if (low is not None and number < low) or (high is not None and number > high):
            raise where.error(f"got {number!r}, expected a value in {allowed}")


def check_overrides(config: AuditConfig, data: Any, source: str) -> None:
    """Every override holds where it applies, and every layer rule's check section can take effect.

    A model's ``checks`` is applied over the top-level ones, and each ``layers:`` rule over those of
    the top level and of every model: a cross-field rule broken only in combination (a model's
    ``sparsity.max`` below the top level's ``min``) is found here, before any model loads, not
    when a layer is planned. A rule's section for a check that is off for every model would
    change nothing, and is refused.
    """
    bases = [("the top-level checks", config.checks)]
    for index, spec in enumerate(config.models):
        path = (data, source, "models", index, "checks")
        bases.append(
            (f"models[{index}] ({spec.path})", _applied(config.checks, spec.checks, path, "the top-level checks"))
        )
    for index, rule in enumerate(config.layers):
        path = (data, source, "layers", index, "checks")
        for name, base in bases:
            _applied(base, rule.checks, path, f"the checks of {name}")
        for check, section in rule.checks.items():
            if "enabled" not in section and not _runs_somewhere(config, check, [base for _, base in bases]):
                here = "" if check == "lr_sanity" else ", or give enabled: true here for these layers only"
                raise _located(*path, check).error(
                    f"{check} is off for every model, so this rule would change nothing; turn it on under "
                    f"checks.{check} (or a model's checks){here}"
                )


def _applied(base: Any, overrides: dict[str, Any], path: tuple[Any, ...], over: str) -> Any:
    """``overrides`` applied over ``base``; a broken cross-field rule is located at its key under ``path``."""
    try:
        return apply_overrides(base, overrides)
    except FieldRuleError as exc:
        raise _located(*path, *exc.key.split(".")).error(f"{exc} (applied over {over})") from None


def _runs_somewhere(config: AuditConfig, check: str, bases: list[Any]) -> bool:
    """Whether ``check`` is on for some model, or explicitly for some layers (not lr_sanity: it runs per model)."""
    if any(getattr(base, check).enabled for base in bases):
        return True
    return check != "lr_sanity" and any(rule.checks.get(check, {}).get("enabled") for rule in config.layers)


def _located(data: Any, source: str, *path: str | int) -> _Where:
    """Where the value at ``path`` (keys and list indices from the top) sits; its nearest known line."""
    where, node = _Where(source, "", 1), data
    for key in path:
        if isinstance(node, dict) and key in node:
            line = getattr(node, "key_lines", {}).get(str(key), where.line)
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
            line = _line_of(node, where)
        else:
            node, line = None, where.line
        where = where.child(key, line)
    return where
