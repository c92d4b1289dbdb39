"""Everything the dead-filter verdicts know beyond the statistics: each dead channel's evidence, and the cost.

Gathered once per model, before any layer is judged, from a private copy of the model's graph
(``Backend.model_graph``). Neither part may cost the probe-based verdicts their answer: when the
proof, the search or the cost count raises, the dead channels keep the evidence ``probe`` (or no
cost), and the model's ``dead_evidence`` section says why in a note.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...backends.base import ModelGraph, sample_shape
from ...document import DeadCost, DeadEvidence, DeadLayerCost
from ...engine.check import AuditContext
from ...errors import one_line
from .certify import PIXEL_RANGE
from .cost import ModelCost, dead_cost
from .evidence import Evidence, LayerEvidence, gather_evidence

if TYPE_CHECKING:
    from .witness import Witness


@dataclass(frozen=True)
class Findings:
    """The evidence and the cost of a model's dead channels (each None when it could not be had)."""

    evidence: Evidence | None
    cost: DeadCost | None
    notes: tuple[str, ...] = ()
    witnesses: tuple[Witness, ...] = ()

    def layer(self, layer_id: str) -> LayerEvidence:
        if self.evidence is not None and layer_id in self.evidence.layers:
            return self.evidence.layers[layer_id]
        return LayerEvidence(None, (), {})

    def layer_cost(self, layer_id: str) -> DeadLayerCost | None:
        if self.cost is None:
            return None
        return next((layer for layer in self.cost.layers if layer.id == layer_id), None)

    @property
    def sections(self) -> dict[str, Any]:
        """The model document's ``dead_evidence`` (with this object's notes) and ``dead_cost``."""
        if self.evidence is None:
            section = DeadEvidence(PIXEL_RANGE, False, 0, 0, (), (), 0, 0, 0, None, self.notes)
        else:
            section = self.evidence.section
            section = dataclasses.replace(section, notes=(*section.notes, *self.notes))
        return {"dead_evidence": section, "dead_cost": self.cost}


def gather_findings(context: AuditContext, dead: dict[str, tuple[int, ...]], over_limit: Collection[str]) -> Findings:
    """Evidence and cost for the ``dead`` channels of the judged layers (layer id -> channels), the
    witness search in the ``over_limit`` layers only."""
    try:
        graph = context.backend.model_graph()
    except Exception as exc:
        return Findings(None, None, (f"the model's graph could not be read for evidence and cost: {one_line(exc)}",))
    notes = []
    try:
        evidence = gather_evidence(context, graph, dead, over_limit)
    except Exception as exc:  # a bug in the proof or the search: the probe's verdicts still stand
        evidence = None
        notes.append(f"evidence not gathered: {one_line(exc)} (a bug in cnnaudit: please report it)")
    try:
        cost = document_cost(_model_cost(context, graph, dead))
    except Exception as exc:
        cost = None
        notes.append(f"cost not counted: {one_line(exc)}")
    return Findings(evidence, cost, tuple(notes), evidence.witnesses if evidence is not None else ())


def _model_cost(context: AuditContext, graph: ModelGraph, dead: dict[str, tuple[int, ...]]) -> ModelCost:
    shape = (graph.fixed_batch or 1, *sample_shape(context.backend.input_spec))
    if graph.kind == "onnx":
        from .cost_onnx import onnx_cost_graph

        view = onnx_cost_graph(graph.graph, shape)
    else:
        import torch

        from .cost_torch import torch_cost_graph

        view = torch_cost_graph(graph.graph, torch.zeros(shape))
    layers = {layer: (tensors.conv, tensors.activation or "") for layer, tensors in graph.layers.items()}
    return dead_cost(view, dead, layers)


def document_cost(cost: ModelCost) -> DeadCost:
    """The ``dead_cost`` section: absolute figures and shares of the model."""

    def share(part: int, whole: int) -> float:
        return part / whole if whole else 0.0

    model = cost.model
    layers = tuple(
        DeadLayerCost(
            layer.layer_id,
            layer.dead,
            layer.spend.parameters,
            layer.spend.macs,
            share(layer.spend.parameters, model.parameters),
            share(layer.spend.macs, model.macs),
        )
        for layer in cost.layers
    )
    return DeadCost(
        dead_params=cost.dead.parameters,
        dead_macs=cost.dead.macs,
        model_params=model.parameters,
        model_macs=model.macs,
        param_share=share(cost.dead.parameters, model.parameters),
        mac_share=share(cost.dead.macs, model.macs),
        layers=layers,
    )
