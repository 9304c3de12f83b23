"""Fuzzed --input and --profile specs: a spec or one UsageError line, never another exception."""

from __future__ import annotations


import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from kiln.config import DTYPES, Dim, InputSpec, ShapeRange
from kiln.errors import UsageError
from tests.fuzz.common import (FUZZ, IDENT, LINE_BREAKS, has_line_break, one_line)


# -- 1. --input NAME=DIMS[:DTYPE] and --profile NAME=MIN:OPT:MAX --------------------------------------

ASCII_IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,10}", fullmatch=True)
PADDING = st.sampled_from(["", "", "", " ", "  ", "\t"])
# Unicode decimal digits (category Nd): str.isdigit(), re's \d and int() all accept them.
DIGIT_ZEROS = ["0", "0", "0", "\u0660", "\u06f0", "\u0966", "\uff10", "\U0001d7ce"]


def render_int(value: int, zero: str) -> str:
    return "".join(chr(ord(zero) + int(c)) for c in str(value))


# Dims are at most 2**31 - 1 (ONNX Runtime's and numpy's practical limit); larger ones are refused (see
# test_input_spec_with_an_oversized_dim_is_a_usage_error).
POSITIVE = st.one_of(st.integers(1, 4096), st.sampled_from([2**31 - 1]))
OVERSIZED = st.sampled_from([2**31, 10**30, 2**63, 2**64 + 1, 10**400])


@st.composite
def positive_text(draw) -> tuple[str, int]:
    """A size >= 1 as text: maybe with leading zeros, maybe in another script's digits."""
    value = draw(POSITIVE)
    return draw(st.sampled_from(["", "", "0", "00"])) + render_int(value, draw(st.sampled_from(DIGIT_ZEROS))), value


@FUZZ
@given(size=OVERSIZED, named=st.booleans())
def test_input_spec_with_an_oversized_dim_is_a_usage_error(size, named):
    text = f"x=batch={size},8" if named else f"x={size},8"
    with pytest.raises(UsageError) as info:
        InputSpec.parse(text)
    assert "dimension" in info.value.message and "\n" not in info.value.message


@st.composite
def valid_input_specs(draw) -> tuple[str, InputSpec]:
    """(text, what it means): the documented grammar, with every variation the parser should accept."""
    name = draw(ASCII_IDENT)
    dims, tokens = [], []
    static_only = draw(st.booleans())
    for _ in range(draw(st.integers(1, 5))):
        kind = "size" if static_only else draw(st.sampled_from(["size", "name", "named_size"]))
        if kind == "size":
            text, value = draw(positive_text())
            dims.append(Dim(size=value))
        elif kind == "name":
            text = draw(ASCII_IDENT)
            dims.append(Dim(size=2, name=text))
        else:
            dim_name, (size_text, value) = draw(ASCII_IDENT), draw(positive_text())
            text = f"{dim_name}={size_text}"
            dims.append(Dim(size=value, name=dim_name))
        tokens.append(text)
    if static_only and len(tokens) > 1 and draw(st.booleans()):
        rest = "x".join(tokens)  # the 1x3x224x224 shorthand
    else:
        rest = "".join(t if i == 0 else draw(st.sampled_from([",", ", ", " ,", " , "])) + t
                       for i, t in enumerate(tokens))
    dtype = draw(st.one_of(st.none(), st.sampled_from(DTYPES)))
    suffix = "" if dtype is None else f"{draw(PADDING)}:{draw(PADDING)}{dtype}{draw(PADDING)}"
    text = f"{draw(PADDING)}{name}{draw(PADDING)}={draw(PADDING)}{rest}{suffix}"
    return text, InputSpec(name=name, dims=tuple(dims), dtype=dtype or "float32")


NOISY_NAMES = st.one_of(ASCII_IDENT, st.sampled_from(
    ["", " ", "1a", "a b", "ñame", "a:b", "x", "float32", "a\n", "\n", "日本", "-a", ".a", "a$", "𝔞"]), st.text(max_size=6))
NOISY_SIZES = st.one_of(
    st.integers(-3, 300).map(str), st.sampled_from([10**30, -10**30, 2**63, 10**400]).map(str),
    st.sampled_from(["", " ", "0", "00", "-0", "-1", "+1", "1_0", "1.5", "1e3", "\u00b2", "\u0661\u0662", "\uff11",
                     "0x10", "\u2167", "9" * 5000, "1\n", "NaN", "inf"]))
NOISY_DIMS = st.one_of(NOISY_SIZES, NOISY_NAMES, st.builds(lambda n, s: f"{n}={s}", NOISY_NAMES, NOISY_SIZES),
                       st.text(max_size=6))
NOISY_SEPS = st.one_of(st.just(","), st.sampled_from(["x", "X", ", ", ",,", ";", " ", "=", ":", "\uff0c", "\n"]))
NOISY_DTYPES = st.one_of(st.just(""), st.sampled_from(DTYPES).map(":".__add__), st.sampled_from(
    [":", ": float16 ", ":float", ":FLOAT32", ":int4", ":float32:float32", ":fp16", ":\n", "::"]),
    st.text(max_size=8).map(":".__add__))


@st.composite
def noisy_input_specs(draw) -> str:
    """Near-valid specs: the grammar with wrong parts, odd separators, unicode, huge and negative numbers."""
    dims = draw(st.lists(NOISY_DIMS, max_size=5))
    rest = "".join(d if i == 0 else draw(NOISY_SEPS) + d for i, d in enumerate(dims))
    head = draw(NOISY_NAMES) + draw(st.sampled_from(["=", "=", "=", "", "==", " = ", ":", "\uff1d"]))
    text = head + rest + draw(NOISY_DTYPES)
    if draw(st.booleans()):  # one stray character anywhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.characters()) + text[at:]
    return text


INPUT_SPEC_TEXT = st.one_of(st.text(), noisy_input_specs(), valid_input_specs().map(lambda pair: pair[0]))


def parsed_or_refused(parse, text: str):
    """parse(text), or None when it raised a well-formed UsageError (message, hint, one line); labels the event."""
    try:
        value = parse(text)
    except UsageError as exc:
        assert isinstance(exc.message, str) and exc.message
        assert exc.hint, f"UsageError without a hint for {text!r}: {exc.message}"
        if not has_line_break(text):  # inputs with line breaks: see test_usage_error_messages_are_one_line
            assert one_line(exc.message), exc.message
        event("refused")
        return None
    event("accepted")
    return value


@FUZZ
@given(INPUT_SPEC_TEXT)
@example("")
@example("=")
@example("a=")
@example("a=0")
@example("a=-1")
@example("a=1,,2")
@example("a=" + "9" * 5000)
@example("a=\u00b2")  # isdigit() but not int()
@example("a=1x2x")
@example("a=b=1:float32:int8")
def test_input_spec_parse_returns_a_spec_or_a_usage_error(text):
    spec = parsed_or_refused(InputSpec.parse, text)
    if spec is None:
        return
    assert IDENT.fullmatch(spec.name), spec
    assert spec.dims and all(d.size >= 1 for d in spec.dims), spec
    # Dimension names are checked strictly by test_input_spec_dimension_names_are_identifiers.
    assert all(d.name is None or IDENT.fullmatch(d.name.rstrip("\n")) for d in spec.dims), spec
    assert spec.dtype in DTYPES


@FUZZ
@given(valid_input_specs())
@example(("x=batch=1,3,224,224:float32", InputSpec(name="x", dims=(Dim(size=1, name="batch"), Dim(size=3),
                                                                    Dim(size=224), Dim(size=224)))))
@example(("x=1x3x224x224", InputSpec(name="x", dims=(Dim(size=1), Dim(size=3), Dim(size=224), Dim(size=224)))))
@example(("x=float32", InputSpec(name="x", dims=(Dim(size=2, name="float32"),))))
def test_valid_input_specs_parse_to_what_they_say_and_round_trip(pair):
    text, expected = pair
    spec = InputSpec.parse(text)
    assert spec == expected
    # str() always writes the dtype, dims as SIZE / NAME=SIZE joined by ',' and sizes in ASCII digits, so the
    # round trip holds for every spec, not only for texts written that way.
    assert InputSpec.parse(str(spec)) == spec
    assert str(InputSpec.parse(str(spec))) == str(spec)


@FUZZ
@given(st.one_of(st.text(), noisy_input_specs()))
def test_every_accepted_input_spec_round_trips(text):
    try:
        spec = InputSpec.parse(text)
    except UsageError:
        return
    assert InputSpec.parse(str(spec)) == spec


@FUZZ
@given(valid_input_specs().map(lambda pair: pair[0]), st.integers(0, 10**6))
@example("a=b\n=1", 0)
def test_input_spec_dimension_names_are_identifiers(text, where):
    variants = [text]
    if "=" in text:  # a newline before each '=' in turn, where the strip() calls do not remove it
        cuts = [i for i, c in enumerate(text) if c == "="]
        cut = cuts[where % len(cuts)]
        variants.append(text[:cut] + "\n" + text[cut:])
    for variant in variants:
        try:
            spec = InputSpec.parse(variant)
        except UsageError:
            continue
        assert all(d.name is None or IDENT.fullmatch(d.name) for d in spec.dims), (variant, spec)


@st.composite
def valid_shape_ranges(draw) -> tuple[str, ShapeRange]:
    name = draw(ASCII_IDENT)
    rank = draw(st.integers(1, 4))
    low = draw(st.lists(st.integers(1, 64), min_size=rank, max_size=rank))
    opt = [v + draw(st.integers(0, 64)) for v in low]
    high = [v + draw(st.one_of(st.integers(0, 64), st.just(10**30))) for v in opt]

    def shape(values):
        sep = draw(st.sampled_from(["x", "X"]))
        return sep.join(draw(PADDING) + render_int(v, draw(st.sampled_from(DIGIT_ZEROS))) for v in values)

    text = f"{draw(PADDING)}{name}{draw(PADDING)}={shape(low)}:{shape(opt)}:{shape(high)}"
    return text, ShapeRange(name=name, min=tuple(low), opt=tuple(opt), max=tuple(high))


NOISY_SHAPES = st.lists(NOISY_SIZES, max_size=4).flatmap(
    lambda sizes: st.sampled_from(["x", "X", "*", ",", ""]).map(lambda sep: sep.join(sizes)))
NOISY_PROFILES = st.one_of(
    st.text(),
    valid_shape_ranges().map(lambda pair: pair[0]),
    st.builds(lambda name, eq, parts, sep: name + eq + sep.join(parts), NOISY_NAMES,
              st.sampled_from(["=", "=", "", "=="]), st.lists(NOISY_SHAPES, max_size=5),
              st.sampled_from([":", ":", ";", "::"])))


@FUZZ
@given(NOISY_PROFILES)
@example("a=1:2:3")
@example("a=1x2:1:1x2")
@example("a=2:1:3")
@example("a=0:1:1")
@example("a=1:1:" + "1" * 5000)
@example("a=1::1")
@example("=1:1:1")
def test_shape_range_parse_returns_a_range_or_a_usage_error(text):
    profile = parsed_or_refused(ShapeRange.parse, text)
    if profile is None:
        return
    assert profile.name == profile.name.strip()  # non-empty: test_shape_range_names_are_not_empty
    shapes = (profile.min, profile.opt, profile.max)
    assert len({len(s) for s in shapes}) == 1 and profile.min, profile
    assert all(d >= 1 for s in shapes for d in s), profile
    assert all(a <= b <= c for a, b, c in zip(*shapes)), profile


@FUZZ
@given(valid_shape_ranges())
def test_valid_shape_ranges_parse_to_what_they_say(pair):
    text, expected = pair
    assert ShapeRange.parse(text) == expected


@FUZZ
@given(NOISY_PROFILES)
@example(" =1:1:1")
def test_shape_range_names_are_not_empty(text):
    try:
        profile = ShapeRange.parse(text)
    except UsageError:
        return
    assert profile.name, (text, profile)


@FUZZ
@given(st.sampled_from(["input", "profile"]), st.one_of(noisy_input_specs(), NOISY_PROFILES),
       st.integers(0, 10**6), st.sampled_from(LINE_BREAKS))
@example("input", "", 0, "\n")
@example("profile", "", 0, "\n")
def test_usage_error_messages_are_one_line(parser, text, where, newline):
    at = where % (len(text) + 1)
    text = text[:at] + newline + text[at:]
    try:
        (InputSpec.parse if parser == "input" else ShapeRange.parse)(text)
    except UsageError as exc:
        assert one_line(exc.message), repr(exc.message)
