"""The YAML contract: valid files load, every invalid field is located and explained."""

from __future__ import annotations

import dataclasses
import json
import typing
from importlib import resources

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_cnnaudit.config import (
    AuditConfig,
    BaselineConfig,
    ChecksConfig,
    DeadFiltersCheck,
    InputSpec,
    ProbeConfig,
    RuntimeConfig,
    SparsityCheck,
    load_config,
    parse_config,
)
from pytest_cnnaudit.config.schema import config_schema
from pytest_cnnaudit.errors import ConfigError

FULL = """\
models:
  - path: model.onnx
    input: {size: [224, 224], layout: NHWC, channels: BGR, scale: 255, mean: [103.9, 116.8, 123.7], std: [1, 1, 1]}
    checks:
      dead_filters: {max_count: 2}
  - path: weights.pt
    factory: torchvision.models:resnet18
    factory_kwargs: {num_classes: 10}
probe: {count: 24, batch_size: 8, seed: 3}
checks:
  sparsity: {min: 0.1, max: 0.9}
  dead_filters: {max_fraction: 0.05}
layers:
  - match: "layer4.*"
    checks: {sparsity: {max: 0.99}}
  - match: "fc*"
    skip: "the classifier head"
"""


def test_full_example_loads_into_frozen_dataclasses() -> None:
    config = parse_config(FULL, "cnnaudit.yaml")
    first = config.models[0]
    assert first.input.size == (224, 224) and first.input.channels == "BGR" and first.input.scale == 255
    assert config.models[1].factory_kwargs == {"num_classes": 10}
    assert config.probe == ProbeConfig(count=24, batch_size=8, seed=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.probe.count = 1  # type: ignore[misc]


def test_overrides_apply_in_order_global_model_layer() -> None:
    config = parse_config(FULL, "cnnaudit.yaml")
    checks = config.checks_for(config.models[0], "layer4.1.conv2")
    assert checks.sparsity == SparsityCheck(min=0.1, max=0.99)
    assert checks.dead_filters == DeadFiltersCheck(max_count=2, max_fraction=0.05)
    assert config.checks_for(config.models[1], "conv1").sparsity == SparsityCheck(min=0.1, max=0.9)
    assert config.skip_reason("fc") == "the classifier head" and config.skip_reason("conv1") is None


def test_empty_and_missing_config_give_defaults(tmp_path) -> None:
    assert parse_config("", "x.yaml").checks == ChecksConfig()
    assert load_config(None) == AuditConfig()
    empty = tmp_path / "cnnaudit.yaml"
    empty.write_text("# nothing yet\n")
    assert load_config(empty).probe == ProbeConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "checks:\n  sparsity: {min: 0.1, mux: 0.5}\n",
            "x.yaml:2: checks.sparsity.mux: unknown key 'mux'; did you mean 'max'?",
        ),
        ("probe:\n  cont: 3\n", "x.yaml:2: probe.cont: unknown key 'cont'; did you mean 'count'?"),
        ("probe:\n  count: -4\n", "x.yaml:2: probe.count: got -4, expected a value in 1 .. 100000"),
        ("probe:\n  count: many\n", "x.yaml:2: probe.count: got str 'many', expected an integer"),
        ("probe:\n  count: 2.5\n", "x.yaml:2: probe.count: got float 2.5, expected an integer"),
        ("checks:\n  dead_filters:\n    max_fraction: 1.5\n", "x.yaml:3: checks.dead_filters.max_fraction: got 1.5"),
        ("checks:\n  sparsity:\n    min: 0.7\n    max: 0.3\n", "x.yaml:3: checks.sparsity.min: min 0.7 > max 0.3"),
        ("checks:\n  sparsity:\n    enabled: yes please\n", "expected true or false"),
        ("checks:\n  unknown_check: {}\n", "x.yaml:2: checks.unknown_check: unknown key 'unknown_check'"),
        ("models:\n  - path: a.onnx\n    input: {layout: NHCW}\n", "x.yaml:3: models[0].input.layout: got str 'NHCW'"),
        ("models:\n  - path: a.onnx\n    input: {size: [224]}\n", "models[0].input.size: got 1 values, expected 2"),
        ("models:\n  - path: a.onnx\n    input: {channels: RGB, std: [1, 0, 1]}\n", "models[0].input.std: every std"),
        ("models:\n  - factory: x:y\n", "x.yaml:2: models[0].path: every model needs a path"),
        ("layers:\n  - match: 'conv*'\n    checks: {sparsity: {min: 2}}\n", "layers[0].checks.sparsity.min: got 2"),
        ("probe: [1, 2]\n", "x.yaml:1: probe: expected a mapping"),
        ("checks:\n  sparsity: {min: 0.1\n", "x.yaml:3: not valid YAML: expected ',' or '}'"),
        ("probe:\n  count: 1\nprobe:\n  count: 2\n", "x.yaml:3: duplicate key 'probe'"),
        (
            "models:\n  - path: a.onnx\n    input:\n      mean: [0.5, 0.5]\n",
            "x.yaml:4: models[0].input.mean: got 2 values, expected 1 or 3: input.channels is unset, so the "
            "model's input (1 or 3 channels) decides",
        ),
        (
            "models:\n  - path: a.onnx\n    input: {channels: GRAY, std: [0.2, 0.2, 0.2]}\n",
            "models[0].input.std: got 3 values, expected 1: input.channels GRAY has one channel",
        ),
        (
            "models:\n  - path: a.onnx\n    input: {channels: BGR, mean: [1, 2, 3, 4]}\n",
            "models[0].input.mean: got 4 values, expected 3 (one per channel of input.channels BGR) or 1 (all)",
        ),
        ("probe: {augment: none}\n", "x.yaml:1: probe.augment: none needs probe.images"),
        ("probe: {images: d, augment: sometimes}\n", "probe.augment: got str 'sometimes', expected one of none, crops"),
    ],
)
def test_invalid_config_names_file_line_key_and_allowed(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(text, "x.yaml")
    assert expected in str(error.value)


def test_unreadable_config_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.yaml")


def _leaf_paths(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], typing.Any]]:
    """(key path, type hint) of every scalar field reachable through nested sections."""
    leaves = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get("internal") or field.metadata.get("overrides"):
            continue
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            leaves.extend(_leaf_paths(hint, (*prefix, field.name)))
        elif typing.get_origin(hint) not in (tuple, dict):  # lists and mappings of sections: tested apart
            leaves.append(((*prefix, field.name), hint))
    return leaves


SECTION_LEAVES = [leaf for leaf in _leaf_paths(AuditConfig) if leaf[0][0] in ("probe", "checks", "baseline")]


@given(
    leaf=st.sampled_from(SECTION_LEAVES),
    value=st.one_of(
        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=1)
    ),
)
@settings(max_examples=60, deadline=None)
def test_every_scalar_field_rejects_a_wrong_type_naming_its_path(leaf, value) -> None:
    path, _ = leaf
    document: dict = value
    for key in reversed(path):
        document = {key: document}
    with pytest.raises(ConfigError) as error:
        parse_config(yaml.safe_dump(document), "f.yaml")
    assert ".".join(path) in str(error.value)


@given(key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
@settings(max_examples=60, deadline=None)
def test_unknown_keys_anywhere_are_rejected_with_their_path(key: str) -> None:
    for section, cls in (("probe", ProbeConfig), ("checks", ChecksConfig)):
        if key in {f.name for f in dataclasses.fields(cls)}:
            continue
        with pytest.raises(ConfigError, match=rf"f.yaml:2: {section}\.{key}: unknown key"):
            parse_config(f"{section}:\n  {key}: 1\n", "f.yaml")


def test_shipped_json_schema_is_the_generated_one_and_agrees_with_the_validator() -> None:
    shipped = json.loads((resources.files("pytest_cnnaudit") / "data" / "cnnaudit.schema.json").read_text())
    assert shipped == config_schema(), (
        "regenerate: python -m pytest_cnnaudit.config.schema > pytest_cnnaudit/data/cnnaudit.schema.json"
    )
    validator = jsonschema.Draft202012Validator(shipped)
    jsonschema.Draft202012Validator.check_schema(shipped)
    assert not list(validator.iter_errors(yaml.safe_load(FULL)))
    for bad in ("checks:\n  sparsity: {mux: 1}\n", "probe: {count: 0}\n", "models: [{path: a, input: {layout: X}}]\n"):
        assert list(validator.iter_errors(yaml.safe_load(bad))), bad
        with pytest.raises(ConfigError):
            parse_config(bad, "x.yaml")


# --------------------------------------------------------------------------- every number finite, every level


def _numeric_leaves(cls: type, prefix: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], int]]:
    """(key path, list length or 0 for a single number) of every number in a section, list items
    (``color.layers``) included."""
    leaves: list[tuple[tuple[str | int, ...], int]] = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        inner = options[0] if len(options) == 1 else hint
        args = typing.get_args(inner)
        if dataclasses.is_dataclass(inner):
            leaves.extend(_numeric_leaves(inner, (*prefix, field.name)))
        elif typing.get_origin(inner) is tuple and args and dataclasses.is_dataclass(args[0]):
            leaves.extend(_numeric_leaves(args[0], (*prefix, field.name, 0)))
        elif typing.get_origin(inner) is tuple and args and args[0] in (int, float):
            leaves.append(((*prefix, field.name), 3 if args[-1] is Ellipsis else len(args)))
        elif inner in (int, float):
            leaves.append(((*prefix, field.name), 0))
    return leaves


def _nested(path: tuple[str | int, ...], value: object) -> object:
    for key in reversed(path):
        value = [value] if isinstance(key, int) else {key: value}
    return value


#: Every number of the config, at each level the schema allows it: top level, a model, a layer rule.
NUMBER_PLACES = [
    *[(("probe", *path), listed) for path, listed in _numeric_leaves(ProbeConfig)],
    *[(("baseline", *path), listed) for path, listed in _numeric_leaves(BaselineConfig)],
    *[(("runtime", *path), listed) for path, listed in _numeric_leaves(RuntimeConfig)],
    *[(("models", 0, "input", *path), listed) for path, listed in _numeric_leaves(InputSpec)],
    *[(("checks", *path), listed) for path, listed in _numeric_leaves(ChecksConfig)],
    *[(("models", 0, "checks", *path), listed) for path, listed in _numeric_leaves(ChecksConfig)],
    *[(("layers", 0, "checks", *path), listed) for path, listed in _numeric_leaves(ChecksConfig)],
]


def _dotted(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path).lstrip(".")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("path", "listed"), NUMBER_PLACES, ids=[_dotted(path) for path, _ in NUMBER_PLACES])
def test_no_number_may_be_nan_or_infinite_at_any_level(path: tuple, listed: int, bad: float) -> None:
    """YAML's .nan and .inf are numbers to the YAML reader; before, NaN passed every range check."""
    document = _nested(path, [bad] * listed if listed else bad)
    if path[0] == "models":
        document["models"][0]["path"] = "a.onnx"  # type: ignore[index]
    if path[0] == "layers":
        document["layers"][0]["match"] = "*"  # type: ignore[index]
        document["checks"] = {
            section: {"enabled": True} for section in ("sparsity", "dead_filters", "color", "lr_sanity")
        }  # type: ignore[index]
    text = yaml.safe_dump(document)
    with pytest.raises(ConfigError) as error:
        parse_config(text, "x.yaml")
    message = str(error.value)
    assert _dotted(path) in message and ("finite" in message or "expected an integer" in message), message


#: One valid, non-default value for each field a checks section has (list fields: one complete item).
CHECK_SAMPLES = {
    "sparsity": {"min": 0.1, "max": 0.9, "by_activation": {"silu": {"min": 0.2}}, "allow_unmeasured": True},
    "dead_filters": {
        "max_count": 2,
        "max_fraction": 0.5,
        "by_activation": {"gelu": {"max_fraction": 0.6}},
        "min_positions": 4,
        "allow_unmeasured": True,
        "evidence": "provable",
        "certify": False,
        "witness_steps": 8,
        "witness_channels": 2,
    },
    "lr_sanity": {
        "lr": 0.5,
        "optimizer": "adam",
        "momentum": 0.5,
        "weight_decay": 0.1,
        "steps": 3,
        "batch_size": 2,
        "objective": "labels",
        "labels_dir": "labels",
        "max_new_dead": 2,
        "sweep": True,
        "sweep_range": [0.001, 1.0],
        "sweep_per_decade": 3,
        "allow_unmeasured": True,
    },
    "color": {
        "first_layer": {
            "expect": "invariant",
            "min_selective_fraction": 0.3,
            "max_sensitivity": 0.1,
            "csi_threshold": 0.4,
        },
        "layers": [{"match": "conv*", "min_selective_fraction": 0.1, "max_selective_fraction": 0.8}],
        "allow_unmeasured": True,
        "profile_images": 16,
    },
}


def test_check_samples_cover_every_field() -> None:
    for name, section in CHECK_SAMPLES.items():
        fields = {f.name for f in dataclasses.fields(getattr(ChecksConfig(), name))} - {"enabled"}
        assert set(section) == fields, name


@pytest.mark.parametrize("check", list(CHECK_SAMPLES))
def test_every_override_is_valid_and_typed_at_every_level(check: str) -> None:
    """A check's section gives the same typed settings at the top level, in a model and in a layer rule
    (before, a model's or layer's color.layers stayed a dict: 'dict' object has no attribute 'match')."""
    section = yaml.safe_dump(CHECK_SAMPLES[check], default_flow_style=True).strip()
    texts = {
        "top": f"checks: {{{check}: {section}}}\nmodels: [{{path: a.onnx}}]\n",
        "model": f"models: [{{path: a.onnx, checks: {{{check}: {section}}}}}]\n",
        "layer": f"checks: {{{check}: {{enabled: true}}}}\nmodels: [{{path: a.onnx}}]\n"
        f"layers: [{{match: 'conv*', checks: {{{check}: {section}}}}}]\n",
    }
    settings = {}
    for level, text in texts.items():
        config = parse_config(text, "x.yaml")
        settings[level] = getattr(config.checks_for(config.models[0], "conv1"), check)
    assert settings["top"] == settings["model"] == settings["layer"]
    for field in dataclasses.fields(settings["layer"]):
        value = getattr(settings["layer"], field.name)
        items = value if isinstance(value, tuple) else tuple(value.values()) if isinstance(value, dict) else (value,)
        assert not any(isinstance(item, dict) for item in items), (check, field.name, value)


@pytest.mark.parametrize(
    ("text", "lr_for_model", "lr_for_other"),
    [
        ("checks: {lr_sanity: {lr: 0.01}}", True, True),
        ("checks: {lr_sanity: {}}", True, True),
        ("checks: {lr_sanity: {enabled: false, lr: 0.01}}", False, False),
        ("models: [{path: a.onnx, checks: {lr_sanity: {lr: 0.1}}}]", True, False),
        (
            "checks: {lr_sanity: {enabled: false}}\nmodels: [{path: a.onnx, checks: {lr_sanity: {lr: 0.1}}}]",
            True,
            False,
        ),
        (
            "checks: {lr_sanity: {lr: 0.1}}\nmodels: [{path: a.onnx, checks: {lr_sanity: {enabled: false}}}]",
            False,
            True,
        ),
        ("checks: {sparsity: {enabled: false}}", None, None),
    ],
)
def test_a_configured_check_runs(text: str, lr_for_model: bool | None, lr_for_other: bool | None) -> None:
    """Giving a check's section (top level or a model's) turns it on unless it says enabled: false."""
    config = parse_config(text, "x.yaml")
    spec = config.model_spec(config.base_dir / "a.onnx")
    other = config.model_spec(config.base_dir / "b.onnx")
    if lr_for_model is None:
        assert not config.checks_for(spec).sparsity.enabled and not config.checks_for(spec).lr_sanity.enabled
        return
    assert config.checks_for(spec).lr_sanity.enabled is lr_for_model
    assert config.checks_for(other).lr_sanity.enabled is lr_for_other


def test_a_layer_rule_tunes_limits_and_never_turns_a_check_on() -> None:
    config = parse_config(
        "checks: {sparsity: {enabled: false}, lr_sanity: {lr: 0.1}}\n"
        "layers: [{match: 'conv*', checks: {lr_sanity: {max_new_dead: 2}}},"
        " {match: 'fc', checks: {sparsity: {enabled: true, max: 0.99}}}]\n",
        "x.yaml",
    )
    spec = config.model_spec(config.base_dir / "a.onnx")
    assert config.checks_for(spec, "conv1").lr_sanity.max_new_dead == 2
    assert not config.checks_for(spec, "conv1").sparsity.enabled and config.checks_for(spec, "fc").sparsity.enabled


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "layers:\n  - match: '*'\n    checks: {lr_sanity: {max_new_dead: 2}}\n",
            "x.yaml:3: layers[0].checks.lr_sanity: lr_sanity is off for every model, so this rule would change "
            "nothing; turn it on under checks.lr_sanity (or a model's checks)",
        ),
        (
            "checks: {sparsity: {enabled: false}}\nlayers:\n  - match: '*'\n    checks: {sparsity: {max: 0.5}}\n",
            "x.yaml:4: layers[0].checks.sparsity: sparsity is off for every model, so this rule would change nothing; "
            "turn it on under checks.sparsity (or a model's checks), or give enabled: true here for these layers only",
        ),
        (
            "checks:\n  sparsity: {min: 0.5}\nmodels:\n  - path: a.onnx\n    checks:\n      sparsity: {max: 0.4}\n",
            "x.yaml:6: models[0].checks.sparsity.min: min 0.5 > max 0.4 (applied over the top-level checks)",
        ),
        (
            "models:\n  - path: a.onnx\n    checks: {sparsity: {min: 0.5}}\nlayers:\n  - match: '*'\n"
            "    checks:\n      sparsity: {max: 0.4}\n",
            "x.yaml:7: layers[0].checks.sparsity.min: min 0.5 > max 0.4 (applied over the checks of models[0] (a.onnx))",
        ),
        (
            "layers:\n  - match: '*'\n    checks:\n      color:\n        layers:\n"
            "          - {match: '*', min_selective_fraction: 0.9, max_selective_fraction: 0.5}\n",
            "x.yaml:6: layers[0].checks.color.layers[0].min_selective_fraction: 0.9 > max_selective_fraction 0.5",
        ),
    ],
)
def test_overrides_are_checked_where_they_apply(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(text, "x.yaml")
    assert expected in str(error.value)


def test_layer_rules_that_only_break_a_rule_together_name_themselves() -> None:
    """Which rules meet on a layer is known only once its id is: then a config error names both."""
    config = parse_config(
        "layers:\n  - match: 'conv*'\n    checks: {sparsity: {min: 0.6}}\n"
        "  - match: '*2'\n    checks: {sparsity: {max: 0.5}}\n",
        "x.yaml",
    )
    spec = config.model_spec(config.base_dir / "a.onnx")
    assert config.checks_for(spec, "conv1").sparsity.min == 0.6
    with pytest.raises(ConfigError) as error:
        config.checks_for(spec, "conv2")
    assert str(error.value) == (
        "x.yaml: layers[0] and layers[1] together, on layer conv2 of a.onnx: checks.sparsity.min: min 0.6 > max 0.5"
    )
