"""Progress lines while a long measurement runs: ``cnnaudit: model.onnx: 128/512 probe images (2.1 s)``.

The measuring process reports after every batch (over the isolation pipe, see
:mod:`pytest_cnnaudit.engine.isolation`); :class:`MeasuringProgress` decides which reports
become lines. A measurement is *long* once it has run :data:`AFTER_S` seconds or when its
probe set has :data:`MANY_IMAGES` images or more; only long ones print, at most one line per
:data:`EVERY_S` seconds plus the final one, so a short run stays silent. The plugin installs
this only on the controller (never on xdist workers) and not under ``-q``.

The lines are written between pytest's result rows by :class:`TerminalLines`: the measurement
runs inside the first item of a model, after pytest has started that model's row
(``model.onnx `` and no result yet), so a line ends that row, and once the measurement is over
the row starts again on a line of its own, as pytest starts it, so the results and the
``[ 50%]`` column stay on one row.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

AFTER_S = 2.0
MANY_IMAGES = 256
EVERY_S = 1.0


@dataclass
class MeasuringProgress:
    """Called as ``(model, images done, total)``; writes lines with ``write_line``, and calls ``lines_ended``
    when a measurement that wrote some is over (:meth:`ended`)."""

    write_line: Callable[[str], None]
    lines_ended: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.monotonic
    _started: dict[str, float] = field(default_factory=dict)
    _last_line: dict[str, float] = field(default_factory=dict)
    _wrote: set[str] = field(default_factory=set)

    def __call__(self, model: str, done: int, total: int) -> None:
        now = self.clock()
        if done == 0:  # the measurement starts
            self._started[model] = now
            return
        started = self._started.setdefault(model, now)
        finished = done >= total
        long = total >= MANY_IMAGES or now - started >= AFTER_S
        last = self._last_line.get(model)
        if long and (finished or last is None or now - last >= EVERY_S):
            self._last_line[model] = now
            self._wrote.add(model)
            self.write_line(f"cnnaudit: {model}: {done}/{total} probe images ({now - started:.1f} s)")
        if finished:
            self._started.pop(model, None)
            self._last_line.pop(model, None)

    def ended(self, model: str) -> None:
        """The model's measurement is over (finished, failed or timed out)."""
        self._started.pop(model, None)
        self._last_line.pop(model, None)
        if model in self._wrote:
            self._wrote.discard(model)
            self.lines_ended()


class TerminalLines:
    """Progress lines on pytest's terminal, each on a line of its own, pytest's result row kept whole.

    ``reporter`` is pytest's TerminalReporter; ``capture`` its capture manager (the measurement runs
    inside a test's call phase, where output is captured), or None.
    """

    def __init__(self, reporter: Any, capture: Any) -> None:
        self.reporter = reporter
        self.capture = capture
        self.running: tuple[str, tuple[str, int | None, str]] | None = None  # the item that runs: nodeid, location
        self._open = False  # the last line written here has no newline yet

    def line(self, text: str) -> None:
        with self._uncaptured():
            self.reporter.ensure_newline()  # ends the row pytest has open (``model.onnx ``)
            if self._open:
                self.reporter.write("\n")
            self.reporter.write(text, flush=True)
            self._open = True

    def restart_row(self) -> None:
        """Start the running item's row again below the lines, as pytest starts a row (its own line ends ours)."""
        if not self._open:
            return
        with self._uncaptured():
            if self.running is not None:
                nodeid, location = self.running
                self.reporter.pytest_runtest_logstart(nodeid=nodeid, location=location)
            if not self.reporter.currentfspath:  # pytest wrote no row start (nothing ended our line)
                self.reporter.write("\n", flush=True)
        self._open = False

    @contextlib.contextmanager
    def _uncaptured(self) -> Iterator[None]:
        with self.capture.global_and_fixture_disabled() if self.capture is not None else contextlib.nullcontext():
            yield
