"""The evidence for every channel dead on the probe set: provable, revivable, or probe.

* **provable**: the interval bounds of its pre-activation over the input box never exceed 0, so
  no input can activate it (:mod:`.certify`: no image, no runtime pass);
* **revivable**: the witness search (:mod:`.witness`) found an image in the box that activates
  it, and the audited runtime agrees (the image run through the backend, the channel > zero_eps);
* **probe**: neither; dead on the probe set, and no witness found within ``witness_steps`` (or
  not searched: past ``witness_channels``, in a layer within its allowance, or no torch form of
  the model).

The search runs only on layers with more dead channels than they allow: it never changes what
counts, so it is spent where a verdict fails and its report names each channel's evidence. On a
healthy model it cost more than the whole main pass (resnet18, 64 images: 4.5 s, of which 2.6 s
importing torch and converting the graph, against a 1.5 s bare pass). ``max_count: 0`` makes every
layer with a dead channel over its allowance, so every dead channel is searched.

The search needs each channel's nearest-to-firing probe image. The main pass's top images rank
by the activation, which is 0 on every image for a dead channel, so one extra no-grad pass of
the first :data:`RANKING_IMAGES` probe images through the torch form ranks them by the
pre-activation instead; it runs only when some probe-dead channel is not provable.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...backends.base import ModelGraph
from ...config.checks import DeadFiltersCheck
from ...document import DeadEvidence
from ...engine.check import AuditContext
from ...engine.measure import run_padded
from ...engine.probes import to_model_input
from ...errors import CnnAuditError, one_line
from .certify import PIXEL_RANGE, Certificate, certify

if TYPE_CHECKING:  # the witness search imports torch, which an ONNX audit without one never does
    from .witness import RowRunner, Target, Witness

PROVABLE, REVIVABLE, PROBE = "provable", "revivable", "probe"
#: Probe images ranked by pre-activation to pick each searched channel's start image.
RANKING_IMAGES = 16
#: Rows per forward-backward pass of the witness search (fewer when the probe batch size is smaller).
SEARCH_BATCH = 8


@dataclass(frozen=True)
class LayerEvidence:
    """One layer's proof and witnesses."""

    reached: bool | None  # the bound proof bounds its pre-activation; None: the proof did not run
    provable: tuple[int, ...]
    witnesses: dict[int, Witness]  # channel -> its witness (confirmed by the runtime)

    def of(self, channel: int) -> str:
        if channel in self.provable:
            return PROVABLE
        return REVIVABLE if channel in self.witnesses else PROBE


@dataclass(frozen=True)
class Evidence:
    """Every judged layer's evidence, the model's ``dead_evidence`` section, and the witnesses found."""

    layers: dict[str, LayerEvidence]
    section: DeadEvidence
    witnesses: tuple[Witness, ...]


def gather_evidence(
    context: AuditContext,
    graph: ModelGraph,
    dead: dict[str, tuple[int, ...]],
    over_limit: Collection[str] | None = None,
) -> Evidence:
    """Prove, then search, for the ``dead`` channels (layer id -> channels dead on the probe set); the
    search only in the ``over_limit`` layers (None: in every layer)."""
    settings = context.plan.checks_for().dead_filters
    kinds = {layer.id: layer.activation for layer in context.plan.layers}
    image = context.backend.input_spec.shape is None  # a signal or clip has no pixel box to prove or search in
    certificate = certify(graph, context.backend.input_spec, kinds) if settings.certify and image else None
    provable = {
        layer: certificate.layers[layer].provably_dead if certificate and layer in certificate.layers else ()
        for layer in dead
    }
    searchable = {layer for layer, tensors in graph.layers.items() if tensors.preactivation is not None}
    unproved = [
        (layer, channel) for layer, channels in dead.items() for channel in channels if channel not in provable[layer]
    ]
    searched_layers = set(dead) if over_limit is None else set(over_limit)
    within = [target for target in unproved if target[0] not in searched_layers]
    targets = [target for target in unproved if target[0] in searched_layers and target[0] in searchable]
    notes: list[str] = [] if image else ["a signal or clip input has no pixel box: dead channels carry probe evidence"]
    if image and within and settings.witness_steps and settings.witness_channels:
        notes.append(
            f"{len(within)} probe-dead channel(s) in layers within their allowance not searched "
            "(the witness search runs where a layer has more dead channels than it allows)"
        )
    found: dict[Target, Witness] = {}
    form, searched = None, 0
    if image and targets and settings.witness_steps and settings.witness_channels:
        try:
            found, form, searched = _search(context, graph, targets, settings)
        except ImportError:
            notes.append("no witness search: it needs torch and onnx2torch: pip install 'pytest-cnnaudit[torch]'")
        except CnnAuditError as exc:
            notes.append(f"no witness search: {exc}")
        except Exception as exc:  # the torch form (conversion, a forward pass) failed: the channels stay "probe"
            notes.append(f"no witness search: {one_line(exc)}")
    if searched < len(targets) and form is not None:
        notes.append(
            f"{len(targets) - searched} probe-dead channel(s) not searched (witness_channels {settings.witness_channels})"
        )
    layers = {
        layer: LayerEvidence(
            _reached(certificate, layer),
            provable[layer],
            {witness.target.channel: witness for witness in found.values() if witness.target.layer_id == layer},
        )
        for layer in dead
    }
    section = _section(context, certificate, settings, searched, form, notes)
    return Evidence(layers, section, tuple(found.values()))


def _reached(certificate: Certificate | None, layer: str) -> bool | None:
    if certificate is None:
        return None
    return layer in certificate.layers and certificate.layers[layer].reached


def _section(
    context: AuditContext,
    certificate: Certificate | None,
    settings: DeadFiltersCheck,
    searched: int,
    form: str | None,
    notes: list[str],
) -> DeadEvidence:
    reached = tuple(layer for layer, proof in (certificate.layers if certificate else {}).items() if proof.reached)
    return DeadEvidence(
        pixel_range=PIXEL_RANGE,
        certified=certificate is not None,
        layers=len(context.plan.layers),
        layers_reached=len(reached),
        reached=reached,
        stopped=certificate.stopped if certificate is not None else (),
        witness_steps=settings.witness_steps,
        witness_channels=settings.witness_channels,
        searched=searched,
        torch_form=form,
        notes=tuple(notes),
    )


def _search(
    context: AuditContext, graph: ModelGraph, dead: list[tuple[str, int]], settings: DeadFiltersCheck
) -> tuple[dict[Target, Witness], str, int]:
    """Rank, pick at most ``witness_channels`` channels, search, and keep what the runtime confirms."""
    from .torch_form import preactivation_network
    from .witness import RowRunner, Target, nearest_to_firing, search_witnesses

    rank = {layer.id: position for position, layer in enumerate(context.plan.layers)}
    dead = sorted(dead, key=lambda target: rank.get(target[0], 0))
    # the layers whose channels can be searched: in graph order, until there are witness_channels of them
    last = dead[min(settings.witness_channels, len(dead)) - 1][0]
    targets = [
        Target(layer, graph.layers[layer].preactivation, channel, graph.layers[layer].channel_axis)  # type: ignore[arg-type]
        for layer, channel in dead
        if rank.get(layer, 0) <= rank.get(last, 0)
    ]
    network, form = preactivation_network(graph, {target.key for target in targets})
    runner = RowRunner(network, context.backend.input_spec, min(SEARCH_BATCH, context.batch_size), graph.fixed_batch)
    ranked = min(context.probes.count, RANKING_IMAGES)
    starts, closeness = nearest_to_firing(runner, _first_images(context, ranked, runner), targets)
    order = sorted(range(len(targets)), key=lambda i: (rank.get(targets[i].layer_id, 0), -closeness[i]))
    chosen = order[: settings.witness_channels]
    pixels = np.stack([context.probes.image(int(starts[i])) for i in chosen])
    witnesses = search_witnesses(runner, [targets[i] for i in chosen], pixels, starts[chosen], settings.witness_steps)
    return _confirmed(context, witnesses), form, len(chosen)


def _first_images(context: AuditContext, count: int, runner: RowRunner) -> Iterator[np.ndarray]:
    size = runner.fixed_batch or runner.chunk
    for start in range(0, count, size):
        yield np.stack([context.probes.image(i) for i in range(start, min(start + size, count))])


def _confirmed(context: AuditContext, witnesses: dict[Target, Witness]) -> dict[Target, Witness]:
    """The witnesses on which the audited runtime, too, finds the channel active (> zero_eps)."""
    eps = context.plan.config.probe.zero_eps
    tensors = {layer.id: layer.tensor for layer in context.plan.layers}
    found = list(witnesses.items())
    confirmed: dict[Target, Witness] = {}
    captured: dict[str, tuple[np.ndarray, int]] = {}

    def sink(key: str, activation: np.ndarray, channel_axis: int) -> None:
        captured[key] = (activation, channel_axis)

    size = context.backend.fixed_batch or context.batch_size
    for start in range(0, len(found), size):
        chunk = found[start : start + size]
        pixels = np.stack([witness.pixels for _, witness in chunk])
        captured.clear()
        run_padded(context.backend, to_model_input(pixels, context.backend.input_spec), sink)
        for row, (target, witness) in enumerate(chunk):
            activation, axis = captured.get(tensors.get(target.layer_id) or "", (None, 1))
            if activation is not None and np.moveaxis(activation, axis, 1)[row, target.channel].max() > eps:
                confirmed[target] = witness
    return confirmed
