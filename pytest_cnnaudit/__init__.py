"""pytest-cnnaudit: audit convolutional networks before they ship.

Public API (no pytest import): :func:`audit` a model, :func:`load_config` a
``cnnaudit.yaml``, and the frozen result types it returns.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .audit import audit
from .config import AuditConfig, load_config
from .errors import CnnAuditError, ConfigError, ModelError, ProbeError
from .result import AuditResult, LayerResult, ModelAudit, Verdict

try:
    __version__ = version("pytest-cnnaudit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AuditConfig",
    "AuditResult",
    "CnnAuditError",
    "ConfigError",
    "LayerResult",
    "ModelAudit",
    "ModelError",
    "ProbeError",
    "Verdict",
    "audit",
    "load_config",
    "__version__",
]
