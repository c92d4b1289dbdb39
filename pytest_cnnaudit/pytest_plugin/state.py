"""The plugin's per-run state, kept in ``config.stash`` (never on ``config`` itself)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..config.model import AuditConfig
from ..document import Baseline, ModelDocument
from ..document.json_form import from_json_value, to_json_value
from ..document.pictures import Pictures
from ..engine.check import ModelLayout
from ..engine.planning import OpenedModel
from .progress import MeasuringProgress

#: What planning found per model file (by resolved path): its layout, or why it cannot be opened.
Layouts = dict[str, ModelLayout | str]


@dataclass
class PluginState:
    """Validated once in ``pytest_configure``; documents and outcomes gathered from item reports (controller)."""

    audit_config: AuditConfig
    config_path: str | None
    baseline: Baseline | None = None
    pictures: bool = False  # capture picture data for --cnnaudit-html / pytest-html
    config_found: str = ""  # how the config was found, when the header must say it (the invocation folder's)
    progress: MeasuringProgress | None = None  # called (model, images done, total); None: quiet
    layouts: Layouts | None = None  # planned once per session (the controller's, handed to xdist workers)
    opened: dict[str, OpenedModel] = field(default_factory=dict)  # kept open from planning when not isolated
    layer_ids: set[str] = field(default_factory=set)  # of every model collected, for the layers: globs
    documents: dict[str, ModelDocument] = field(default_factory=dict)  # by model name
    pictures_by_model: dict[str, Pictures] = field(default_factory=dict)
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)  # model name -> item id -> pytest outcome

    def documents_with_outcomes(self) -> list[ModelDocument]:
        """Every reported model, sorted by name, each verdict's outcome pytest's (``not run`` when deselected)."""
        return [self.documents[name].with_outcomes(self.outcomes.get(name, {})) for name in sorted(self.documents)]


def layouts_to_text(layouts: Layouts) -> str:
    """Layouts as JSON text: what pytest-xdist hands to a worker (``workerinput``)."""
    return json.dumps({path: to_json_value(layout) for path, layout in layouts.items()})


def layouts_from_text(text: str) -> Layouts:
    return {
        path: value if isinstance(value, str) else from_json_value(ModelLayout, value)
        for path, value in json.loads(text).items()
    }


def path_key(path: Path) -> str:
    return str(path.resolve())


STATE = pytest.StashKey[PluginState]()
