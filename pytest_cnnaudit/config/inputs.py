"""The config sections that say how images reach a model: the input spec and the probe set.

Part of the contract of :mod:`.model` (same field metadata, same loader), kept in their own
module because both are about pixels, not about checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .rules import described as _doc
from .rules import require as _check


@dataclass(frozen=True)
class InputSpec:
    """How probe images become model input. ``None`` means: read it from the model file."""

    size: tuple[int, int] | None = field(default=None, metadata=_doc("input height and width in pixels", 1, 8192))
    layout: Literal["NCHW", "NHWC"] | None = field(default=None, metadata=_doc("tensor layout of the image input"))
    channels: Literal["RGB", "BGR", "GRAY"] | None = field(
        default=None, metadata=_doc("channel order the model expects (GRAY: one luminance channel)")
    )
    scale: Literal[1, 255] = field(default=1, metadata=_doc("pixel range before normalisation: [0, 1] or [0, 255]"))
    mean: tuple[float, ...] | None = field(
        default=None, metadata=_doc("per-channel mean subtracted, in the model's channel order and scale")
    )
    std: tuple[float, ...] | None = field(
        default=None, metadata=_doc("per-channel std divided by, in the model's channel order and scale")
    )

    def __post_init__(self) -> None:
        _check(self.std is None or all(s > 0 for s in self.std), "std", "every std must be > 0")
        if self.mean is not None and self.std is not None:
            _check(len(self.mean) == len(self.std), "std", f"mean has {len(self.mean)} values, std {len(self.std)}")
        for key, values in (("mean", self.mean), ("std", self.std)):
            if values is not None:
                _check(len(values) in self._lengths(), key, self._length_message(len(values)))

    def _lengths(self) -> tuple[int, ...]:
        """Allowed lengths of mean and std before the model is opened: 1 (every channel) or one per channel."""
        return (1,) if self.channels == "GRAY" else (1, 3)

    def _length_message(self, count: int) -> str:
        if self.channels == "GRAY":
            return f"got {count} values, expected 1: input.channels GRAY has one channel"
        if self.channels is not None:
            return f"got {count} values, expected 3 (one per channel of input.channels {self.channels}) or 1 (all)"
        return f"got {count} values, expected 1 or 3: input.channels is unset, so the model's input (1 or 3 channels) decides"


@dataclass(frozen=True)
class ProbeConfig:
    """The probe images run through every model once."""

    images: str | None = field(
        default=None, metadata=_doc("folder of images or (N, H, W, 3) .npy; default: the shipped photographs")
    )
    count: int = field(
        default=32,
        metadata=_doc("number of probe images (24 photographs were used to set the defaults)", 1, 100000),
    )
    batch_size: int = field(default=16, metadata=_doc("images per forward pass; bounds peak memory", 1, 4096))
    seed: int = field(
        default=0, metadata=_doc("seed of the crops and flips, and of the choice among more images", 0, 2**32 - 1)
    )
    augment: Literal["none", "crops"] | None = field(
        default=None,
        metadata=_doc(
            "images: none uses each image once, resized and centre-cropped to the input's aspect; crops draws "
            "seeded crops and flips. Unset: none when count is at most the number of images, else crops "
            "(the shipped photographs are always cropped)"
        ),
    )
    zero_eps: float = field(
        default=0.0,
        metadata=_doc(
            "a rectifier's output counts as inactive when <= zero_eps (0: the units that are off)", 0.0, None
        ),
    )

    def __post_init__(self) -> None:
        _check(
            self.augment != "none" or self.images is not None,
            "augment",
            "none needs probe.images: the shipped photographs are always cropped",
        )
