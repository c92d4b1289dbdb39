"""The weights inside a checkpoint as people save them, with their keys fitted to the factory's module.

Training code wraps the weights: Lightning saves ``{"state_dict": ..., "epoch": 3, ...}``, others
``{"model": ...}``, ``{"ema": ...}`` or ``{"model_state_dict": ...}``; ``nn.DataParallel`` and DDP
put ``module.`` before every key, ``torch.compile`` ``_orig_mod.``, a wrapping module ``model.``.
The state_dict is found without being told where when only one value can be it, and a wrapper's
prefix is stripped when that alone makes the keys those of the module; anything less certain is
an error that names the config key settling it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ...config.model import ModelSpec
from ...errors import ModelError

#: Prefixes wrappers put before every key, stripped (also one after another: ``module._orig_mod.``)
#: only when that makes the keys exactly those of the factory's module.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
#: Levels of nested dicts searched for the state_dict: ``{"ema": {"model": ...}}`` is two.
SEARCH_DEPTH = 2

Weights = Mapping[str, torch.Tensor] | torch.nn.Module


def is_state_dict(value: object) -> bool:
    """A non-empty mapping of str -> Tensor."""
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(key, str) and isinstance(item, torch.Tensor) for key, item in value.items())
    )


def find_weights(loaded: Any, spec: ModelSpec, path: Path) -> tuple[Weights, str | None]:
    """The state_dict (or pickled module) in what a file held, and the dotted key it was under."""
    if spec.state_dict_key:
        return _at_key(loaded, spec.state_dict_key, path), spec.state_dict_key
    if _is_weights(loaded):
        return loaded, None
    found = dict(_candidates(loaded, "", SEARCH_DEPTH))
    if len(found) == 1:
        ((key, weights),) = found.items()
        return weights, key
    if found:
        raise ModelError(
            f"{path}: the checkpoint holds {len(found)} state_dicts ({', '.join(found)}); "
            "choose one with models[].state_dict_key"
        )
    if isinstance(loaded, Mapping):
        raise ModelError(
            f"{path}: the checkpoint holds no state_dict (a dict of tensors) in its keys {_keys(loaded)}; "
            "name the key holding the weights with models[].state_dict_key"
        )
    raise ModelError(f"{path}: holds neither a state_dict nor a module (got {type(loaded).__name__})")


def _is_weights(value: object) -> bool:
    return is_state_dict(value) or isinstance(value, torch.nn.Module)


def _candidates(value: Any, prefix: str, depth: int) -> Iterator[tuple[str, Weights]]:
    if depth == 0 or not isinstance(value, Mapping):
        return
    for key, item in value.items():
        if not isinstance(key, str):
            continue
        if _is_weights(item):
            yield f"{prefix}{key}", item
        else:
            yield from _candidates(item, f"{prefix}{key}.", depth - 1)


def _at_key(loaded: Any, dotted: str, path: Path) -> Weights:
    value, walked = loaded, []
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            where = f"'{'.'.join(walked)}'" if walked else "the checkpoint"
            keys = f"; its keys: {_keys(value)}" if isinstance(value, Mapping) else f" is a {type(value).__name__}"
            raise ModelError(f"{path}: models[].state_dict_key {dotted!r}: {where} has no key {part!r}{keys}")
        value = value[part]
        walked.append(part)
    if not _is_weights(value):
        raise ModelError(
            f"{path}: models[].state_dict_key {dotted!r} holds a value of type {type(value).__name__}, "
            "not a state_dict (a dict of tensors)"
        )
    return value


def _keys(mapping: Mapping[Any, Any], shown: int = 8) -> str:
    keys = [repr(key) for key in mapping]
    more = f", ... ({len(keys)} keys)" if len(keys) > shown else ""
    return f"[{', '.join(keys[:shown])}{more}]"


def fit_keys(
    state_dict: Mapping[str, torch.Tensor], expected: Collection[str], spec: ModelSpec, path: Path
) -> tuple[Mapping[str, torch.Tensor], str | None]:
    """The state_dict with the keys the module expects where a prefix is all that differs, and a note saying so."""
    if spec.strip_prefix:
        return _strip_explicit(state_dict, spec.strip_prefix, path)
    if _fits(state_dict, expected):
        return state_dict, None
    keys, stripped = list(state_dict), ""
    while prefix := next((p for p in WRAPPER_PREFIXES if all(key.startswith(p) for key in keys)), None):
        keys = [key[len(prefix) :] for key in keys]
        stripped += prefix
        if _fits(keys, expected):
            fitted = _under(state_dict, stripped)
            return fitted, f"stripped prefix {stripped!r} from {len(fitted)} state_dict keys"
    return state_dict, None


def _fits(keys: Collection[str], expected: Collection[str]) -> bool:
    """The module's keys exactly, or all but BatchNorm's counters, which files older than torch 0.4.1 lack
    and ``load_state_dict`` fills in."""
    wanted, found = set(expected), set(keys)
    return found == wanted or found == {key for key in wanted if not key.endswith(".num_batches_tracked")}


def _under(state_dict: Mapping[str, torch.Tensor], prefix: str) -> OrderedDict[str, torch.Tensor]:
    """The entries under ``prefix``, renamed without it; torch's per-module version records follow them
    (``load_state_dict`` reads them to convert old layouts)."""
    fitted = OrderedDict((key[len(prefix) :], value) for key, value in state_dict.items() if key.startswith(prefix))
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        root = prefix[:-1]
        fitted._metadata = {  # type: ignore[attr-defined]
            ("" if name == root else name[len(prefix) :]): version
            for name, version in metadata.items()
            if name == root or name.startswith(prefix)
        }
    return fitted


def _strip_explicit(
    state_dict: Mapping[str, torch.Tensor], prefix: str, path: Path
) -> tuple[Mapping[str, torch.Tensor], str]:
    kept = _under(state_dict, prefix)
    if not kept:
        raise ModelError(
            f"{path}: no state_dict key starts with models[].strip_prefix {prefix!r} "
            f"(the first key is {next(iter(state_dict))!r})"
        )
    left_out = len(state_dict) - len(kept)
    note = f"stripped prefix {prefix!r} from {len(kept)} state_dict keys"
    left = f" and left out {left_out} key{'s' if left_out > 1 else ''} without it" if left_out else ""
    return kept, note + left


def state_dict_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str:
    """Where a file's tensors and the factory's module differ, in one short clause per kind.

    torch's own message lists every mismatch over many lines; the first of each kind and a
    count say what is wrong (usually the wrong factory_kwargs or the wrong architecture).
    """

    def first(keys: list[str], noun: str) -> str:
        more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
        return f"{noun} {keys[0]}{more}"

    shapes = [key for key in expected if key in found and tuple(expected[key].shape) != tuple(found[key].shape)]
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    clauses = []
    if shapes:
        key = shapes[0]
        others = len(shapes) - 1
        more = f" (and {others} more tensor{'s' if others > 1 else ''})" if others else ""
        clauses.append(f"{key} is {list(found[key].shape)} in the file, {list(expected[key].shape)} in the model{more}")
    if missing:
        clauses.append(first(missing, "the file lacks"))
    if unexpected:
        clauses.append(first(unexpected, "the model has no"))
    prefix = _prefix_holding(expected, found) if missing else None
    if prefix is not None:
        clauses.append(f"the file holds every key of the model under {prefix!r}: set models[].strip_prefix: {prefix!r}")
    return "; ".join(clauses)


def _prefix_holding(expected: Collection[str], found: Collection[str]) -> str | None:
    """A prefix under which the file holds every key the module expects (a Lightning module's ``model.``)."""
    if not expected:
        return None
    probe = next(iter(expected))
    for key in found:
        if key.endswith(f".{probe}"):
            prefix = key[: -len(probe)]
            if all(f"{prefix}{name}" in found for name in expected):
                return prefix
    return None
