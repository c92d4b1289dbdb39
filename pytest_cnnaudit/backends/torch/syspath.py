"""Folders on ``sys.path`` for the length of one load, and the modules imported from them forgotten after.

Why forget them: two models whose folders both hold an ``arch.py`` must each get their own; a
module left in ``sys.modules`` would answer the second model's import (or unpickling) with the
first one's classes. The loaded objects keep their classes alive without the cache entry.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def folders_on_sys_path(folders: Iterable[Path]) -> Iterator[None]:
    """Put ``folders`` first on ``sys.path`` (those not there already) while the block runs."""
    added = [str(folder) for folder in dict.fromkeys(f.resolve() for f in folders) if str(folder) not in sys.path]
    known = set(sys.modules)
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            sys.path.remove(folder)
        roots = [Path(folder) for folder in added]
        for name in set(sys.modules) - known:
            if _imported_from(sys.modules.get(name), roots):
                del sys.modules[name]


def _imported_from(module: object, roots: list[Path]) -> bool:
    file = getattr(module, "__file__", None)
    if not file:
        return False
    resolved = Path(file).resolve()
    return any(resolved.is_relative_to(root) for root in roots)
