"""Opening a torch model file: TorchScript, ``torch.export`` archives, checkpoints with a factory, pickles.

Loading is safe (see :mod:`.pickles`): weights-only unpickling always, a pickled whole module only
with ``trust_pickle: true``. Checkpoints are read as people save them (see :mod:`.checkpoints`);
what had to be adapted to load one is said in :attr:`LoadedModel.notes`, for the report.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ...config.model import ModelSpec
from ...errors import ModelError
from .checkpoints import find_weights, fit_keys, state_dict_mismatch
from .factories import build_module
from .pickles import load_checkpoint


class LoadedModel(NamedTuple):
    """A model as read from its file, what kind of file it was, and what was done to load it."""

    model: Any  # torch.nn.Module, torch.export.ExportedProgram or torch.jit.ScriptModule
    format: str  # "torch.export", "torchscript", "module", "state_dict"
    notes: tuple[str, ...] = ()  # one line each, e.g. "stripped prefix 'module.' from 122 state_dict keys"


def load_torch_module(path: Path, spec: ModelSpec, config_dir: Path) -> LoadedModel:
    """The model in ``path``; a state_dict is loaded into the module ``spec.factory`` builds."""
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if path.suffix == ".pt2":
        try:
            return LoadedModel(torch.export.load(str(path)), "torch.export")
        except Exception as exc:
            raise ModelError(f"{path}: not a readable torch.export archive ({type(exc).__name__}: {exc})") from None
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                # torch deprecates TorchScript in favour of torch.export; the user's archive is still valid.
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
                return LoadedModel(torch.jit.load(str(path), map_location="cpu"), "torchscript")
        except Exception as exc:
            raise ModelError(f"{path}: not a readable TorchScript archive ({type(exc).__name__})") from None
    pythonpath = [config_dir / folder for folder in spec.pythonpath]
    weights, key = find_weights(_load_file(path, spec, [path.parent, *pythonpath]), spec, path)
    notes = [f"weights read from the checkpoint's key {key!r}"] if key is not None else []
    if isinstance(weights, torch.nn.Module):
        return LoadedModel(_in_float32(weights, notes), "module", tuple(notes))
    if spec.factory is None:
        raise ModelError(f"{path}: is a state_dict; name the architecture with models[].factory: 'module:callable'")
    module = build_module(spec, config_dir, pythonpath)
    state_dict, stripped = fit_keys(weights, module.state_dict().keys(), spec, path)
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:
        factory = f"{spec.factory} (factory_kwargs {spec.factory_kwargs})" if spec.factory_kwargs else spec.factory
        after = f" ({stripped})" if stripped else ""
        detail = state_dict_mismatch(module.state_dict(), state_dict) or " ".join(str(exc).split())[:300]
        raise ModelError(f"{path}: does not fit factory {factory}{after}: {detail}") from None
    return LoadedModel(module, "state_dict", (*notes, *([stripped] if stripped else [])))


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding a ``code/`` folder; state_dicts hold only data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _load_file(path: Path, spec: ModelSpec, search_path: list[Path]) -> Any:
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
    return load_checkpoint(path, spec.trust_pickle, search_path)


def _in_float32(module: torch.nn.Module, notes: list[str]) -> torch.nn.Module:
    """A pickled module saved in half precision (as YOLOv5 saves its weights) runs on float32 probes."""
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters() if p.is_floating_point()})
    if dtypes and dtypes != ["float32"]:
        notes.append(f"{'/'.join(dtypes)} weights converted to float32 for measurement")
        return module.float()
    return module
