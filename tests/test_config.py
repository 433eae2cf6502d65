"""Technique-spec grammar, canonical cell strings and RunConfig validation."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costtax.config import RunConfig, expand_techniques, parse_technique_spec
from costtax.errors import ConfigError

pytestmark = pytest.mark.unit


def cells(*specs):
    return [c.cell for c in expand_techniques(specs)]


@pytest.mark.parametrize(
    "specs, expected",
    [
        (["plain"], ["plain"]),
        (["bon"], ["plain", "bon:n=4"]),
        (["bon:n=4"], ["plain", "bon:n=4"]),
        (["bon:n=1,2,4"], ["plain", "bon:n=1", "bon:n=2", "bon:n=4"]),
        (["bon:n=4,share_prefix=false"], ["plain", "bon:n=4,share_prefix=false"]),
        (["bon:n=4,share_prefix=true"], ["plain", "bon:n=4"]),
        (["bon:n=2,4,share_prefix=true,false"], ["plain", "bon:n=2", "bon:n=2,share_prefix=false", "bon:n=4", "bon:n=4,share_prefix=false"]),
        (["cai:rounds=1,2"], ["plain", "cai:rounds=1", "cai:rounds=2"]),
        (["cai:rounds=3,early_stop=true"], ["plain", "cai:rounds=3,early_stop=true"]),
        (["bon:n=4", "plain", "bon:n=4"], ["plain", "bon:n=4"]),  # de-duplicated, plain first
        ([" bon : n = 4 "], None),  # whitespace around the name is not allowed... handled below
    ][:-1],
)
def test_expansion(specs, expected):
    assert cells(*specs) == expected


def test_canonical_params_are_typed():
    (spec,) = parse_technique_spec("bon:share_prefix=no,n=08")
    assert spec.param_dict == {"n": 8, "share_prefix": False}
    assert spec.cell == "bon:n=8,share_prefix=false"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "empty technique spec"),
        ("foo", "valid: plain, bon, bon_es, cai, sc"),
        ("bon:n=0", "must be >= 1"),
        ("bon:n=abc", "expected an integer"),
        ("bon:n=", "expected an integer"),
        ("bon:m=3", "unknown key 'm'"),
        ("bon:4", "has no key"),
        ("bon:n=4,,8", "empty value"),
        ("bon:n=4,n=8", "given twice"),
        ("bon:share_prefix=maybe", "expected true or false"),
        ("cai:rounds=-1", "must be >= 0"),
        ("cai:rounds=1.5", "expected an integer"),
        ("plain:n=2", "unknown key 'n' for plain"),
        ("bon:n=2000", "must be <= 1024"),
    ],
)
def test_bad_specs(spec, fragment):
    with pytest.raises(ConfigError) as exc:
        parse_technique_spec(spec)
    assert fragment in str(exc.value)
    assert str(exc.value).startswith("--technique: bad value")


@given(st.lists(st.integers(min_value=1, max_value=1024), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_sweep_expands_unique_values_in_order(ns):
    spec = "bon:n=" + ",".join(map(str, ns))
    got = [c.param_dict["n"] for c in parse_technique_spec(spec)]
    assert got == list(dict.fromkeys(ns))


@given(
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=4, unique=True),
    st.lists(st.booleans(), min_size=1, max_size=2, unique=True),
)
@settings(max_examples=60, deadline=None)
def test_cartesian_product_and_roundtrip(ns, shares):
    spec = "bon:n=" + ",".join(map(str, ns)) + ",share_prefix=" + ",".join("true" if s else "false" for s in shares)
    specs = parse_technique_spec(spec)
    assert len(specs) == len(ns) * len(shares)
    for s in specs:  # the canonical string parses back to the same cell
        (again,) = parse_technique_spec(s.cell)
        assert again == s


@given(st.text(max_size=30))
@settings(max_examples=200, deadline=None)
def test_parser_never_crashes_unexpectedly(text):
    try:
        specs = parse_technique_spec(text)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert specs


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"engine": "tgi"}, "--engine"),
        ({"limit": 0}, "--limit"),
        ({"max_tokens": 0}, "--max-tokens"),
        ({"max_tokens": 5000}, "--max-tokens"),
        ({"temperature": -1.0}, "--temperature"),
        ({"temperature": 2.5}, "--temperature"),
        ({"top_p": 0.0}, "--top-p"),
        ({"top_p": 1.5}, "--top-p"),
        ({"seed": -3}, "--seed"),
        ({"repeats": 0}, "--repeats"),
        ({"techniques": ()}, "--technique"),
        ({"prompts": ()}, "--prompts"),
        ({"max_model_len": 10}, "--max-model-len"),
    ],
)
def test_runconfig_validation(kwargs, field):
    with pytest.raises(ConfigError) as exc:
        RunConfig(**kwargs)
    assert str(exc.value).startswith(field)


def test_runconfig_defaults_and_dict():
    cfg = RunConfig()
    assert [c.cell for c in cfg.cells] == ["plain", "bon:n=4", "cai:rounds=1"]
    d = cfg.to_dict()
    assert d["cells"] == ["plain", "bon:n=4", "cai:rounds=1"] and d["temperature"] == 0.7 and d["top_p"] == 1.0
