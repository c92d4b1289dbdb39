"""Which model files a run audits, and their layouts, found once per session before collection.

Model files are those named on the command line, every model file (known extension) in a folder
named there, recursively and sorted, and the config's ``models:``. They are opened once for
planning (in one isolated child, unless ``runtime.isolate`` is off) and closed; the layouts
(layers, input spec) are all collection needs, so xdist workers get them from the controller
instead of each opening every model again.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest

from ..backends import MODEL_SUFFIXES
from ..config.model import ModelSpec
from ..engine.check import ModelLayout
from ..engine.isolation import layouts_isolated
from ..engine.planning import open_or_reason
from .state import STATE, Layouts, PluginState, layouts_from_text, path_key

#: The key under which the controller hands its planned layouts to pytest-xdist workers.
WORKER_LAYOUTS = "cnnaudit_layouts"


def is_model_file(path: Path) -> bool:
    return path.suffix.lower() in MODEL_SUFFIXES and path.is_file()


def _skipped_folder(name: str, norecurse: list[str]) -> bool:
    return name.startswith(".") or name == "__pycache__" or any(fnmatch.fnmatch(name, glob) for glob in norecurse)


def models_in_folder(folder: Path, norecurse: list[str]) -> list[Path]:
    """Every model file under ``folder``, sorted, skipping the folders pytest does not recurse into."""
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not _skipped_folder(name, norecurse))
        found.extend(Path(root) / name for name in sorted(files) if Path(name).suffix.lower() in MODEL_SUFFIXES)
    return found


def _holds_tests(folder: Path) -> bool:
    return any(folder.rglob("test_*.py")) or any(folder.rglob("*_test.py"))


def model_files(config: pytest.Config) -> list[Path]:
    """The model files this run audits, in command-line order (folders expanded); a folder given on the
    command line that holds neither a model file nor tests is a usage error (the invocation folder or
    ``testpaths``, used when no path is given, are only searched)."""
    norecurse = list(config.getini("norecursedirs"))
    given = config.args_source == pytest.Config.ArgsSource.ARGS
    found: dict[str, Path] = {}
    for arg in config.args:
        path = Path(arg.split("::")[0])
        if path.is_dir():
            inside = models_in_folder(path, norecurse)
            if given and not inside and not _holds_tests(path):
                suffixes = ", ".join(MODEL_SUFFIXES)
                raise pytest.UsageError(f"cnnaudit: {arg} holds no model file (looked for {suffixes}) and no tests")
            found.update((path_key(model), model) for model in inside)
        elif is_model_file(path):
            found.setdefault(path_key(path), path)
    return list(found.values())


def plan_models(config: pytest.Config, state: PluginState) -> Layouts:
    """Every model file's layout, or the one line saying why it cannot be opened."""
    audit_config = state.audit_config
    models = [
        (path.resolve(), audit_config.model_spec(path), relative_to_root(path, config.rootpath))
        for path in model_files(config)
    ]
    if not models:
        return {}
    if audit_config.runtime.isolate:
        found = layouts_isolated(audit_config, models)
        return {str(path): layout for (path, _, _), layout in zip(models, found)}
    return {str(path): _open_in_process(state, path, spec, name) for path, spec, name in models}


def _open_in_process(state: PluginState, path: Path, spec: ModelSpec, name: str) -> ModelLayout | str:
    """``runtime.isolate: false``: open here and keep the model open for its measurement (opened once)."""
    opened = open_or_reason(path, state.audit_config, spec, name)
    if isinstance(opened, str):
        return opened
    state.opened[path_key(path)] = opened
    return opened.layout


def session_layouts(config: pytest.Config) -> Layouts:
    """Every model file's layout (or why it cannot be opened), planned once per session.

    An xdist worker gets the controller's (one plan per model for the whole run); otherwise the
    model files named on the command line, found in folders given there or listed in the config
    are planned together, in one isolated child unless ``runtime.isolate`` is off.
    """
    state = config.stash[STATE]
    if state.layouts is None:
        worker_input = getattr(config, "workerinput", None)
        if worker_input is not None and WORKER_LAYOUTS in worker_input:
            state.layouts = layouts_from_text(worker_input[WORKER_LAYOUTS])
        else:
            state.layouts = plan_models(config, state)
    return state.layouts


def relative_to_root(path: str | Path, root: Path) -> str:
    """How every report, node id and baseline names a model file (and the header its config): its path
    relative to the rootdir, ``/``-separated, with ``..`` when it lies outside (a model listed in a
    config elsewhere); absolute only when no relative path exists (another drive)."""
    absolute = os.path.abspath(path)  # as pytest makes node ids: symbolic links are not followed
    try:
        return Path(os.path.relpath(absolute, os.path.abspath(root))).as_posix()
    except ValueError:
        return Path(absolute).as_posix()


def layout_for(config: pytest.Config, path: Path) -> ModelLayout | str:
    """The layout of a model file collected without being planned (found by a route planning did not
    foresee): planned now, alone, the same way."""
    state = config.stash[STATE]
    layouts = session_layouts(config)
    key = path_key(path)
    if key not in layouts:
        name = relative_to_root(path, config.rootpath)
        spec = state.audit_config.model_spec(path)
        if state.audit_config.runtime.isolate:
            layouts[key] = layouts_isolated(state.audit_config, [(path.resolve(), spec, name)])[0]
        else:
            layouts[key] = _open_in_process(state, path.resolve(), spec, name)
    return layouts[key]
