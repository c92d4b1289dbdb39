"""Revivable channels: search for an image that switches on a channel the probe set never did.

A channel dead on the probe set but not provably dead is either dead on every input (the
bounds were too loose to show it) or alive on inputs the probe set lacks. A *witness* settles
it one way: an image inside the input box on which the channel fires. The search is projected
sign-gradient ascent on the channel's highest pre-activation (the activation's input: a dead
ReLU passes no gradient), in pixel space, so that staying in the box is a clamp to [0, 1],
starting from the probe image on which the channel came closest to firing.

Every target is searched at once, one batch row per channel, each row ascending its own
channel (rows do not interact: the network is in eval mode). Each row keeps its best image; a
step that does not improve on it is undone and the row's step size halved (a fixed step
overshoots: 1/32 found neither of the example model high_lr's dead conv3 channels in 64
steps). A row stops once its channel fires by ``MARGIN``; only rows still searching are run,
so a search costs at most ``steps`` forward-backward passes of the targets, in chunks.
Deterministic: no random draw at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ...config.model import InputSpec
from ...engine.probes import LUMA

#: (model input, the keys this pass needs) -> pre-activation tensors by key (ONNX tensor name, or fx node name).
PreactivationNetwork = Callable[[torch.Tensor, Iterable[str]], dict[str, torch.Tensor]]
#: The first step in pixel units (pixels lie in [0, 1]); halved on every step that does not improve.
STEP_SIZE = 1 / 16
#: A channel fires when its pre-activation exceeds 0 by this much (the runtime confirms it).
MARGIN = 1e-3
#: A row whose step has halved below this (a quarter of an 8-bit grey level), or whose gradient is zero, has
#: nowhere left to go: it stops searching.
MIN_STEP = 1 / 1024


@dataclass(frozen=True)
class Target:
    """One probe-dead channel: where its pre-activation is read."""

    layer_id: str
    key: str  # pre-activation tensor key in the network's output
    channel: int
    channel_axis: int = 1


@dataclass(frozen=True)
class Witness:
    """An image in the input box on which ``target``'s channel fires (in the torch form)."""

    target: Target
    pixels: np.ndarray  # (H, W, 3) float32 RGB in [0, 1]
    start_image: int  # the probe image the ascent started from
    steps: int  # ascent steps taken
    preactivation: float  # the channel's highest pre-activation on ``pixels``
    preactivation_map: np.ndarray  # the channel's pre-activation over the positions of its layer, on ``pixels``


@dataclass(frozen=True)
class RowRunner:
    """Runs rows of pixels through a network in chunks (padded to a fixed batch, when the graph has one)."""

    network: PreactivationNetwork
    spec: InputSpec
    chunk: int
    fixed_batch: int | None = None

    def run(
        self, pixels: torch.Tensor, targets: list[Target], gradient: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """Per row, its target channel's highest pre-activation, its map, and the gradient of the former."""
        size = self.fixed_batch or self.chunk
        values, maps, gradients = [], [], []
        for start in range(0, len(targets), size):
            rows = pixels[start : start + size].detach().requires_grad_(gradient)
            real = rows.shape[0]
            with torch.set_grad_enabled(gradient):
                outputs = self.outputs(rows, {t.key for t in targets[start : start + real]})
                picked = [_channel_map(outputs[t.key], i, t) for i, t in enumerate(targets[start : start + real])]
                objective = torch.stack([value.amax() for value in picked])
            if gradient:
                (grad,) = torch.autograd.grad(objective.sum(), rows)
                gradients.append(grad[:real])
            values.append(objective.detach())
            maps.extend(value.detach() for value in picked)
        return torch.cat(values), maps, (torch.cat(gradients) if gradient else None)

    def outputs(self, rows: torch.Tensor, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """The pre-activations named in ``keys`` for (N, H, W, 3) pixels; a fixed-batch graph gets copies of
        the last row appended (their outputs follow the real rows')."""
        real = rows.shape[0]
        if self.fixed_batch is not None and real < self.fixed_batch:
            rows = torch.cat([rows, rows[-1:].expand(self.fixed_batch - real, *rows.shape[1:])])
        return self.network(model_input(rows, self.spec), keys)


def _channel_map(value: torch.Tensor, row: int, target: Target) -> torch.Tensor:
    return value.movedim(target.channel_axis, 1)[row, target.channel]


def model_input(pixels: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Differentiable twin of ``probes.to_model_input``: (N, H, W, 3) RGB in [0, 1] -> the model's input."""
    if spec.channels == "GRAY":
        pixels = pixels @ torch.as_tensor(LUMA, dtype=pixels.dtype).reshape(3, 1)
    elif spec.channels == "BGR":
        pixels = pixels.flip(-1)
    mean = torch.as_tensor(np.asarray(spec.mean, np.float32))
    std = torch.as_tensor(np.asarray(spec.std, np.float32))
    pixels = (pixels * spec.scale - mean) / std
    return pixels.permute(0, 3, 1, 2) if spec.layout == "NCHW" else pixels


def nearest_to_firing(
    runner: RowRunner, batches: Iterable[np.ndarray], targets: list[Target]
) -> tuple[np.ndarray, np.ndarray]:
    """Per target, the probe image with the highest pre-activation of its channel: (indices, those values).

    The audit's own top images rank by the activation, which is 0 on every image for a dead
    channel; the pre-activation still says how far each image is from switching it on.
    """
    best = np.full(len(targets), -np.inf)
    index = np.zeros(len(targets), dtype=np.int64)
    keys = {(t.key, t.channel, t.channel_axis) for t in targets}
    seen = 0
    for batch in batches:
        with torch.no_grad():
            outputs = runner.outputs(torch.from_numpy(np.ascontiguousarray(batch)), {key for key, _, _ in keys})
        maxima = {}
        for key, channel, axis in keys:
            moved = outputs[key].movedim(axis, 1)[: len(batch), channel]
            maxima[key, channel] = moved.reshape(len(batch), -1).amax(dim=1).double().numpy()
        for row, target in enumerate(targets):
            values = maxima[target.key, target.channel]
            if values.max() > best[row]:  # ties keep the earlier image
                best[row], index[row] = values.max(), seen + int(values.argmax())
        seen += len(batch)
    return index, best


def search_witnesses(
    runner: RowRunner, targets: list[Target], starts: np.ndarray, start_indices: np.ndarray, steps: int
) -> dict[Target, Witness]:
    """Projected sign-gradient ascent with backtracking from ``starts`` (N, H, W, 3), one row per target.

    The search stops when every row has fired or after ``steps`` steps; the targets that fired
    get a witness, the others none.
    """
    count = len(targets)
    pixels = torch.from_numpy(np.ascontiguousarray(starts, dtype=np.float32))
    best_pixels, best_gradient = pixels.clone(), torch.zeros_like(pixels)
    best = torch.full((count,), -torch.inf, dtype=torch.float64)
    best_maps: list[torch.Tensor | None] = [None] * count
    sizes = torch.full((count, 1, 1, 1), STEP_SIZE)
    taken = torch.zeros(count, dtype=torch.int64)
    active = torch.arange(count)
    for step in range(steps + 1):
        values, maps, gradient = runner.run(pixels[active], [targets[i] for i in active.tolist()], gradient=True)
        improved = values.double() > best[active]
        rows = active[improved]
        best[rows] = values.double()[improved]
        best_pixels[rows] = pixels[rows]
        best_gradient[rows] = gradient[improved]  # type: ignore[index]
        for row, position in zip(rows.tolist(), torch.nonzero(improved).flatten().tolist()):
            best_maps[row] = maps[position]
        sizes[active[~improved]] /= 2
        stuck = (sizes[active].flatten() < MIN_STEP) | (best_gradient[active].flatten(1).abs().amax(dim=1) == 0)
        active = active[(best[active] <= MARGIN) & ~stuck]
        if len(active) == 0 or step == steps:
            break
        taken[active] += 1
        moved = best_pixels[active] + sizes[active] * best_gradient[active].sign()
        pixels = best_pixels.clone()
        pixels[active] = moved.clamp_(0.0, 1.0)
    return {
        target: Witness(
            target,
            best_pixels[row].numpy(),
            int(start_indices[row]),
            int(taken[row]),
            float(best[row]),
            best_maps[row].double().numpy(),  # type: ignore[union-attr]
        )
        for row, target in enumerate(targets)
        if best[row] > MARGIN
    }
