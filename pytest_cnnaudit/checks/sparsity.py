"""Activation sparsity: the fraction of zero activations of a layer lies in [min, max]."""

from __future__ import annotations

from ..config import SparsityCheck
from ..result import LayerResult, Verdict


def check_sparsity(layer: LayerResult, limits: SparsityCheck) -> Verdict:
    """Fail when the layer's zero fraction leaves [min, max]: all-zero and fully dense maps are symptoms."""
    assert layer.stats is not None
    sparsity = layer.stats.sparsity
    figures = {"sparsity": sparsity, "min": limits.min, "max": limits.max, "channels": layer.channels}
    where = f"{layer.channels} channels, {layer.op}+{layer.activation}"
    if sparsity < limits.min:
        message = f"sparsity {sparsity:.3f} < min {limits.min} ({where}): the activation map is almost never zero"
        return Verdict("sparsity", layer.id, "failed", message, figures)
    if sparsity > limits.max:
        message = f"sparsity {sparsity:.3f} > max {limits.max} ({where}): the activation map is almost all zero"
        return Verdict("sparsity", layer.id, "failed", message, figures)
    return Verdict("sparsity", layer.id, "passed", f"sparsity {sparsity:.3f} in [{limits.min}, {limits.max}]", figures)
