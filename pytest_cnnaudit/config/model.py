"""The configuration contract: frozen dataclasses, one per section of ``cnnaudit.yaml``.

These dataclasses are the single source of the contract: the validator
(:mod:`pytest_cnnaudit.config.loading`) and the published JSON Schema
(:mod:`pytest_cnnaudit.config.schema`) are both derived from their fields, so the two
cannot drift apart. Each field's ``metadata`` carries its documentation and, for
numbers, the allowed range; cross-field rules raise from ``__post_init__`` and are
located by the loader. The input spec and the probe set live in :mod:`.inputs`, the
``checks:`` section in :mod:`.checks`.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .checks import ChecksConfig
from .inputs import InputSpec, ProbeConfig
from .rules import FieldRuleError, apply_overrides
from .rules import described as _doc
from .rules import require as _check


@dataclass(frozen=True)
class LayerRule:
    """Overrides for the layers whose id matches ``match`` (a glob), or a skip with a reason."""

    match: str = field(default="*", metadata=_doc("glob on layer ids, e.g. 'layer4.*'"))
    skip: str | None = field(default=None, metadata=_doc("skip these layers' items with this reason"))
    checks: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "partial checks section applied to these layers (limits only: it turns a check on or off just "
            "with an explicit enabled)",
            overrides=ChecksConfig,
        ),
    )


@dataclass(frozen=True)
class ModelSpec:
    """One model to audit."""

    path: str = field(default="", metadata=_doc("model file, relative to the config file"))
    name: str | None = field(
        default=None,
        metadata=_doc("the name baselines know this model by (default: its path); keeps a renamed file's baseline"),
    )
    factory: str | None = field(
        default=None, metadata=_doc("module:callable building the architecture of a state_dict")
    )
    factory_kwargs: dict[str, Any] = field(default_factory=dict, metadata=_doc("keyword arguments of the factory"))
    trust_pickle: bool = field(default=False, metadata=_doc("allow unpickling a whole module (runs code!)"))
    input: InputSpec = field(default_factory=InputSpec, metadata=_doc("input spec; unset fields come from the model"))
    checks: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "partial checks section for this model (a check's section given here turns it on for this model)",
            overrides=ChecksConfig,
            sections_enable=True,
        ),
    )
    state_dict_key: str | None = field(
        default=None,
        metadata=_doc(
            "key of the state_dict in a dict checkpoint, dotted for nesting ('state_dict', 'ema.model'); "
            "unset: the one value of the checkpoint (or of a dict in it) that is a state_dict"
        ),
    )
    strip_prefix: str | None = field(
        default=None,
        metadata=_doc(
            "keep only the state_dict keys under this prefix, with the prefix removed ('model.' of a Lightning "
            "module); unset: a 'module.', '_orig_mod.' or 'model.' prefix is stripped when that alone makes the "
            "keys fit the factory's module"
        ),
    )
    pythonpath: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "folders (relative to the config file) put on sys.path while the factory is imported or a trusted "
            "pickle is loaded, besides the config's and the model's own folders"
        ),
    )

    def __post_init__(self) -> None:
        _check(bool(self.path), "path", "every model needs a path")
        _check(self.strip_prefix != "", "strip_prefix", "an empty prefix strips nothing; leave it unset")
        _check(self.state_dict_key != "", "state_dict_key", "an empty key names nothing; leave it unset")


@dataclass(frozen=True)
class BaselineConfig:
    """What counts as a regression against a saved baseline."""

    sparsity_tolerance: float = field(default=0.05, metadata=_doc("largest allowed move of a layer's sparsity", 0, 1))
    dead_growth: int = field(default=0, metadata=_doc("dead channels a layer may gain", 0, None))
    require: bool = field(
        default=False,
        metadata=_doc("fail (rather than skip) a model or layer that is not in the baseline file"),
    )


@dataclass(frozen=True)
class RuntimeConfig:
    """How models are run: in a child process, and within a memory budget."""

    isolate: bool = field(
        default=True,
        metadata=_doc("measure each model file in a child process, so a crashing runtime fails only that model"),
    )
    memory_budget_mb: int = field(
        default=4096,
        metadata=_doc("activation memory one batch may use; the batch size shrinks to fit", 64, None),
    )
    timeout_s: float = field(
        default=1800.0,
        metadata=_doc(
            "fail a model whose isolated measuring process has not finished after this many seconds "
            "(the learning-rate sweep of a large model takes minutes)",
            1.0,
            None,
        ),
    )
    device: str = field(
        default="auto",
        metadata=_doc(
            "where models run: auto (CUDA when available), cpu, cuda or cuda:N; ONNX models on CUDA need the "
            "onnxruntime-gpu package in place of onnxruntime"
        ),
    )

    def __post_init__(self) -> None:
        _check(
            re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
            "device",
            f"{self.device!r} is not a device: auto, cpu, cuda or cuda:N (N: the GPU's index, e.g. cuda:0)",
        )


@dataclass(frozen=True)
class AuditConfig:
    """The whole ``cnnaudit.yaml``."""

    models: tuple[ModelSpec, ...] = field(default=(), metadata=_doc("models to audit besides command-line paths"))
    probe: ProbeConfig = field(default_factory=ProbeConfig, metadata=_doc("probe images"))
    checks: ChecksConfig = field(
        default_factory=ChecksConfig,
        metadata=_doc(
            "check thresholds; a check's section given here turns it on unless it says enabled: false",
            sections_enable=True,
        ),
    )
    layers: tuple[LayerRule, ...] = field(default=(), metadata=_doc("per-layer overrides and skips by glob"))
    baseline: BaselineConfig = field(default_factory=BaselineConfig, metadata=_doc("baseline comparison"))
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig, metadata=_doc("process isolation and memory"))
    source: str | None = field(default=None, metadata=_doc("", internal=True))

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the config are read from: the config file's, else the working directory."""
        return Path(self.source).parent if self.source else Path.cwd()

    def model_spec(self, path: Path) -> ModelSpec:
        """The YAML entry for ``path`` (matched by resolved path), or defaults."""
        for spec in self.models:
            if (self.base_dir / spec.path).resolve() == path.resolve():
                return spec
        return ModelSpec(path=str(path))

    def checks_for(self, model: ModelSpec, layer_id: str | None = None) -> ChecksConfig:
        """Global checks, then the model's overrides, then matching layer rules in file order."""
        checks = apply_overrides(self.checks, model.checks)  # each override alone was validated on loading
        if layer_id is None:
            return checks
        matched = []
        for index, rule in enumerate(self.layers):
            if fnmatch.fnmatchcase(layer_id, rule.match):
                matched.append(index)
                try:
                    checks = apply_overrides(checks, rule.checks)
                except FieldRuleError as exc:  # only several rules together can break a rule here
                    rules = " and ".join(f"layers[{i}]" for i in matched)
                    where = f"{self.source or 'the config'}: {rules} together, on layer {layer_id} of {model.path}"
                    raise ConfigError(f"{where}: checks.{exc.key}: {exc}") from None
        return checks

    def skip_reason(self, layer_id: str) -> str | None:
        for rule in self.layers:
            if rule.skip is not None and fnmatch.fnmatchcase(layer_id, rule.match):
                return rule.skip
        return None
