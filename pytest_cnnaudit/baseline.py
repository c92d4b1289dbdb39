"""Release gating against a previous release: save per-layer figures, compare a new run to them.

A baseline is plain JSON (``cnnaudit-baseline/1``): for each model, each
measured layer's sparsity and dead channels. A layer regresses when it gained
more dead channels than ``baseline.dead_growth`` or its sparsity moved more
than ``baseline.sparsity_tolerance``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checks.dead_filters import format_channels
from .config import AuditConfig
from .errors import ConfigError
from .result import LayerResult, Verdict, dump_json

BASELINE_SCHEMA = "cnnaudit-baseline/1"


def baseline_document(model_documents: list[dict[str, Any]]) -> dict[str, Any]:
    """A baseline from the models' report documents."""
    models = {}
    for document in model_documents:
        models[document["path"]] = {
            layer["id"]: {"sparsity": layer["sparsity"], "dead_channels": layer["dead_channels"]}
            for layer in document["layers"]
            if layer["sparsity"] is not None
        }
    return {"schema": BASELINE_SCHEMA, "models": models}


def write_baseline(path: Path, model_documents: list[dict[str, Any]]) -> None:
    path.write_text(dump_json(baseline_document(model_documents)), encoding="utf-8")


def load_baseline(path: Path) -> dict[str, Any]:
    """Read a saved baseline; a missing or foreign file is a usage error."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--cnnaudit-baseline {path}: cannot read the baseline: {exc}") from None
    if not isinstance(document, dict) or document.get("schema") != BASELINE_SCHEMA:
        raise ConfigError(
            f"--cnnaudit-baseline {path}: not a {BASELINE_SCHEMA} file (write one with --cnnaudit-save-baseline)"
        )
    return document


def compare_layer(baseline: dict[str, Any], model: str, layer: LayerResult, config: AuditConfig) -> Verdict:
    """Fail when the layer's dead channels grew or its sparsity moved beyond the tolerance."""
    old = baseline["models"].get(model, {}).get(layer.id)
    if old is None:
        return Verdict("baseline", layer.id, "skipped", f"layer {layer.id} is not in the baseline")
    assert layer.stats is not None
    limits = config.baseline
    new_dead = set(layer.stats.dead_channels)
    grown = sorted(new_dead - set(old["dead_channels"]))
    moved = abs(layer.stats.sparsity - old["sparsity"])
    figures = {
        "old_sparsity": old["sparsity"],
        "new_sparsity": layer.stats.sparsity,
        "old_dead_channels": old["dead_channels"],
        "new_dead_channels": sorted(new_dead),
    }
    problems = []
    if len(grown) > limits.dead_growth:
        problems.append(
            f"dead channels grew from {len(old['dead_channels'])} to {len(new_dead)} "
            f"(new: {format_channels(tuple(grown))}; allowed growth {limits.dead_growth})"
        )
    if moved > limits.sparsity_tolerance:
        problems.append(
            f"sparsity moved from {old['sparsity']:.3f} to {layer.stats.sparsity:.3f} "
            f"(|change| {moved:.3f} > tolerance {limits.sparsity_tolerance})"
        )
    if problems:
        return Verdict("baseline", layer.id, "failed", "; ".join(problems), figures)
    return Verdict("baseline", layer.id, "passed", "within the baseline", figures)
