"""The checks, in item order: each implements :class:`~pytest_cnnaudit.engine.check.Check`.

One module (or folder, where a check has a measurement and verdicts of its own) per check;
:data:`CHECKS` is the only list of them, read by the engine (judging) and by planning (items).
"""

from __future__ import annotations

from ..engine.check import Check
from .baseline import BaselineChecker
from .color.check import ColorChecker
from .dead_filters import DeadFiltersChecker
from .lr_sanity.check import LrSanityChecker
from .sparsity import SparsityChecker

CHECKS: tuple[Check, ...] = (
    SparsityChecker(),
    DeadFiltersChecker(),
    ColorChecker(),
    LrSanityChecker(),
    BaselineChecker(),
)
