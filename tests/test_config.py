"""ExportConfig and its parts: the --input spec grammar, immutability, and when an accuracy budget is a gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kiln.config import AccuracyBudget, Dim, ExportConfig, InputSpec
from kiln.errors import UsageError


def dims(spec: InputSpec) -> list[tuple[int, str | None]]:
    return [(d.size, d.name) for d in spec.dims]


def test_named_dynamic_batch_with_example_size_and_dtype():
    spec = InputSpec.parse("x=batch=1,3,224,224:float32")
    assert spec.name == "x"
    assert dims(spec) == [(1, "batch"), (3, None), (224, None), (224, None)]
    assert spec.dtype == "float32"
    assert spec.shape == (1, 3, 224, 224)
    assert spec.dynamic_axes == {0: "batch"}
    assert str(spec) == "x=batch=1,3,224,224:float32"


def test_bare_dim_name_is_dynamic_with_example_size_2():
    spec = InputSpec.parse("ids=batch,sequence=128:int64")
    assert spec.name == "ids"
    assert dims(spec) == [(2, "batch"), (128, "sequence")]
    assert spec.dtype == "int64"
    assert spec.dynamic_axes == {0: "batch", 1: "sequence"}


def test_x_separated_shorthand_is_all_static_float32():
    spec = InputSpec.parse("a=1x3x8x8")
    assert spec.name == "a"
    assert dims(spec) == [(1, None), (3, None), (8, None), (8, None)]
    assert spec.dtype == "float32"
    assert spec.dynamic_axes == {}


def test_x_shorthand_takes_a_dtype():
    spec = InputSpec.parse("mask=2x16:bool")
    assert spec.shape == (2, 16)
    assert spec.dtype == "bool"


def test_dim_names_containing_x_are_not_split():
    spec = InputSpec.parse("pixel_values=maxbatch,3")
    assert dims(spec) == [(2, "maxbatch"), (3, None)]


def test_spaces_around_name_and_dims_are_ignored():
    spec = InputSpec.parse(" x = batch=4 , 8 ")
    assert spec.name == "x"
    assert dims(spec) == [(4, "batch"), (8, None)]


@pytest.mark.parametrize("text, first_words", [
    ("x", "input spec 'x' is malformed"),
    ("x=", "input spec 'x=' is malformed"),
    ("=1,2", "input spec '=1,2' is malformed"),
    ("1x=2", "input spec '1x=2' is malformed"),
    ("x=1,?", "input spec 'x=1,?': dimension '?' is not valid"),
    ("x=1,,2", "input spec 'x=1,,2': dimension '' is not valid"),
    ("x=-1,8", "input spec 'x=-1,8': dimension '-1' is not valid"),
    ("x=0,8", "input spec 'x=0,8': dimension '0' is not valid"),
    ("x=batch=0,8", "input spec 'x=batch=0,8': dimension 'batch=0' is not valid"),
    ("x=batch=,8", "input spec 'x=batch=,8': dimension 'batch=' is not valid"),
    ("x=2x", "input spec 'x=2x': dimension '2x' is not valid"),
    ("x=1,8:float128", "input spec 'x=1,8:float128' has unknown dtype 'float128'"),
    ("x=1,8:", "input spec 'x=1,8:' has unknown dtype ''"),
])
def test_invalid_input_specs_raise_usage_error(text, first_words):
    with pytest.raises(UsageError) as info:
        InputSpec.parse(text)
    assert info.value.message.startswith(first_words), info.value.message
    assert info.value.exit_code == 2
    assert info.value.hint  # every refusal says what to do


def test_input_spec_constructor_rejects_unknown_dtype():
    with pytest.raises(ValidationError):
        InputSpec(name="x", dims=(Dim(size=1),), dtype="float128")


def test_export_config_is_frozen():
    config = ExportConfig(source="m.onnx", out=Path("out"))
    with pytest.raises(ValidationError):
        config.precision = "int8"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.budget = AccuracyBudget(min_cosine=0.9)  # type: ignore[misc]
    assert config.precision == "fp32"
    assert config.budget.active is False


def test_export_config_forbids_unknown_fields_and_precisions():
    with pytest.raises(ValidationError):
        ExportConfig(source="m.onnx", out=Path("out"), precison="int8")  # misspelt on purpose
    with pytest.raises(ValidationError):
        ExportConfig(source="m.onnx", out=Path("out"), precision="fp4")  # fp8 is known (NVIDIA SM89+); fp4 is not


def test_nested_settings_are_frozen_too():
    config = ExportConfig(source="m.onnx", out=Path("out"), inputs=(InputSpec.parse("x=batch=1,8"),))
    with pytest.raises(ValidationError):
        config.inputs[0].dtype = "int64"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.bench.warmup = 0  # type: ignore[misc]


def test_accuracy_budget_inactive_when_nothing_set():
    assert AccuracyBudget().active is False


@pytest.mark.parametrize("limit", [{"min_cosine": 0.99}, {"max_top1_disagreement": 0.05},
                                   {"max_abs_error": 0.0}, {"min_cosine": -1.0}])
def test_accuracy_budget_active_when_any_limit_set_even_zero(limit):
    assert AccuracyBudget(**limit).active is True


@pytest.mark.parametrize("limit", [{"min_cosine": 1.1}, {"min_cosine": -1.5}, {"max_top1_disagreement": 1.5},
                                   {"max_abs_error": -0.1}])
def test_accuracy_budget_rejects_impossible_limits(limit):
    with pytest.raises(ValidationError):
        AccuracyBudget(**limit)
