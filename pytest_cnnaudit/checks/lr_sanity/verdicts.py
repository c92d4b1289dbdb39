"""Learning-rate sanity: a short fine-tuning probe must not kill filters.

The verdicts are pure functions of the dead channels before and after training,
the losses and the limits; :mod:`.check` runs the probe (:mod:`.probe`) and calls them.

A *safe* rate is one at which the loss stays finite and no layer gains more newly
dead filters than ``max_new_dead`` allows (with the default 0: no filter dies). The
sweep goes up a log grid from its lowest rate and stops at the first unsafe one; the
max safe rate is the rate just below it, so a lucky safe rate above an unsafe one
never counts as safe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ...config.checks import LrSanityCheck
from ...document import LrLayerFigures, LrModelFigures, LrSweep, SweepPoint, Verdict
from ..layers import format_channels

CHECK = "lr_sanity"


@dataclass(frozen=True)
class TrainingRun:
    """One fine-tuning run from the model's own weights."""

    lr: float
    losses: tuple[float, ...]  # the training loss of every step taken; a non-finite one ends the run
    dead: Mapping[str, tuple[int, ...]]  # layer id -> channels dead after training (eval mode, probe set)
    non_finite: tuple[str, ...] = ()  # layers whose activations became NaN or infinite on some probe image

    @property
    def diverged_at(self) -> int | None:
        """The 1-based step whose loss was non-finite, or None."""
        return len(self.losses) if self.losses and not math.isfinite(self.losses[-1]) else None

    @property
    def loss_start(self) -> float:
        return self.losses[0]

    @property
    def loss_end(self) -> float:
        return self.losses[-1]


def allowed_new_dead(max_new_dead: float, channels: int) -> int:
    """A count when ``max_new_dead >= 1``, else that fraction of the layer's channels (rounded down)."""
    if max_new_dead >= 1:
        return int(max_new_dead)
    return math.floor(max_new_dead * channels + 1e-9)


def newly_dead(before: Sequence[int], after: Sequence[int]) -> tuple[int, ...]:
    """Channels dead after training that were alive before."""
    was_dead = set(before)
    return tuple(channel for channel in after if channel not in was_dead)


def new_dead_count(run: TrainingRun, before: Mapping[str, Sequence[int]], layers: Iterable[str]) -> int:
    """Newly dead filters over ``layers``."""
    return sum(len(newly_dead(before.get(layer, ()), run.dead.get(layer, ()))) for layer in layers)


def is_safe(run: TrainingRun, before: Mapping[str, Sequence[int]], allowed: Mapping[str, int]) -> bool:
    """Finite loss throughout, and every judged layer within its allowance of newly dead filters."""
    if run.diverged_at is not None or run.non_finite:
        return False
    return all(len(newly_dead(before.get(layer, ()), run.dead.get(layer, ()))) <= n for layer, n in allowed.items())


def sweep_rates(settings: LrSanityCheck) -> tuple[float, ...]:
    """``sweep_per_decade`` rates per decade from the lowest rate up to the highest (both included)."""
    low, high = settings.sweep_range
    count = math.floor(math.log10(high / low) * settings.sweep_per_decade + 1e-9) + 1
    return tuple(float(f"{low * 10 ** (k / settings.sweep_per_decade):.6g}") for k in range(count))


def max_safe_rate(curve: Sequence[tuple[float, bool]]) -> float | None:
    """The highest rate below the lowest unsafe one, from (rate, safe) pairs; None if the lowest is unsafe."""
    best = None
    for rate, safe in sorted(curve):
        if not safe:
            break
        best = rate
    return best


def _loss(value: float) -> float | None:
    """A loss for the JSON report, where NaN and infinity have no spelling."""
    return value if math.isfinite(value) else None


def check_lr_layer(
    layer_id: str,
    channels: int,
    before: Sequence[int],
    after: Sequence[int],
    max_new_dead: float,
    lr: float,
    non_finite: bool = False,
) -> Verdict:
    """Fail when fine-tuning at ``lr`` killed more of the layer's filters than allowed, naming them,
    or made its activations NaN or infinite."""
    new = newly_dead(before, after)
    allowed = allowed_new_dead(max_new_dead, channels)
    figures = LrLayerFigures(
        lr=lr,
        channels=channels,
        dead_before=len(before),
        dead_after=len(after),
        new_dead_channels=new,
        allowed=allowed,
        non_finite=non_finite,
    )
    summary = f"fine-tuning at lr {lr:g}: {len(before)} of {channels} channels dead before, {len(after)} after"
    if non_finite:
        message = f"{summary}; its activations became NaN or infinite on some probe images"
        return Verdict(CHECK, layer_id, "failed", message, figures)
    if len(new) > allowed:
        message = (
            f"{summary}; {len(new)} newly dead > max_new_dead {max_new_dead:g} (allowed {allowed}): "
            f"channels {format_channels(new)}"
        )
        return Verdict(CHECK, layer_id, "failed", message, figures)
    detail = f": channels {format_channels(new)}" if new else ""
    return Verdict(CHECK, layer_id, "passed", f"{summary}; {len(new)} newly dead, allowed {allowed}{detail}", figures)


def _what_went_wrong(run: TrainingRun, new_dead: int) -> str:
    if run.diverged_at is not None:
        return f"at lr {run.lr:g} the loss became non-finite at step {run.diverged_at}"
    if run.non_finite:
        return f"at lr {run.lr:g} the activations of {', '.join(run.non_finite)} became NaN or infinite"
    return f"at lr {run.lr:g} {new_dead} filters died"


def check_lr_model(
    run: TrainingRun,
    new_dead: int,
    sweep: Sequence[tuple[TrainingRun, int, bool]] | None = None,
    trainable_copy: str | None = None,
) -> Verdict:
    """The model as a whole: the loss at ``run.lr`` stays finite and, with a sweep
    ((run, newly dead filters, safe) per rate), ``run.lr`` is at most the max safe rate."""
    safest = max_safe_rate([(r.lr, safe) for r, _, safe in sweep]) if sweep is not None else None
    figures = LrModelFigures(
        lr=run.lr,
        steps=len(run.losses),
        loss_start=_loss(run.loss_start),
        loss_end=_loss(run.loss_end),
        diverged_at_step=run.diverged_at,
        new_dead=new_dead,
        max_safe_lr=safest,
        trainable_copy=trainable_copy,
    )
    losses = f"loss {run.loss_start:.4g} at the start, {run.loss_end:.4g} at the end"
    if run.diverged_at is not None:
        finite = [loss for loss in run.losses if math.isfinite(loss)]
        last = f"last finite loss {finite[-1]:.4g}" if finite else "no finite loss"
        message = (
            f"fine-tuning at lr {run.lr:g}: the loss became non-finite ({run.loss_end}) at step {run.diverged_at} "
            f"(loss {run.loss_start:.4g} at the start, {last}); {new_dead} filters newly dead"
        )
        return Verdict(CHECK, None, "failed", message, figures)
    summary = f"fine-tuning at lr {run.lr:g} for {len(run.losses)} steps: {losses}; {new_dead} filters newly dead"
    if sweep is None:
        return Verdict(CHECK, None, "passed", summary, figures)
    unsafe = next(((r, n) for r, n, safe in sweep if not safe), None)
    why = f" ({_what_went_wrong(*unsafe)})" if unsafe is not None else ""
    if safest is None:
        message = f"{summary}; no rate of the sweep is safe{why}"
        return Verdict(CHECK, None, "failed", message, figures)
    if run.lr > safest:
        message = f"{summary}; lr {run.lr:g} exceeds the max safe learning rate {safest:g}{why}"
        return Verdict(CHECK, None, "failed", message, figures)
    return Verdict(CHECK, None, "passed", f"{summary}; max safe learning rate {safest:g}{why}", figures)


def sweep_report(sweep: Sequence[tuple[TrainingRun, int, bool]], settings: LrSanityCheck) -> LrSweep:
    """The ``lr_sweep`` section of the report: the grid, the curve, the max safe rate."""
    return LrSweep(
        grid=sweep_rates(settings),
        max_safe_lr=max_safe_rate([(run.lr, safe) for run, _, safe in sweep]),
        curve=tuple(
            SweepPoint(
                lr=run.lr,
                new_dead=new_dead,
                loss_start=_loss(run.loss_start),
                loss_end=_loss(run.loss_end),
                diverged_at_step=run.diverged_at,
                non_finite_layers=run.non_finite,
                safe=safe,
            )
            for run, new_dead, safe in sweep
        ),
    )
