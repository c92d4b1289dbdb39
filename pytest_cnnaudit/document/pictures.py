"""Picture data for the HTML report: display-ready uint8 arrays that travel beside the audit document.

The JSON report leaves weights and activation maps out on purpose (it stays small and
byte-identical with or without pictures), so the measuring process captures them only when a
picture is asked for (:mod:`pytest_cnnaudit.engine.pictures`), and they travel next to the
model's document, never inside it. Arrays are base64 text, which survives the isolation pipe
and pytest-xdist's report serialisation alike.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EncodedArray:
    """A uint8 array as JSON-able text: its shape and base64 bytes."""

    shape: tuple[int, ...]
    data: str

    @classmethod
    def encode(cls, array: np.ndarray) -> EncodedArray:
        data = np.ascontiguousarray(array, dtype=np.uint8)
        return cls(tuple(int(n) for n in data.shape), base64.b64encode(data.tobytes()).decode("ascii"))

    def decode(self) -> np.ndarray:
        return np.frombuffer(base64.b64decode(self.data), dtype=np.uint8).reshape(self.shape)


@dataclass(frozen=True)
class FilterTiles:
    """The first conv's filters on RGB (input normalisation folded in), each scaled to [0, 255]."""

    layer: str
    count: int  # filters in the layer (at most MAX_FILTERS are drawn)
    tiles: EncodedArray  # (filters, kh, kw, 3)


@dataclass(frozen=True)
class LayerMaps:
    """One probe image's activation maps at one layer, block-averaged for display."""

    layer: str
    role: str  # why this layer is shown ("first conv", "deepest layer with dead channels", ...)
    channels: tuple[int, ...]  # the channels shown
    total_channels: int
    dead: tuple[int, ...]  # the shown channels that are dead
    size: tuple[int, ...]  # the maps' size before block-averaging
    maps: EncodedArray  # (shown channels, h, w)


@dataclass(frozen=True)
class WitnessPicture:
    """A revivable channel: the probe image the search started from, the witness it found, and the channel's
    activation on the witness (its pre-activation above 0, scaled to its own maximum)."""

    layer: str
    channel: int
    start_image: int
    steps: int
    preactivation: float  # the channel's highest pre-activation on the witness
    start: EncodedArray  # (h, w, 3)
    witness: EncodedArray  # (h, w, 3)
    activation: EncodedArray  # (h, w)
    size: tuple[int, ...]  # the activation map's size before block-averaging


@dataclass(frozen=True)
class Pictures:
    """Everything the HTML report draws beyond the JSON report, for one model."""

    probe_index: int
    probe_image: EncodedArray | None  # (h, w, 3); None for a signal or clip model
    filters: FilterTiles | None
    maps: tuple[LayerMaps, ...]
    witnesses: tuple[WitnessPicture, ...] = ()
