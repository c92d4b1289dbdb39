"""The factory that builds a state_dict's architecture: ``module:attribute``, the attribute dotted or not.

Entry-point syntax, as in ``package.module:Class.from_name``: the module is imported (a file
beside the config first, then ``models[].pythonpath``, then the installed packages) and the
attribute path is followed from it. Whatever goes wrong is one line naming the factory.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ...config.model import ModelSpec
from ...errors import ModelError
from .syspath import folders_on_sys_path


def build_module(spec: ModelSpec, config_dir: Path, pythonpath: Sequence[Path]) -> torch.nn.Module:
    """The factory's module, built with ``factory_kwargs``."""
    factory = _import_factory(spec, config_dir, pythonpath)
    try:
        module = factory(**spec.factory_kwargs)
    except Exception as exc:
        raise ModelError(
            f"{spec.path}: factory {spec.factory} raised {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{spec.path}: factory {spec.factory} returned {_described(module)}, not a torch.nn.Module")
    return module


def _import_factory(spec: ModelSpec, config_dir: Path, pythonpath: Sequence[Path]) -> Callable[..., Any]:
    module_name, _, attribute = (spec.factory or "").partition(":")
    if not module_name or not attribute:
        raise ModelError(f"{spec.path}: factory {spec.factory!r} must look like 'module:callable'")
    try:
        with folders_on_sys_path([config_dir, *pythonpath]):
            module = _import_from(config_dir, module_name)
    except Exception as exc:
        raise ModelError(
            f"{spec.path}: cannot import factory module {module_name!r}: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    target: Any = module
    parts = attribute.split(".")
    for depth, part in enumerate(parts, 1):
        if not hasattr(target, part):
            raise ModelError(f"{spec.path}: {module_name} has no attribute {'.'.join(parts[:depth])!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelError(f"{spec.path}: {module_name} has no callable {attribute!r}")
    return target


def _import_from(config_dir: Path, module_name: str) -> Any:
    """A module file beside the config is loaded from there, under a name of its own: two
    configs whose folders both hold an ``arch.py`` must not share whichever was imported first."""
    candidate = config_dir.joinpath(*module_name.split(".")).with_suffix(".py")
    if not candidate.is_file():
        return importlib.import_module(module_name)
    unique = f"_cnnaudit_factory_{abs(hash(str(candidate.resolve())))}_{module_name.replace('.', '_')}"
    if unique not in sys.modules:
        module_spec = importlib.util.spec_from_file_location(unique, candidate)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[unique] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[unique]
            raise
    return sys.modules[unique]


def _described(value: object) -> str:
    """What a factory returned, in a few words: 'None', 'a tuple', 'the class Net'."""
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    name = type(value).__qualname__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
