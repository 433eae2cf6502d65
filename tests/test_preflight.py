"""Preflight: what it loads (prompts with per-source counts, constitution) and what it checks,
before any model loads."""
from __future__ import annotations

import json

import pytest

import costtax.rewards
from costtax.config import RunConfig
from costtax.errors import ConfigError
from costtax.preflight import check_out_dir, recorded_prompt_counts, run_preflight
from costtax.prompts import SHIPPED_DEFAULT_LIMIT


def _jsonl(path, n, prefix="q"):
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "prompt": f"Question {i}?"}) + "\n" for i in range(n)))
    return str(path)


def test_default_limit_cuts_shipped_sets_only(tmp_path):
    mine = _jsonl(tmp_path / "mine.jsonl", 12)
    pre = run_preflight(RunConfig(techniques=("plain",), prompts=("helpful", "harmful", mine)), run_dir=tmp_path / "r", check_rewards=False)
    assert [(s["source"], s["used"]) for s in pre.sources] == [("helpful", SHIPPED_DEFAULT_LIMIT), ("harmful", SHIPPED_DEFAULT_LIMIT), (mine, 12)]
    assert [s["available"] for s in pre.sources] == [50, 48, 12]
    assert len(pre.prompts) == 2 * SHIPPED_DEFAULT_LIMIT + 12


def test_explicit_limit_applies_to_every_source_and_ids_stay_unique(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", 5)
    b = _jsonl(tmp_path / "b.jsonl", 5)  # same ids as a.jsonl
    pre = run_preflight(RunConfig(techniques=("plain",), prompts=(a, b), limit=3), run_dir=tmp_path / "r", check_rewards=False)
    assert [s["used"] for s in pre.sources] == [3, 3]
    ids = [p.id for p in pre.prompts]
    assert len(set(ids)) == 6 and ids[3] == "b:q0"  # the clash is prefixed with the set name


def test_recorded_counts_and_old_runs(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"prompts": {"count": 8, "sets": ["helpful"]}}))
    assert recorded_prompt_counts(tmp_path) is None  # written before prompts.sources existed
    # an old run resumed with limit None keeps the meaning None had then: every prompt
    pre = run_preflight(RunConfig(techniques=("plain",), prompts=("helpful",)), run_dir=tmp_path, resume=True, check_rewards=False)
    assert len(pre.prompts) == 50


def test_constitution_loaded_only_for_cai(tmp_path):
    plain = run_preflight(RunConfig(techniques=("plain", "bon:n=2")), run_dir=tmp_path / "a", check_rewards=False)
    cai = run_preflight(RunConfig(techniques=("cai:rounds=1",)), run_dir=tmp_path / "b", check_rewards=False)
    assert plain.constitution is None and cai.constitution is not None


def test_reward_spec_checked_only_when_used(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(costtax.rewards, "validate_reward_spec", lambda spec, field: seen.append((spec, field)))
    run_preflight(RunConfig(techniques=("plain",), eval_reward_model="none"), run_dir=tmp_path / "a")
    assert seen == []  # nothing scores: the default judge is not looked at
    run_preflight(RunConfig(techniques=("bon:n=2",), eval_reward_model="judge"), run_dir=tmp_path / "b")
    assert seen == [("judge", "--reward-model"), ("judge", "--eval-reward-model")]


def test_out_dir_rules(tmp_path):
    check_out_dir(tmp_path / "new" / "deeper", resume=False)  # created later, parent writable
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty", resume=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    check_out_dir(run, resume=True)
    with pytest.raises(ConfigError, match="--resume DIR"):
        check_out_dir(run, resume=False)
