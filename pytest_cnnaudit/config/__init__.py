"""The configuration: dataclasses (:mod:`.model`, :mod:`.checks`, :mod:`.inputs`), activation families and
their default limits (:mod:`.families`), YAML loading with located errors (:mod:`.loading`), and the JSON
Schema generated from the dataclasses (:mod:`.schema`)."""

from .checks import (
    ChecksConfig,
    ColorCheck,
    DeadFiltersCheck,
    FamilyDeadFilters,
    FamilySparsity,
    FirstLayerColor,
    LayerColorBound,
    LrSanityCheck,
    SparsityCheck,
)
from .loading import load_config, parse_config
from .model import (
    AuditConfig,
    BaselineConfig,
    InputSpec,
    LayerRule,
    ModelSpec,
    ProbeConfig,
    RuntimeConfig,
)
from .rules import apply_overrides

__all__ = [
    "AuditConfig",
    "BaselineConfig",
    "ChecksConfig",
    "ColorCheck",
    "DeadFiltersCheck",
    "FamilyDeadFilters",
    "FamilySparsity",
    "FirstLayerColor",
    "InputSpec",
    "LayerColorBound",
    "LayerRule",
    "LrSanityCheck",
    "ModelSpec",
    "ProbeConfig",
    "RuntimeConfig",
    "SparsityCheck",
    "apply_overrides",
    "load_config",
    "parse_config",
]
