"""``torch.load`` that runs no code unless the user says so.

Every file is read with torch's weights-only unpickler, which builds tensors, numbers, strings and
containers and refuses any other class. Training code leaves a few harmless objects beside the
weights (Lightning's hyper-parameter ``AttributeDict``, an ``argparse.Namespace``, a checkpoint
folder as a ``Path``, numpy scalars, timings): those are allowed under their pickled names, the
Lightning classes as plain dicts so that Lightning need not be installed. Anything else (a pickled
whole module, a user's config class) loads only with ``models[].trust_pickle: true``, and then with
the model's folder and ``models[].pythonpath`` on ``sys.path`` so that its classes are found.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ModelError
from .syspath import folders_on_sys_path


def _numpy_globals() -> list[tuple[Any, str]]:
    """numpy scalars, dtypes and arrays, under numpy 1's and numpy 2's module names."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray  # type: ignore[no-redef]
    found: list[tuple[Any, str]] = [(np.dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found += [(multiarray.scalar, f"{module}.scalar"), (multiarray._reconstruct, f"{module}._reconstruct")]
    # An unpickled dtype is an instance of its own class (numpy.dtypes.Float64DType), which torch must allow to build.
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes["All"] if code not in "Mm"}
    return found + [(cls, f"numpy.dtypes.{cls.__name__}") for cls in dtype_classes]


#: (stand-in, pickled name) of the objects training code leaves in checkpoints; none runs code when built.
HARMLESS_GLOBALS: tuple[tuple[Any, str], ...] = (
    (dict, "lightning.fabric.utilities.data.AttributeDict"),
    (dict, "lightning_fabric.utilities.data.AttributeDict"),
    (dict, "pytorch_lightning.utilities.parsing.AttributeDict"),
    (argparse.Namespace, "argparse.Namespace"),
    *(
        (pathlib.PurePosixPath, f"{module}.{name}")
        for module in ("pathlib", "pathlib._local")
        for name in ("PosixPath", "PurePosixPath")
    ),
    *(
        (pathlib.PureWindowsPath, f"{module}.{name}")
        for module in ("pathlib", "pathlib._local")
        for name in ("WindowsPath", "PureWindowsPath")
    ),
    (datetime.timedelta, "datetime.timedelta"),
    (datetime.datetime, "datetime.datetime"),
    (datetime.date, "datetime.date"),
    *_numpy_globals(),
)

#: Modules and functions no model file has a use for, only an attack: refused even when trusted.
#: Not a sandbox: a trusted pickle can still run code through any class it names.
NEVER_IN_A_MODEL = (
    *("os.", "posix.", "nt.", "sys.", "subprocess.", "shutil.", "socket.", "runpy."),
    *(f"builtins.{name}" for name in ("eval", "exec", "compile", "__import__", "open", "breakpoint")),
)


def load_checkpoint(path: Path, trust_pickle: bool, search_path: Sequence[Path]) -> Any:
    """What a ``torch.save`` file holds; with ``trust_pickle``, ``search_path`` is on ``sys.path`` meanwhile."""
    try:
        with torch.serialization.safe_globals(list(HARMLESS_GLOBALS)), warnings.catch_warnings():
            # torch warns of a pickle protocol it may not read before failing on a plain pickle: the error says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # Only an unsupported global means a pickle of Python objects; corrupt bytes also fail the
        # weights-only unpickler, with a message that mentions weights_only too.
        if "unsupported global" not in str(exc).lower():
            if _plain_pickle(path):
                raise ModelError(
                    f"{path}: a plain Python pickle (pickle.dump), not a torch.save file: cnnaudit does not "
                    "unpickle it (it can run code); save the weights with torch.save(model.state_dict(), path)"
                ) from None
            raise ModelError(f"{path}: not a readable torch file ({load_failure(exc)})") from None
        names = _unsafe_globals(path, exc)
    attack = [name for name in names if name.startswith(NEVER_IN_A_MODEL)]
    if attack:
        raise ModelError(
            f"{path}: its pickle calls {_listed(attack)}, which no model file needs: refused, even with "
            "trust_pickle: true"
        )
    if not trust_pickle:
        raise ModelError(
            f"{path}: holds pickled Python objects ({_listed(names)}), which can run code when loaded; save a "
            "state_dict and name a factory, or set trust_pickle: true for this model if you trust the file"
        )
    try:
        with folders_on_sys_path(search_path):
            return torch.load(path, map_location="cpu", weights_only=False)  # the user opted in
    except Exception as exc:
        raise ModelError(f"{path}: cannot unpickle the file ({load_failure(exc)})") from None


def _plain_pickle(path: Path) -> bool:
    """Whether the file is a pickle of its own: neither torch.save's zip archive nor its legacy format,
    whose first pickle is a magic number (protocol 2, then LONG1)."""
    try:
        with open(path, "rb") as file:
            head = file.read(3)
        return not zipfile.is_zipfile(path) and head[:1] == b"\x80" and head[2:3] != b"\x8a"
    except OSError:
        return False


def _unsafe_globals(path: Path, exc: Exception) -> list[str]:
    """The classes and functions the pickle names beyond the allowed ones, read without running it."""
    try:
        with torch.serialization.safe_globals(list(HARMLESS_GLOBALS)):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # the legacy (non-zip) format: the refusal names the first one
        names = re.findall(r"GLOBAL (\S+)", str(exc))[:1]
    # The user's own classes first: torch's (a pickled module's Conv2d) say less about the file.
    return sorted(names, key=lambda name: (name.startswith("torch."), name)) or ["an object torch does not allow"]


def _listed(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def load_failure(exc: Exception) -> str:
    """The unpickler's own complaint, not torch's advice to turn weights_only off."""
    lines = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
