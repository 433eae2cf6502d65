"""Shipped prompt sets and user JSONL validation."""
from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costtax.prompts.exact_match import extract_last_integer
from costtax.errors import ConfigError
from costtax.prompts import load_prompts, load_source
from costtax.prompts.arith import generate_arith

pytestmark = pytest.mark.unit


def test_shipped_sets():
    helpful, harmful, arith = (load_source(s) for s in ("helpful", "harmful", "arith"))
    assert len(helpful) >= 40 and len(harmful) >= 40 and len(arith) >= 100
    for ps in (helpful, harmful, arith):
        assert len({p.id for p in ps}) == len(ps)
    assert all(p.answer is not None and extract_last_integer(p.answer) is not None for p in arith)
    assert {p.prompt_set for p in harmful} == {"harmful"}


def test_arith_is_seeded_and_exact():
    a, b, c = generate_arith(seed=0), generate_arith(seed=0), generate_arith(seed=1)
    assert a == b and a != c
    ops = {"+": int.__add__, "-": int.__sub__, "x": int.__mul__, "times": int.__mul__}
    checked = 0
    for row in a:
        m = re.fullmatch(r"(?:What is|Calculate|Compute) (\d+) (\+|-|x|times) (\d+)[?.] .*", row["prompt"])
        if m:
            assert ops[m.group(2)](int(m.group(1)), int(m.group(3))) == int(row["answer"]), row
            checked += 1
    assert checked >= 20


def test_limit_is_per_source_and_ids_unique(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"id": "helpful-001", "prompt": "x"}\n{"prompt": "y", "answer": 3}\n')
    ps = load_prompts(["helpful", str(f)], limit=2)
    assert [p.id for p in ps] == ["helpful-001", "helpful-002", "mine:helpful-001", "mine-2"]
    assert ps[-1].answer == "3" and ps[-1].prompt_set == "mine"


BAD_FILES = [
    (b"", "has no prompts"),
    (b"\n\n", "has no prompts"),
    (b"not json\n", "line 1 is not JSON"),
    (b'{"prompt": "a"}\n[1, 2]\n', "line 2 is not a JSON object"),
    (b'{"id": "a"}\n', 'no "prompt" field'),
    (b'{"prompt": 3}\n', '"prompt" must be a non-empty string'),
    (b'{"prompt": "  "}\n', '"prompt" must be a non-empty string'),
    (b'{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "duplicate id 'a'"),
    (b'{"id": ["a"], "prompt": "x"}\n', '"id" must be'),
    (b'{"prompt": "x", "answer": [1]}\n', '"answer" must be'),
    (b'{"prompt": "x", "category": 5}\n', '"category" must be'),
    (b'{"prompt": "caf\xe9"}\n', "not valid UTF-8"),
    (b'{"prompt": "' + b"a" * 1_000_100 + b'"}\n', "over 1000000 bytes"),
]


@pytest.mark.parametrize("content, fragment", BAD_FILES)
def test_bad_prompt_files(tmp_path, content, fragment):
    f = tmp_path / "p.jsonl"
    f.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        load_source(str(f))
    assert fragment in str(exc.value) and str(exc.value).startswith("--prompts")


def test_prompt_text_is_never_a_path(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": str(secret)}) + "\n")
    (p,) = load_source(str(f))
    assert p.text == str(secret)


@given(st.lists(st.fixed_dictionaries({"id": st.text(min_size=1, max_size=8), "prompt": st.text(max_size=20)}), max_size=8))
@settings(max_examples=80, deadline=None)
def test_loader_accepts_or_rejects_cleanly(tmp_path_factory, rows):
    f = tmp_path_factory.mktemp("h") / "p.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    try:
        ps = load_source(str(f))
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert len({p.id for p in ps}) == len(ps) and all(p.text.strip() for p in ps)
