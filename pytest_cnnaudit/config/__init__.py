"""The configuration: dataclasses (:mod:`.model`), YAML loading with located errors (:mod:`.loading`),
and the JSON Schema generated from the dataclasses (:mod:`.schema`)."""

from .loading import load_config, parse_config
from .model import (
    AuditConfig,
    BaselineConfig,
    ChecksConfig,
    ColorCheck,
    DeadFiltersCheck,
    FirstLayerColor,
    InputSpec,
    LayerColorBound,
    LayerRule,
    LrSanityCheck,
    ModelSpec,
    ProbeConfig,
    RuntimeConfig,
    SparsityCheck,
)
from .rules import apply_overrides

__all__ = [
    "AuditConfig",
    "BaselineConfig",
    "ChecksConfig",
    "ColorCheck",
    "DeadFiltersCheck",
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
