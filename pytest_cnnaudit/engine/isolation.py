"""Open, plan and measure models in child processes, so a crashing or hanging runtime cannot take pytest down.

Why a process: a segfault or abort inside onnxruntime or torch kills the process it happens
in, and no ``try`` catches it. The child (started with ``spawn``, so it shares no state with
pytest) runs one function and sends its result back over a pipe, with progress messages
before it. The parent turns every way the child can end badly into one line for that model
only: a Python exception (named, with its message), a signal (``the runtime crashed``), or no
answer within ``runtime.timeout_s``. Cost: one interpreter start and re-opening the model
(``benchmarks/bench_isolation.py``); the child's memory is returned when it exits.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..config.model import AuditConfig, ModelSpec
from ..document import ModelDocument
from ..document.pictures import Pictures
from ..errors import one_line
from .audit import audit_document, failed_plan_document
from .check import ModelLayout, ModelPlan, Progress
from .planning import layouts


class ChildFailed(Exception):
    """The child did not return a result: ``how`` it ended (``crashed``, ``raised``, ``timed out``) and the detail."""

    def __init__(self, how: str, detail: str) -> None:
        super().__init__(f"{how}: {detail}")
        self.how = how
        self.detail = detail

    def describe(self, doing: str) -> str:
        """One line for a model, e.g. ``the runtime crashed while measuring the model (signal 11 (SIGSEGV))``."""
        if self.how == "crashed":
            return f"the runtime crashed while {doing} ({self.detail}); the other models are still audited"
        if self.how == "timed out":
            return f"{doing} did not finish within runtime.timeout_s ({self.detail}), so it was stopped"
        return f"{doing} raised {self.detail}"


def _child(connection: Connection, function: Callable[..., Any], arguments: tuple, with_progress: bool) -> None:
    def send_progress(*payload: Any) -> None:
        connection.send(("progress", payload))

    try:
        result = function(*arguments, send_progress) if with_progress else function(*arguments)
        connection.send(("ok", result))
    except BaseException as exc:
        connection.send(("raised", one_line(exc)))
    finally:
        connection.close()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def run_in_child(
    function: Callable[..., Any],
    arguments: tuple,
    timeout_s: float,
    progress: Callable[..., None] | None = None,
    timeout_each: bool = False,
) -> Any:
    """``function(*arguments)`` (plus a progress callback last, when ``progress`` is given) in a spawned child.

    Whatever the child passes to its callback reaches ``progress`` here. Raises :class:`ChildFailed`
    when the child raised, died or did not answer within ``timeout_s`` (counted again from each
    progress message when ``timeout_each``: a per-step limit).
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, function, arguments, progress is not None), daemon=True)
    process.start()
    sender.close()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if not receiver.poll(max(0.0, deadline - time.monotonic())):
                process.kill()
                process.join()
                raise ChildFailed("timed out", f"{timeout_s:g} s")
            kind, payload = receiver.recv()
            if kind != "progress":
                break
            if progress is not None:
                progress(*payload)
            if timeout_each:
                deadline = time.monotonic() + timeout_s
    except EOFError:
        process.join()
        raise ChildFailed("crashed", _describe_exit(process.exitcode)) from None
    finally:
        receiver.close()
    process.join()
    if kind == "raised":
        raise ChildFailed("raised", payload)
    return payload


def layouts_isolated(config: AuditConfig, models: list[tuple[Path, ModelSpec, str]]) -> list[ModelLayout | str]:
    """Each model's layout, or the one line saying why it cannot be opened, read in child processes.

    One child opens them all in turn (one interpreter start), sending each layout as it is read,
    with ``runtime.timeout_s`` for each model; if it crashes or hangs, the model it was opening is
    blamed and a new child goes on with the rest.
    """
    found: list[ModelLayout | str] = []
    while len(found) < len(models):
        remaining = models[len(found) :]
        received: list[ModelLayout | str] = []
        try:
            run_in_child(layouts, (config, remaining), config.runtime.timeout_s, received.append, True)
        except ChildFailed as exc:
            found.extend(received)
            found.append(f"{remaining[len(received)][2]}: {exc.describe('opening the model')}")
            continue
        found.extend(received)
    return found


def audit_isolated(
    model: Path, plan: ModelPlan, pictures: bool = False, progress: Progress | None = None
) -> tuple[ModelDocument, Pictures | None]:
    """:func:`~pytest_cnnaudit.engine.audit.audit_document` of a planned model file in a child process.

    How the child ended badly becomes the model's error document (every planned item fails with
    that line); the other models are still audited.
    """
    arguments = (model, plan.config, plan.spec, plan.name, plan.baseline, pictures)
    try:
        return run_in_child(audit_document, arguments, plan.config.runtime.timeout_s, progress)
    except ChildFailed as exc:
        return failed_plan_document(plan, f"{plan.name}: {exc.describe('measuring the model')}"), None
