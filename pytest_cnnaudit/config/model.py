"""The configuration contract: frozen dataclasses, one per section of ``cnnaudit.yaml``.

These dataclasses are the single source of the contract: the validator
(:mod:`pytest_cnnaudit.config.loading`) and the published JSON Schema
(:mod:`pytest_cnnaudit.config.schema`) are both derived from their fields, so the two
cannot drift apart. Each field's ``metadata`` carries its documentation and, for
numbers, the allowed range; cross-field rules raise from ``__post_init__`` and are
located by the loader.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .dead_filters import DeadFiltersCheck


def _doc(text: str, low: float | None = None, high: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"doc": text, "low": low, "high": high, **extra}


def _check(condition: bool, key: str, message: str) -> None:
    """Cross-field rule inside ``__post_init__``: raised as (key, message) and located by the loader."""
    if not condition:
        raise FieldRuleError(key, message)


class FieldRuleError(ValueError):
    """A broken cross-field rule: ``key`` is the field the loader points the error at."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


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
        if self.channels is not None:
            wanted = 1 if self.channels == "GRAY" else 3
            for key, values in (("mean", self.mean), ("std", self.std)):
                _check(values is None or len(values) in (1, wanted), key, f"{self.channels} needs {wanted} values")


@dataclass(frozen=True)
class ProbeConfig:
    """The probe images run through every model once."""

    images: str | None = field(
        default=None, metadata=_doc("folder of images or (N, H, W, 3) .npy; default: the shipped photographs")
    )
    count: int = field(
        default=32, metadata=_doc("number of probe images (24 photographs were used to set the defaults)", 1, 100000)
    )
    batch_size: int = field(default=16, metadata=_doc("images per forward pass; bounds peak memory", 1, 4096))
    seed: int = field(default=0, metadata=_doc("seed of the crops and flips", 0, 2**32 - 1))
    zero_eps: float = field(
        default=0.0,
        metadata=_doc(
            "an activation counts as zero when |a| <= zero_eps; 0 counts exactly the inactive ReLU units", 0.0, None
        ),
    )


@dataclass(frozen=True)
class SparsityCheck:
    """Each layer's fraction of zero activations lies in [min, max].

    Defaults: trained ImageNet CNNs measure 0.07-0.94 per layer (mostly 0.4-0.6);
    [0.03, 0.97] passes all of those and still flags all-zero or fully dense maps.
    """

    enabled: bool = field(default=True, metadata=_doc("run this check"))
    min: float = field(default=0.03, metadata=_doc("lowest allowed zero fraction", 0.0, 1.0))
    max: float = field(default=0.97, metadata=_doc("highest allowed zero fraction", 0.0, 1.0))
    allow_unmeasured: bool = field(
        default=False,
        metadata=_doc("pass (as skipped) a model none of whose layers can be measured, instead of failing it"),
    )

    def __post_init__(self) -> None:
        _check(self.min <= self.max, "min", f"min {self.min} > max {self.max}")


@dataclass(frozen=True)
class LrSanityCheck:
    """A short fine-tuning probe at ``lr`` must not kill filters (off unless enabled: it trains).

    Defaults: SGD with momentum 0.9 at 0.01 is the usual fine-tuning recipe of ImageNet
    CNNs (they train from scratch at 0.1); a rate that kills filters does so within the
    first few updates, so 20 steps of 8 images find it at the cost of 20 training steps;
    a healthy rate kills none in that time, so none may die (``max_new_dead: 0``).
    """

    enabled: bool = field(default=False, metadata=_doc("run the fine-tuning probe (costs training steps)"))
    lr: float = field(default=0.01, metadata=_doc("learning rate the team intends to fine-tune with", 0.0, None))
    optimizer: Literal["sgd", "adam", "adamw"] = field(default="sgd", metadata=_doc("optimizer of the probe"))
    momentum: float = field(
        default=0.9, metadata=_doc("SGD momentum (adam and adamw use their default betas)", 0.0, 1.0)
    )
    weight_decay: float = field(default=0.0, metadata=_doc("weight decay (decoupled for adamw)", 0.0, None))
    steps: int = field(default=20, metadata=_doc("training steps of the probe", 1, 100000))
    batch_size: int = field(
        default=8, metadata=_doc("images per training step (a model with a fixed batch size uses its own)", 1, 4096)
    )
    objective: Literal["self", "labels", "random"] = field(
        default="self",
        metadata=_doc(
            "self: cross-entropy to the model's own argmax (MSE to its own outputs if not a classifier); "
            "labels: labels_dir; random: seeded random labels (seeded random targets, MSE, if not a classifier)"
        ),
    )
    labels_dir: str | None = field(
        default=None,
        metadata=_doc("folder with one subfolder of images per class (sorted names are class 0, 1, ...)"),
    )
    max_new_dead: float = field(
        default=0,
        metadata=_doc("newly dead filters allowed per layer: a count (whole number >= 1) or a fraction (< 1)", 0, None),
    )
    sweep: bool = field(default=False, metadata=_doc("sweep a log grid of rates and report the max safe rate"))
    sweep_range: tuple[float, float] = field(
        default=(1e-5, 10.0), metadata=_doc("lowest and highest rate of the sweep", 1e-12, None)
    )
    sweep_per_decade: int = field(
        default=2, metadata=_doc("rates per decade of the sweep (2: 1, 3.16, 10, ...)", 1, 100)
    )
    allow_unmeasured: bool = field(
        default=False,
        metadata=_doc("pass (as skipped) a model none of whose layers can be measured, instead of failing it"),
    )

    def __post_init__(self) -> None:
        _check(self.objective != "labels" or self.labels_dir is not None, "labels_dir", "objective labels needs it")
        _check(
            self.max_new_dead < 1 or float(self.max_new_dead).is_integer(),
            "max_new_dead",
            f"{self.max_new_dead} is neither a whole count nor a fraction below 1",
        )
        low, high = self.sweep_range
        _check(low < high, "sweep_range", f"lowest rate {low} is not below highest rate {high}")


@dataclass(frozen=True)
class FirstLayerColor:
    """What the first conv layer's colour use must be, judged from its weights.

    A filter is colour-selective when more than ``csi_threshold`` of its weight energy
    (input normalisation folded in, on raw RGB) lies on the red-green and blue-yellow
    opponent axes rather than the achromatic one. Defaults: trained ImageNet CNNs have
    20-40% such filters in their first layer (random filters put two thirds of their
    energy there on average), so ``sensitive`` asks for 20%; ``invariant`` allows 5% of
    the whole layer's energy on the opponent axes (filters with equal R, G, B weights: 0).
    """

    expect: Literal["sensitive", "invariant"] | None = field(
        default=None, metadata=_doc("expected colour use; unset: measured and reported only")
    )
    min_selective_fraction: float = field(
        default=0.2,
        metadata=_doc("sensitive: least fraction of colour-selective filters (trained nets: 20-40%)", 0.0, 1.0),
    )
    max_sensitivity: float = field(
        default=0.05,
        metadata=_doc("invariant: largest chromatic energy share of the layer (opponent-axis / total)", 0.0, 1.0),
    )
    csi_threshold: float = field(
        default=0.5,
        metadata=_doc(
            "colour-selective above this: the chromatic energy fraction of a first-layer filter's weights, "
            "the CSI of any layer's channel (profile and bounds)",
            0.0,
            1.0,
        ),
    )


@dataclass(frozen=True)
class LayerColorBound:
    """Per-layer bound on the fraction of colour-selective channels (CSI > ``first_layer.csi_threshold``).

    Each layer whose id matches gets an item ``color[<layer>]``.
    """

    match: str = field(default="*", metadata=_doc("glob on layer ids"))
    min_selective_fraction: float = field(default=0.0, metadata=_doc("least selective fraction", 0.0, 1.0))
    max_selective_fraction: float = field(default=1.0, metadata=_doc("largest selective fraction", 0.0, 1.0))

    def __post_init__(self) -> None:
        _check(
            self.min_selective_fraction <= self.max_selective_fraction,
            "min_selective_fraction",
            f"{self.min_selective_fraction} > max_selective_fraction {self.max_selective_fraction}",
        )


@dataclass(frozen=True)
class ColorCheck:
    """Colour sensitivity of the first conv layer, and a colour profile of every layer."""

    enabled: bool = field(default=True, metadata=_doc("run this check"))
    first_layer: FirstLayerColor = field(default_factory=FirstLayerColor, metadata=_doc("first conv layer"))
    layers: tuple[LayerColorBound, ...] = field(default=(), metadata=_doc("optional per-layer bounds"))
    allow_unmeasured: bool = field(
        default=False,
        metadata=_doc(
            "with first_layer.expect set: skip, instead of failing, when the first conv's weights cannot be read"
        ),
    )


@dataclass(frozen=True)
class ChecksConfig:
    """Thresholds of every check."""

    sparsity: SparsityCheck = field(default_factory=SparsityCheck, metadata=_doc("activation sparsity"))
    dead_filters: DeadFiltersCheck = field(default_factory=DeadFiltersCheck, metadata=_doc("never-active channels"))
    lr_sanity: LrSanityCheck = field(default_factory=LrSanityCheck, metadata=_doc("learning-rate probe"))
    color: ColorCheck = field(default_factory=ColorCheck, metadata=_doc("colour sensitivity"))


@dataclass(frozen=True)
class LayerRule:
    """Overrides for the layers whose id matches ``match`` (a glob), or a skip with a reason."""

    match: str = field(default="*", metadata=_doc("glob on layer ids, e.g. 'layer4.*'"))
    skip: str | None = field(default=None, metadata=_doc("skip these layers' items with this reason"))
    checks: dict[str, Any] = field(
        default_factory=dict, metadata=_doc("partial checks section applied to these layers", overrides=ChecksConfig)
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
        default_factory=dict, metadata=_doc("partial checks section for this model", overrides=ChecksConfig)
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


@dataclass(frozen=True)
class AuditConfig:
    """The whole ``cnnaudit.yaml``."""

    models: tuple[ModelSpec, ...] = field(default=(), metadata=_doc("models to audit besides command-line paths"))
    probe: ProbeConfig = field(default_factory=ProbeConfig, metadata=_doc("probe images"))
    checks: ChecksConfig = field(default_factory=ChecksConfig, metadata=_doc("check thresholds"))
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
        checks = apply_overrides(self.checks, model.checks)
        if layer_id is not None:
            for rule in self.layers:
                if fnmatch.fnmatchcase(layer_id, rule.match):
                    checks = apply_overrides(checks, rule.checks)
        return checks

    def skip_reason(self, layer_id: str) -> str | None:
        for rule in self.layers:
            if rule.skip is not None and fnmatch.fnmatchcase(layer_id, rule.match):
                return rule.skip
        return None


def apply_overrides(base: Any, overrides: dict[str, Any]) -> Any:
    """``base`` with the (already validated) partial ``overrides`` dict applied, recursively."""
    changes = {}
    for key, value in overrides.items():
        current = getattr(base, key)
        changes[key] = apply_overrides(current, value) if dataclasses.is_dataclass(current) else value
    return dataclasses.replace(base, **changes) if changes else base
