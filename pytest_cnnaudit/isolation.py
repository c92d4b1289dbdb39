"""Measure a model in a child process, so a crashing runtime cannot take the pytest run down.

Why a process: a segfault or abort inside onnxruntime or torch kills the process
it happens in; no ``try`` can catch it. The child (started with ``spawn``, so it
shares no state with pytest) opens the model, measures and judges it, and sends
the frozen :class:`ModelAudit` back; if it dies, the parent turns its exit
signal into a :class:`ModelError` for that model only, and the run goes on.
Cost: one interpreter start plus re-opening the model (measured in
``benchmarks/bench_audit.py``); the child's memory is returned when it exits.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from .audit import open_model, run_audit
from .config import AuditConfig, ModelSpec
from .errors import CnnAuditError, ModelError
from .result import ModelAudit


def _child(
    connection: Connection,
    model: Path,
    config: AuditConfig,
    spec: ModelSpec | None,
    name: str,
    pictures: bool = False,
    report_progress: bool = False,
) -> None:
    def send_progress(done: int, total: int) -> None:
        connection.send(("progress", (done, total)))

    try:
        audit = run_audit(open_model(model, config, spec, name), pictures, send_progress if report_progress else None)
        connection.send(("ok", audit))
    except CnnAuditError as exc:
        connection.send(("error", str(exc)))
    finally:
        connection.close()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def run_audit_isolated(
    model: Path,
    config: AuditConfig,
    spec: ModelSpec | None,
    name: str,
    pictures: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ModelAudit:
    """:func:`run_audit` of a model file in a child process; a crash becomes a ModelError.

    The child reports its progress as ``("progress", (done, total))`` messages on the same
    pipe, one per batch, before its result; they are handed to ``progress`` here.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    arguments = (sender, model, config, spec, name, pictures, progress is not None)
    process = context.Process(target=_child, args=arguments, daemon=True)
    process.start()
    sender.close()
    try:
        kind, payload = receiver.recv()
        while kind == "progress":
            if progress is not None:
                progress(*payload)
            kind, payload = receiver.recv()
    except EOFError:
        process.join()
        raise ModelError(
            f"{name}: the runtime crashed while measuring the model ({_describe_exit(process.exitcode)}); "
            "the other models are still audited"
        ) from None
    finally:
        receiver.close()
    process.join()
    if kind == "error":
        raise ModelError(payload)
    return payload
