"""pytest-cnnaudit: audit convolutional networks before they ship.

Public API (no pytest import): :func:`audit` a model, :func:`load_config` a
``cnnaudit.yaml``, and the audit document types it returns.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .config import AuditConfig, load_config
from .document import (
    AuditDocument,
    Baseline,
    LayerDocument,
    ModelDocument,
    Verdict,
)
from .engine.audit import audit
from .errors import CnnAuditError, ConfigError, ModelError, ProbeError

try:
    __version__ = version("pytest-cnnaudit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AuditConfig",
    "AuditDocument",
    "Baseline",
    "CnnAuditError",
    "ConfigError",
    "LayerDocument",
    "ModelDocument",
    "ModelError",
    "ProbeError",
    "Verdict",
    "__version__",
    "audit",
    "load_config",
]
