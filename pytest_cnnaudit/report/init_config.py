"""A starting ``cnnaudit.yaml`` fitted to the measured models (``--cnnaudit-init PATH``).

The plugin runs the normal audit, then, at the end of the session, writes this file from
the models' report documents (the records every item carries to the controller, so a run
under pytest-xdist writes the same file). Every bound sits around what was measured, so
the models pass as they are and a regression fails:

- the input spec the audit used, written out, so its assumptions (mean, std) are visible;
- per model, sparsity bounds [lowest layer - MARGIN, highest layer + MARGIN] clipped to [0, 1];
- per model ``dead_filters: {max_count: 0, evidence: ...}`` (the evidence in use), and for each layer that
  had dead channels (that counted under that evidence) a
  ``layers:`` rule accepting exactly that many (its id escaped, so ``[`` in an ONNX id is not
  read as a glob); a layer id shared by several models gets the largest of their counts;
- the first conv layer's measured colour use as the expectation (``invariant`` when its
  chromatic energy share is within ``max_sensitivity``, else ``sensitive`` with
  ``min_selective_fraction`` = measured - MARGIN);
- when the learning-rate probe ran, its rate: the sweep's max safe rate when there was a
  sweep, the configured rate when it passed without one, and the probe turned off (with
  the reason) when it failed without a sweep, since the file must pass as written;
- the probe set, layer rules, baseline and runtime settings of the config in use, so the
  written file measures the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any, TypeVar

from ..checks.layers import format_channels
from ..config.model import AuditConfig, ModelSpec
from ..document import (
    ColorFigures,
    DeadFiltersFigures,
    LrModelFigures,
    ModelDocument,
    SparsityFigures,
    Verdict,
)

F = TypeVar("F")

#: Absolute margin around measured fractions (sparsity, share of colour-tuned filters).
MARGIN = 0.05
#: Plain words YAML 1.1 reads as something other than a string.
YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
#: The largest starting config written (characters). A config with YAML aliases (in ``factory_kwargs``,
#: say) can hold the same object many times over in a few hundred bytes; written out, it would not end.
MAX_CONFIG_CHARS = 1_000_000


class ConfigTooLarge(ValueError):
    """The starting config would exceed :data:`MAX_CONFIG_CHARS`."""


def glob_escape(layer_id: str) -> str:
    """A ``layers: match`` glob that matches exactly ``layer_id`` (``*``, ``?`` and ``[`` bracketed)."""
    return re.sub(r"([*?[])", r"[\1]", layer_id)


def _float(value: float) -> str:
    """A float YAML 1.1 and 1.2 both read as a float (``1e-05`` would be a string to YAML 1.1)."""
    text = repr(float(value))
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def flow(value: Any, limit: int = MAX_CONFIG_CHARS) -> str:
    """``value`` as a one-line YAML flow node. Never an alias: an object the config held several times is
    written out each time, so :class:`ConfigTooLarge` is raised as soon as the text passes ``limit``."""
    parts: list[str] = []
    _write_flow(value, parts, [limit])
    return "".join(parts)


def _write_flow(value: Any, parts: list[str], left: list[int]) -> None:
    """Append ``value``'s flow text to ``parts``; ``left[0]`` counts down the characters still allowed."""
    if isinstance(value, dict):
        pieces: list[Any] = ["{"]
        for index, (key, item) in enumerate(value.items()):
            pieces += [", " if index else "", f"{_key(key)}: ", item]
        pieces.append("}")
    elif isinstance(value, (list, tuple)):
        pieces = ["["]
        for index, item in enumerate(value):
            pieces += [", " if index else "", item]
        pieces.append("]")
    else:
        pieces = [_scalar(value)]
    for piece in pieces:
        if not isinstance(piece, str):
            _write_flow(piece, parts, left)
            continue
        left[0] -= len(piece)
        if left[0] < 0:
            raise ConfigTooLarge(f"the starting config would be larger than {MAX_CONFIG_CHARS:,} characters")
        parts.append(piece)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", value) and value.lower() not in YAML_WORDS
        return value if plain else json.dumps(value)
    raise TypeError(f"cannot write {value!r} to YAML")  # a bug in this module


def _key(key: Any) -> str:
    return key if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else json.dumps(str(key))


def _floor(value: float) -> float:
    return max(0.0, math.floor(value * 1000 + 1e-9) / 1000)


def _ceil(value: float) -> float:
    return min(1.0, math.ceil(value * 1000 - 1e-9) / 1000)


def _non_default(settings: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    defaults = type(settings)()
    return {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if f.name not in skip and getattr(settings, f.name) != getattr(defaults, f.name)
    }


def _rebased(path: str, source_dir: Path, target_dir: Path) -> str:
    """A path written relative to the config in use, relative to the new file instead."""
    return Path(os.path.relpath((source_dir / path).resolve(), target_dir)).as_posix()


def _verdicts(document: ModelDocument, check: str) -> list[Verdict]:
    return [v for v in document.verdicts if v.check == check]


#: dead_filters keys the starting config sets itself rather than carrying them from the config in use.
DEAD_LIMITS = ("enabled", "max_count", "max_fraction", "evidence")


def _counted(figures: DeadFiltersFigures) -> tuple[int, ...]:
    """The dead channels that counted against the limits (all of them, under ``evidence: probe``)."""
    if figures.counting == "provable":
        return figures.provable_channels
    return figures.dead_channels


def _measured(document: ModelDocument, check: str, figures: type[F]) -> list[tuple[Verdict, F]]:
    """Per-layer verdicts of ``check`` that measured something (skipped ones carry no figures), with their figures."""
    return [
        (v, v.figures) for v in _verdicts(document, check) if v.layer is not None and isinstance(v.figures, figures)
    ]


class _Writer:
    """Collects the YAML lines; ``dead`` gathers (layer id -> [(model, dead channels)]) for ``layers:``."""

    def __init__(self, config: AuditConfig, target_dir: Path) -> None:
        self.config = config
        self.target_dir = target_dir
        self.source_dir = config.base_dir
        self.lines: list[str] = []
        self.dead: dict[str, list[tuple[str, tuple[int, ...]]]] = {}

    def add(self, line: str, comment: str | None = None) -> None:
        """``line``, after ``comment`` (its lines at the same indentation)."""
        indent = line[: len(line) - len(line.lstrip())]
        self.lines.extend(f"{indent}# {text}" for text in (comment.splitlines() if comment else []))
        self.lines.append(line)

    def model(self, document: ModelDocument, path: Path) -> None:
        spec = self.config.model_spec(path)
        self.add(f"  - path: {flow(Path(os.path.relpath(path, self.target_dir)).as_posix())}")
        loading = ("name", "factory", "factory_kwargs", "trust_pickle", "state_dict_key", "strip_prefix", "pythonpath")
        for key in loading:  # how to load and name it, kept from the config in use
            if getattr(spec, key) != getattr(ModelSpec(path=spec.path), key):
                self.add(f"    {key}: {flow(getattr(spec, key))}")
        if document.input is not None:
            self.add(
                f"    input: {flow({key: value for key, value in dataclasses.asdict(document.input).items() if value is not None})}",
                "the input the audit used: size, layout and channels from the model file unless configured;\n"
                "scale, mean and std from the config in use (defaults 1, 0, 1): check them against the model's "
                "preprocessing",
            )
        self.add("    checks:")
        header = len(self.lines) - 1
        self._sparsity(document, spec)
        self._dead_filters(document, spec)
        self._colour(document, spec)
        self._lr(document, spec)
        if all(line.lstrip().startswith("#") for line in self.lines[header + 1 :]):
            del self.lines[header]  # nothing was measured to write a limit for: comments only

    def _sparsity(self, document: ModelDocument, spec: ModelSpec) -> None:
        if not self.config.checks_for(spec).sparsity.enabled:
            self.add("      sparsity: {enabled: false}", "off in the config in use")
            return
        values = [figures.sparsity for _, figures in _measured(document, "sparsity", SparsityFigures)]
        if not values:
            self.lines.append("      # sparsity: no layer was measurable, so no bound is written")
            return
        low, high = min(values), max(values)
        bounds = {"min": _floor(low - MARGIN), "max": _ceil(high + MARGIN)}
        note = f"sparsity measured {low:.3f} .. {high:.3f} over {len(values)} layer(s), widened by {MARGIN}"
        self.add(f"      sparsity: {flow(bounds)}", note)

    def _dead_filters(self, document: ModelDocument, spec: ModelSpec) -> None:
        settings = self.config.checks_for(spec).dead_filters
        if not settings.enabled:
            self.add("      dead_filters: {enabled: false}", "off in the config in use")
            return
        rows = _measured(document, "dead_filters", DeadFiltersFigures)
        if not rows:
            self.lines.append("      # dead_filters: no layer was measurable, so no limit is written")
            return
        counted = [(verdict, figures, _counted(figures)) for verdict, figures in rows]
        with_dead = [(verdict, channels) for verdict, _, channels in counted if channels]
        for verdict, channels in with_dead:
            self.dead.setdefault(str(verdict.layer), []).append((document.path, channels))
        which = "provably dead channels" if settings.evidence == "provable" else "dead channels"
        note = (
            f"{len(with_dead)} of {len(rows)} layer(s) had {which}, accepted under layers: below; "
            "no other channel may die"
            if with_dead
            else f"no {which[:-1]} in {len(rows)} layer(s): none may appear"
        )
        kinds = [kind for _, figures in rows for kind in figures.evidence]
        if kinds:
            found = ", ".join(f"{kinds.count(kind)} {kind}" for kind in ("provable", "revivable", "probe"))
            note += f"\nevidence of the dead channels found: {found}; evidence: {settings.evidence} counts "
            note += "only the provable ones" if settings.evidence == "provable" else "all of them"
        section = {"max_count": 0, "evidence": settings.evidence, **_non_default(settings, skip=DEAD_LIMITS)}
        self.add(f"      dead_filters: {flow(section)}", note)

    def _colour(self, document: ModelDocument, spec: ModelSpec) -> None:
        colour = self.config.checks_for(spec).color
        if not colour.enabled:
            self.add("      color: {enabled: false}", "off in the config in use")
            return
        first = next(
            (
                (v, v.figures)
                for v in _verdicts(document, "color")
                if isinstance(v.figures, ColorFigures) and v.figures.chromatic_share is not None
            ),
            None,
        )
        section: dict[str, Any] = {}
        first_layer = _non_default(colour.first_layer, skip=("expect", "min_selective_fraction"))
        note = "the first conv layer's colour use could not be measured; reported only"
        if first is not None:
            verdict, figures = first
            share, fraction = figures.chromatic_share or 0.0, figures.selective_fraction or 0.0
            note = (
                f"{verdict.layer}: {figures.selective_count} of {figures.channels} filters colour-tuned "
                f"({fraction:.1%}), chromatic energy share {share:.3f}"
            )
            if share <= colour.first_layer.max_sensitivity:
                first_layer = {"expect": "invariant", **first_layer}
            elif fraction - MARGIN > 0:
                first_layer.pop("max_sensitivity", None)
                first_layer = {
                    "expect": "sensitive",
                    "min_selective_fraction": _floor(fraction - MARGIN),
                    **first_layer,
                }
            else:
                note += "; neither sensitive nor invariant, so reported only"
        if first_layer:
            section["first_layer"] = first_layer
        if colour.layers:
            section["layers"] = [dataclasses.asdict(bound) for bound in colour.layers]
        if section:
            self.add(f"      color: {flow(section)}", note)
        else:
            self.lines.append(f"      # color: {note}")

    def _lr(self, document: ModelDocument, spec: ModelSpec) -> None:
        settings = self.config.checks_for(spec).lr_sanity
        if not settings.enabled:
            return
        carried = _non_default(settings, skip=("enabled", "lr"))
        if "labels_dir" in carried:
            carried["labels_dir"] = _rebased(carried["labels_dir"], self.source_dir, self.target_dir)
        verdicts = _verdicts(document, "lr_sanity")
        sweep = document.lr_sweep
        if sweep is not None and sweep.max_safe_lr is not None:
            entry = {"enabled": True, "lr": sweep.max_safe_lr, **carried}
            low, high = settings.sweep_range
            note = f"the sweep's max safe learning rate ({low:g} .. {high:g}); {settings.lr:g} was configured"
        elif verdicts and all(v.outcome == "passed" for v in verdicts):
            model = next(v.figures for v in verdicts if v.layer is None)
            new_dead = model.new_dead if isinstance(model, LrModelFigures) else None
            entry = {"enabled": True, "lr": settings.lr, **carried}
            note = f"passed at lr {settings.lr:g}: {new_dead} filters newly dead"
        else:
            failed = next((v for v in verdicts if v.outcome != "passed"), None)
            why = failed.message if failed is not None else "it did not run"
            entry = {"enabled": False, "lr": settings.lr, **carried}
            note = f"off: when this file was written, {why}; set sweep: true to find the highest safe rate"
        self.add(f"      lr_sanity: {flow(entry)}", note)

    def probe(self) -> None:
        probe = self.config.probe
        section: dict[str, Any] = {
            "count": probe.count,
            "batch_size": probe.batch_size,
            "seed": probe.seed,
            "zero_eps": probe.zero_eps,
        }
        if probe.images is not None:
            section["images"] = _rebased(probe.images, self.source_dir, self.target_dir)
        if probe.augment is not None:
            section["augment"] = probe.augment
        self.add(f"probe: {flow(section)}", "the probe set these bounds were measured with")

    def layers(self) -> None:
        rules = [
            {k: v for k, v in dataclasses.asdict(rule).items() if v or k == "match"} for rule in self.config.layers
        ]
        if not rules and not self.dead:
            return
        self.lines.append("layers:")
        for rule in rules:
            self.add(f"  - {flow(rule)}", "kept from the config in use")
        if self.dead:
            self.lines.append("  # dead channels found when this file was written, accepted: new ones fail the audit")
        for layer_id, found in self.dead.items():
            count = max(len(channels) for _, channels in found)
            where = "; ".join(f"{model} {format_channels(tuple(channels))}" for model, channels in found)
            self.add(f"  - match: {flow(glob_escape(layer_id))}", f"{layer_id}: dead channels in {where}")
            self.lines.append(f"    checks: {flow({'dead_filters': {'max_count': count}})}")

    def settings(self) -> None:
        for name, settings in (("baseline", self.config.baseline), ("runtime", self.config.runtime)):
            changed = _non_default(settings)
            if changed:
                self.add(f"{name}: {flow(changed)}", "kept from the config in use")


def starting_config(
    documents: list[ModelDocument],
    config: AuditConfig,
    model_paths: dict[str, Path],
    target_dir: Path,
    unmeasured: dict[str, str] | None = None,
    version: str = "",
) -> str:
    """The commented YAML text for ``documents`` (the models' report documents, audit outcomes).

    ``model_paths`` maps each document's ``path`` (the model's name in reports) to its file;
    ``target_dir`` is the folder the file goes to (model and probe paths are written relative
    to it); ``unmeasured`` (model -> why) are listed as comments.
    """
    writer = _Writer(config, target_dir)
    source = config.source or "the defaults (no cnnaudit.yaml)"
    writer.lines += [
        f"# A starting cnnaudit.yaml, written by pytest --cnnaudit-init (pytest-cnnaudit {version}).",
        f"# Measured with {source}.",
        f"# Every bound sits around what that audit measured (margin {MARGIN} on fractions), so the models",
        "# pass as they are today and a regression fails. Review it, then commit it beside the models.",
        "# Keys: README.md, or the JSON Schema (python -m pytest_cnnaudit.config.schema).",
        "models:",
    ]
    for document in documents:
        writer.model(document, model_paths[document.path])
    for model, why in sorted((unmeasured or {}).items()):
        first_line = why.splitlines()[0].removeprefix(f"{model}: ") if why else "no report"
        writer.lines.append(f"  # not measured, so left out: {model}: {first_line}")
    writer.probe()
    writer.layers()
    writer.settings()
    text = "\n".join(writer.lines) + "\n"
    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigTooLarge(f"the starting config would be larger than {MAX_CONFIG_CHARS:,} characters")
    return text
