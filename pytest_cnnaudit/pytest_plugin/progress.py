"""Progress lines while a long measurement runs: ``cnnaudit: model.onnx: 128/512 probe images (2.1 s)``.

The measuring process reports after every batch (over the isolation pipe, see
:mod:`pytest_cnnaudit.isolation`); this decides which reports become lines. A
measurement is *long* once it has run :data:`AFTER_S` seconds or when its probe
set has :data:`MANY_IMAGES` images or more; only long ones print, at most one
line per :data:`EVERY_S` seconds plus the final one, so a short run stays silent.
The plugin installs this only on the controller (never on xdist workers) and not
under ``-q``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

AFTER_S = 2.0
MANY_IMAGES = 256
EVERY_S = 1.0


@dataclass
class MeasuringProgress:
    """Called as ``(model, images done, total)``; writes lines with ``write_line``."""

    write_line: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    _started: dict[str, float] = field(default_factory=dict)
    _last_line: dict[str, float] = field(default_factory=dict)

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
            self.write_line(f"cnnaudit: {model}: {done}/{total} probe images ({now - started:.1f} s)")
        if finished:
            self._started.pop(model, None)
            self._last_line.pop(model, None)
