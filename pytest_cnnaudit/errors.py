"""The project's exceptions: each carries one message a user can act on.

Why a hierarchy: the pytest layer turns :class:`ConfigError` into a usage error
(before any model loads) and :class:`ModelError` into a failed item for that
model only; anything else is a bug in this project and keeps its traceback.
"""

from __future__ import annotations


class CnnAuditError(Exception):
    """Base class: the message is complete and shown without a traceback."""


class ConfigError(CnnAuditError):
    """The YAML configuration or a command-line option is invalid."""


class ModelError(CnnAuditError):
    """A model file cannot be loaded, analysed or run."""


class ProbeError(CnnAuditError):
    """The probe images cannot be read."""


def first_line(exc: BaseException) -> str:
    """The first line of what an exception said (its type's name when it said nothing): a library's
    message cut to the line that matters."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """``TypeError: what it said``, first line only: how an unexpected exception is reported."""
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
