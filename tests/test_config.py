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
    ChecksConfig,
    DeadFiltersCheck,
    ProbeConfig,
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
        elif typing.get_origin(hint) is not tuple:
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
