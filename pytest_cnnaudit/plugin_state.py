"""The plugin's per-run state, kept in ``config.stash`` (never on ``config`` itself)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from .config import AuditConfig


@dataclass
class PluginState:
    """Validated once in ``pytest_configure``; records gathered from item reports (controller side)."""

    audit_config: AuditConfig
    config_path: str | None
    baseline: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[tuple[str, str], str] = field(default_factory=dict)
    pictures: bool = False  # capture picture data for --cnnaudit-html / pytest-html
    progress: Callable[[str, int, int], None] | None = None  # (model, images done, total); None: quiet
    layer_ids: set[str] = field(default_factory=set)  # of every model collected, for the layers: globs


STATE = pytest.StashKey[PluginState]()
