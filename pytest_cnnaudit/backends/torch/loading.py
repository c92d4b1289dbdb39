"""Opening a torch model file: TorchScript, ``torch.export`` archives, state_dicts with a factory, pickles.

Loading is safe: ``torch.load(weights_only=True)`` always, and a pickled whole
module is refused unless the config says ``trust_pickle: true``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ...config import ModelSpec
from ...errors import ModelError


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding a ``code/`` folder; state_dicts hold only data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


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


def _import_factory(spec: ModelSpec, config_dir: Path) -> Callable[..., torch.nn.Module]:
    """Import ``module:callable``, looking in the config file's folder first."""
    module_name, _, attribute = (spec.factory or "").partition(":")
    if not module_name or not attribute:
        raise ModelError(f"{spec.path}: factory {spec.factory!r} must look like 'module:callable'")
    sys.path.insert(0, str(config_dir))
    try:
        module = _import_from(config_dir, module_name)
    except Exception as exc:
        raise ModelError(
            f"{spec.path}: cannot import factory module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        sys.path.remove(str(config_dir))
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ModelError(f"{spec.path}: {module_name} has no callable {attribute!r}")
    return factory


def _state_dict_of(loaded: Any) -> dict[str, torch.Tensor] | None:
    """A state_dict, also inside the common ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints."""
    if isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return loaded
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in loaded:
                return _state_dict_of(loaded[key])
    return None


def _load_file(path: Path, spec: ModelSpec) -> Any:
    """What a torch file holds, loaded safely."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelError(
                f"{path}: reading .safetensors needs the safetensors package (pip install safetensors)"
            ) from None
        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: not a readable safetensors file: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # Only "Unsupported global" means a pickle of Python objects; corrupt bytes also fail the
        # weights-only unpickler, with a message that mentions weights_only too.
        if "Unsupported global" not in str(exc):
            raise ModelError(f"{path}: not a readable torch file ({_load_failure(exc)})") from None
        if not spec.trust_pickle:
            raise ModelError(
                f"{path}: holds pickled Python objects (a whole module?), which can run code when loaded; "
                "save a state_dict and name a factory, or set trust_pickle: true for this model if you trust the file"
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # the user opted in
    except Exception as exc:
        raise ModelError(f"{path}: cannot unpickle the file ({_load_failure(exc)})") from None


def _load_failure(exc: Exception) -> str:
    """The unpickler's own complaint, not torch's advice to turn weights_only off."""
    lines = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_torch_module(path: Path, spec: ModelSpec, config_dir: Path) -> tuple[torch.nn.Module | Any, str]:
    """(module or ExportedProgram or ScriptModule, format name)."""
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)), "torch.export"
        except Exception as exc:
            raise ModelError(f"{path}: not a readable torch.export archive ({type(exc).__name__}: {exc})") from None
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                # torch deprecates TorchScript in favour of torch.export; the user's archive is still valid.
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu"), "torchscript"
        except Exception as exc:
            raise ModelError(f"{path}: not a readable TorchScript archive ({type(exc).__name__})") from None
    loaded = _load_file(path, spec)
    if isinstance(loaded, torch.nn.Module):
        return loaded, "module"
    state_dict = _state_dict_of(loaded)
    if state_dict is None:
        raise ModelError(f"{path}: holds neither a state_dict nor a module (got {type(loaded).__name__})")
    if spec.factory is None:
        raise ModelError(f"{path}: is a state_dict; name the architecture with models[].factory: 'module:callable'")
    module = _import_factory(spec, config_dir)(**spec.factory_kwargs)
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:
        factory = f"{spec.factory} (factory_kwargs {spec.factory_kwargs})" if spec.factory_kwargs else spec.factory
        detail = _state_dict_mismatch(module.state_dict(), state_dict) or " ".join(str(exc).split())[:300]
        raise ModelError(f"{path}: does not fit factory {factory}: {detail}") from None
    return module, "state_dict"


def _state_dict_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> str:
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
    return "; ".join(clauses)
