"""What dead channels cost: the parameters and multiply-adds spent on them, per layer and model.

A dead channel costs its own filter (weights and bias, and a BatchNorm's four numbers when one
is kept apart), computed at every output position, and, downstream, the slice of every layer
that reads it: a zero input channel multiplies a slice of the consumer's weights by zero at
every one of the consumer's output positions. Consumers are found by following the dead
channels from the activation tensor through ops that keep a zero channel zero (pools,
rectifiers, Pad, Resize, Dropout, Mul/Div by constants, Concat with its channel offset, global
pooling then Flatten into a dense layer). A residual Add stops the walk: a zero addend does not
make the sum zero. BatchNorm turns a zero into a constant, which a consumer can fold into its
bias, so the walk goes on through it.

A slice and a later layer's own dead filter may hold the same weights (a dead channel feeding a
dead channel). Every weight is marked once (one boolean mask per weight tensor) and each layer
is charged what it marks first, so the layers add up to the model's total, which equals what
pruning the dead channels would remove. Multiply-adds are per image, at the audited input size.

The walk is the same for both graph forms; :mod:`.cost_onnx` and :mod:`.cost_torch` describe an
ONNX graph or a torch.fx graph as a :class:`CostGraph`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Spend:
    parameters: int
    macs: int  # multiply-adds per image


@dataclass(frozen=True)
class WeightedOp:
    """A conv or dense layer, as the cost count sees it."""

    kind: Literal["conv", "conv_transpose", "dense"]
    weight_shape: tuple[
        int, ...
    ]  # conv (out, in/groups, *kernel); conv_transpose (in, out/groups, *kernel); dense (out, in)
    groups: int
    positions: int  # the positions each weight is used at, per image
    extra_per_channel: int  # per output channel: its bias, and a separate BatchNorm's 4 numbers


@dataclass(frozen=True)
class Use:
    """One op reading a tensor, for the walk that follows dead channels (the op's output is ``output``)."""

    role: Literal["weighted", "keeps_zero", "global_pool", "flatten", "concat"]
    output: str  # for "weighted": the op's key in CostGraph.ops
    offset: int = 0  # "concat": the first channel of this input in the output


@dataclass
class CostGraph:
    """The weighted ops of a graph (by key), who reads each tensor, and the model's stored float numbers."""

    ops: dict[str, WeightedOp]
    uses: dict[str, list[Use]]
    parameters: int

    @property
    def total(self) -> Spend:
        macs = sum(int(np.prod(op.weight_shape, dtype=np.int64)) * op.positions for op in self.ops.values())
        return Spend(self.parameters, macs)


@dataclass(frozen=True)
class LayerCost:
    """What one layer's dead channels cost: their own filters, and the slices of the layers reading them."""

    layer_id: str
    dead: tuple[int, ...]
    spend: Spend  # own filters and consumer slices, each weight charged to the first layer that marks it


@dataclass(frozen=True)
class ModelCost:
    layers: tuple[LayerCost, ...]
    dead: Spend  # every wasted weight counted once
    model: Spend  # the model's stored float numbers; multiply-adds of its conv and dense layers


@dataclass
class _Waste:
    """Marks on one weight tensor (and its per-channel extras): which entries are spent on dead channels."""

    op: WeightedOp
    weights: np.ndarray = field(init=False)
    extra: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.weights = np.zeros(self.op.weight_shape, dtype=bool)
        shape, groups = self.op.weight_shape, self.op.groups
        channels = shape[0] if self.op.kind != "conv_transpose" else shape[1] * groups
        self.extra = np.zeros(channels, dtype=bool)

    def spend(self) -> Spend:
        count = int(self.weights.sum())
        return Spend(count + int(self.extra.sum()) * self.op.extra_per_channel, count * self.op.positions)

    def mark_filters(self, channels: tuple[int, ...]) -> None:
        """The op's own dead output channels: their filters and per-channel extras."""
        if self.op.kind == "conv_transpose":  # weight (in, out/groups, ...)
            per_group = self.weights.shape[1]
            rows = self.weights.shape[0] // self.op.groups
            for channel in channels:
                group = channel // per_group
                self.weights[group * rows : (group + 1) * rows, channel % per_group] = True
        else:
            self.weights[list(channels)] = True
        self.extra[list(channels)] = True

    def mark_inputs(self, channels: frozenset[int]) -> None:
        """The slice of the op's weights that reads the dead input ``channels``."""
        if self.op.kind == "conv":
            out_per_group = self.weights.shape[0] // self.op.groups
            group_in = self.weights.shape[1]
            for channel in channels:
                group = channel // group_in
                self.weights[group * out_per_group : (group + 1) * out_per_group, channel % group_in] = True
        elif self.op.kind == "conv_transpose":
            self.weights[sorted(channels)] = True
        else:
            self.weights[:, sorted(channels)] = True


class _Ledger:
    """One :class:`_Waste` per weighted op, created on first mark; each mark returns what it added."""

    def __init__(self, graph: CostGraph) -> None:
        self.graph = graph
        self.entries: dict[str, _Waste] = {}

    def mark(self, key: str, channels: frozenset[int] | tuple[int, ...], own: bool) -> Spend:
        waste = self.entries.setdefault(key, _Waste(self.graph.ops[key]))
        before = waste.spend()
        if own:
            waste.mark_filters(tuple(channels))
        else:
            waste.mark_inputs(frozenset(channels))
        after = waste.spend()
        return Spend(after.parameters - before.parameters, after.macs - before.macs)


def consumers(graph: CostGraph, tensor: str, dead: frozenset[int]) -> list[tuple[str, frozenset[int]]]:
    """The weighted ops that read the zero channels of ``tensor``, with the channels as each one sees them."""
    found: list[tuple[str, frozenset[int]]] = []
    frontier: list[tuple[str, frozenset[int], bool]] = [(tensor, dead, False)]
    visited: set[tuple[str, frozenset[int], bool]] = set()
    while frontier:
        name, channels, pooled = step = frontier.pop()
        if step in visited:
            continue
        visited.add(step)
        for use in graph.uses.get(name, []):
            if use.role == "weighted" and (graph.ops[use.output].kind == "dense") == pooled:
                found.append((use.output, channels))
            elif use.role == "keeps_zero":
                frontier.append((use.output, channels, pooled))
            elif (use.role == "global_pool" and not pooled) or (use.role == "flatten" and pooled):
                frontier.append((use.output, channels, True))  # flattening (N, C, 1, 1): channel c stays column c
            elif use.role == "concat":
                frontier.append((use.output, frozenset(c + use.offset for c in channels), pooled))
    return found


def dead_cost(graph: CostGraph, dead: dict[str, tuple[int, ...]], layers: dict[str, tuple[str, str]]) -> ModelCost:
    """Cost of the ``dead`` channels (layer id -> channels); ``layers`` maps each layer id to (its conv's
    key in ``graph.ops``, the tensor its channels are dead in)."""
    ledger, costs, walked = _Ledger(graph), [], set()
    for layer_id, channels in dead.items():
        if not channels or layers.get(layer_id, ("", ""))[0] not in graph.ops:
            continue
        conv, tensor = layers[layer_id]
        spent = [ledger.mark(conv, channels, own=True)]
        # layers feeding one residual Add share its activation: its consumers are counted once
        readers = [] if tensor in walked else consumers(graph, tensor, frozenset(channels))
        walked.add(tensor)
        spent += [ledger.mark(key, seen, own=False) for key, seen in readers]
        total = Spend(sum(s.parameters for s in spent), sum(s.macs for s in spent))
        costs.append(LayerCost(layer_id, tuple(channels), total))
    wasted = [waste.spend() for waste in ledger.entries.values()]
    spent = Spend(sum(s.parameters for s in wasted), sum(s.macs for s in wasted))
    return ModelCost(tuple(costs), spent, graph.total)
