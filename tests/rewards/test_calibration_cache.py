"""The public-calibration cache key holds everything that changes the result: a cached result
is never served for a different model, template, refusal margin, refusal phrase, data file or
calibration code."""
from __future__ import annotations

import shutil

import pytest

from costtax.rewards import refusal_rule
from costtax.rewards import calibration, calibration_cache as cc
from costtax.rewards import public_sets as ps

pytestmark = pytest.mark.unit

PROV = {"name": "judge", "kind": "judge", "model": "m", "model_dir": "/x", "model_source": "s",
        "judge_template_sha": "t1", "answer_token_ids": [1, 2], "dtype": "float32", "refusal_margin": 3.0}


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """The public CSVs copied to a folder the test may edit."""
    src = ps.data_dir()
    dst = tmp_path / "objective"
    shutil.copytree(src, dst)
    monkeypatch.setattr(ps, "data_dir", lambda: dst)
    return dst


def _key(prov=PROV):
    return cc.key_path(cc.public_calibration_key(prov), "public-")


def test_changing_a_refusal_phrase_changes_the_key(data_copy, monkeypatch):
    before = _key()
    monkeypatch.setattr(refusal_rule, "REFUSAL_PATTERNS", refusal_rule.REFUSAL_PATTERNS + ("i'd prefer not to",))
    assert _key() != before
    monkeypatch.undo()
    monkeypatch.setattr(ps, "data_dir", lambda: data_copy)
    assert _key() == before  # same inputs: same key (the cache is usable at all)
    monkeypatch.setattr(refusal_rule, "SOFT_REFUSAL_PATTERNS", refusal_rule.SOFT_REFUSAL_PATTERNS[:-1])
    assert _key() != before


@pytest.mark.parametrize(
    "field,value",
    [("model_dir", "/y"), ("judge_template_sha", "t2"), ("refusal_margin", 2.0), ("dtype", "bfloat16"),
     ("answer_token_ids", [1, 3]), ("model", "other")],
)
def test_model_template_and_margin_change_the_key(data_copy, field, value):
    assert _key({**PROV, field: value}) != _key()


def test_data_file_and_code_version_change_the_key(data_copy, monkeypatch):
    before = _key()
    f = sorted(data_copy.glob("*.csv"))[0]
    f.write_text(f.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert _key() != before
    edited = _key()
    monkeypatch.setattr(calibration, "PUBLIC_CALIBRATION_VERSION", calibration.PUBLIC_CALIBRATION_VERSION + 1)
    assert _key() != edited


def test_a_cached_result_is_not_served_after_a_phrase_changes(data_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("COSTTAX_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(calibration, "public_calibration", lambda scorer, progress=None: calls.append(1) or {"auc": 0.5})

    class Scorer:
        def provenance(self):
            return dict(PROV)

    cc.public_calibration(Scorer(), lambda kind, data: None)
    again = cc.public_calibration(Scorer(), lambda kind, data: None)
    assert len(calls) == 1 and "cached" in again
    monkeypatch.setattr(refusal_rule, "NOT_REFUSAL_IDIOMS", refusal_rule.NOT_REFUSAL_IDIOMS + (r"i can't believe",))
    fresh = cc.public_calibration(Scorer(), lambda kind, data: None)
    assert len(calls) == 2 and "cached" not in fresh


def test_version_was_bumped_for_the_new_key():
    assert calibration.PUBLIC_CALIBRATION_VERSION >= 2
