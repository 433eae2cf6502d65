"""Invariants between independent counters (report/invariants.py) on every summary row.

The passing case is real: the committed demo run (bench/results/demo-cpu-2026-11-27: plain,
bon:n=4 and cai:rounds=1 on the embedded model through vLLM), whose engine counters agree with
costtax's sums to the token. Each check is then seen failing on a copy of it with one counter
made to disagree, and the violation shows in `sanity_flags` and the table's warnings."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from costtax.report import invariants as inv
from costtax.report.summary import build_summary
from costtax.report.table import row_warnings

pytestmark = pytest.mark.unit

DEMO = Path(__file__).resolve().parents[2] / "bench" / "results" / "demo-cpu-2026-11-27"
NEW_FLAGS = [k[len("flag_"):] for k in inv.INVARIANT_FLAGS]


@pytest.fixture
def demo(tmp_path):
    dst = tmp_path / "demo"
    shutil.copytree(DEMO, dst)
    return dst


def _edit(path: Path, fn) -> int:
    """Rewrite a .jsonl file with fn(record) applied (fn returns True when it changed it)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    changed = sum(bool(fn(r)) for r in rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return changed


def _rows(run_dir) -> dict[str, dict]:
    df = build_summary(run_dir)
    return {r["cell"]: r for r in df.to_dict("records")}, df


def _flags(row) -> list[str]:
    return [f for f in (row["sanity_flags"] or "").split(";") if f]


def test_the_real_demo_run_passes_every_invariant(demo):
    rows, df = _rows(demo)
    for cell, r in rows.items():
        assert not any(bool(r[k]) for k in inv.INVARIANT_FLAGS), (cell, {k: r[k] for k in inv.INVARIANT_FLAGS})
        assert not set(_flags(r)) & set(NEW_FLAGS), cell
        # the engine's own prefix-cache counters equal costtax's per-request sums, to the token
        assert r["engine_prefill_tokens_computed"] == r["costtax_prefill_tokens_computed"]
    assert [rows[c]["engine_prefill_tokens_computed"] for c in ("plain", "bon:n=4", "cai:rounds=1")] == [334, 568, 1481]
    bon = rows["bon:n=4"]
    # issue 25: the stage table reads the reward model's computed tokens, not the tokens read
    assert bon["stage_score_tokens_per_answer"] == pytest.approx(bon["reward_tokens_computed_per_answer"]) == pytest.approx(372.25)
    assert 1.0 <= bon["waste_ratio"] <= 1.25
    assert not any("sanity check failed" in w for w in row_warnings(df))


def test_stage_tokens_read_from_extra_is_flagged(demo, monkeypatch):
    """The issue-25 bug put back (the stage path reads `extra`, finds nothing, falls back to the
    tokens read): the score-token cross-check catches it."""
    from costtax.report import stages

    def old(c):
        if c["stage"] == "score":
            rc = (c.get("extra") or {}).get("reward_tokens_computed")
            return float(rc) if isinstance(rc, (int, float)) else float(c.get("prompt_tokens") or 0)
        pc = c.get("prompt_tokens_computed")
        return (float(pc) if isinstance(pc, (int, float)) else float(c["prompt_tokens"]) * c["n"]) + float(c["output_tokens"])

    monkeypatch.setattr(stages, "_computed_tokens", old)
    rows, df = _rows(demo)
    assert rows["bon:n=4"]["flag_score_tokens_mismatch"] and "score_tokens_mismatch" in _flags(rows["bon:n=4"])
    assert any("bon:n=4: sanity check failed: score_tokens_mismatch" in w for w in row_warnings(df))


def test_reward_computed_above_read_is_flagged(demo):
    def more(r):
        if r["stage"] == "score" and r["call_id"] == _first_score(demo):
            r["extra"]["reward_tokens_computed"] = r["prompt_tokens"] + 1
            return True

    assert _edit(demo / "calls.jsonl", more) == 1
    rows, _ = _rows(demo)
    assert rows["bon:n=4"]["flag_reward_computed_exceeds_read"] and "reward_computed_exceeds_read" in _flags(rows["bon:n=4"])
    assert not rows["plain"]["flag_reward_computed_exceeds_read"]


def _first_score(demo) -> str:
    for line in (demo / "calls.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["stage"] == "score":
            return r["call_id"]
    raise AssertionError("no score call")


def test_prefill_above_prompt_times_n_is_flagged(demo):
    target = {}

    def over(r):
        if r["cell"] == "plain" and r["stage"] == "sample" and not target:
            target["id"] = r["call_id"]
            r["prompt_tokens_computed"] = r["prompt_tokens"] * r["n"] + 1
            return True

    _edit(demo / "calls.jsonl", over)
    rows, _ = _rows(demo)
    assert rows["plain"]["flag_prefill_exceeds_prompt"] and "prefill_exceeds_prompt" in _flags(rows["plain"])


@pytest.mark.parametrize("extra,flagged", [(0, False), (1, True)])
def test_prefill_allows_one_warming_prompt_for_n_above_one(extra, flagged):
    call = {"stage": "sample", "n": 4, "prompt_tokens": 42, "prompt_tokens_computed": 42 * 4 + 42 + extra}
    assert inv.prefill_exceeds([call]) is flagged
    assert inv.prefill_exceeds([{**call, "n": 1, "prompt_tokens_computed": 42 + extra}]) is flagged


@pytest.mark.parametrize("hits_delta,flagged", [(0, False), (-40, False), (-200, True), (+200, True)])
def test_engine_prefix_counters_against_costtax_sums(demo, hits_delta, flagged):
    """bon:n=4: the engine computed 568 prefill tokens, costtax 568. The tolerance is 5% of
    the larger + one 32-token block per unit (68 at 568 + 40); the engine may see more by up to
    the n > 1 calls' prompts (warming requests), here 8 x ~42 = 334 more, not fewer."""

    def shift(r):
        if r["cell"] == "bon:n=4":
            r["engine_stats"]["prefix_cache_hits"] += hits_delta
            return True

    _edit(demo / "cells.jsonl", shift)
    rows, _ = _rows(demo)
    r = rows["bon:n=4"]
    assert r["engine_prefill_tokens_computed"] == 568 - hits_delta
    if hits_delta == -200:  # the engine saw 200 more tokens: inside 68 + 334 of warming allowance
        flagged = False
    assert bool(r["flag_prefix_counters_disagree"]) is flagged
    assert ("prefix_counters_disagree" in _flags(r)) is flagged


def test_engine_prefix_counters_more_than_warming_allowance_is_flagged(demo):
    def shift(r):
        if r["cell"] == "plain":  # n = 1: no warming request, so no one-sided allowance
            r["engine_stats"]["prefix_cache_hits"] -= 60
            return True

    _edit(demo / "cells.jsonl", shift)
    rows, _ = _rows(demo)
    assert rows["plain"]["flag_prefix_counters_disagree"] and "prefix_counters_disagree" in _flags(rows["plain"])


def test_no_engine_counters_no_check(demo):
    _edit(demo / "cells.jsonl", lambda r: r["engine_stats"].pop("prefix_cache_hits", None) is not None)
    rows, _ = _rows(demo)
    assert all(not r["flag_prefix_counters_disagree"] and r["engine_prefill_tokens_computed"] is None for r in rows.values())


@pytest.mark.parametrize("harness,engine,flagged", [(1.0, 5.2, False), (0.3, 5.2, True), (1.0, 6.5, True), (None, 5.0, False)])
def test_cpu_split_by_independent_counters(demo, harness, engine, flagged):
    """plain's process-tree sampler read 6.28 CPU seconds; harness + engine tree must be within
    10% (or 0.15 s) of it."""

    def split(r):
        if r["cell"] == "plain":
            r["meter"].update(harness_cpu_s=harness, engine_cpu_s=engine)
            return True

    _edit(demo / "cells.jsonl", split)
    rows, _ = _rows(demo)
    r = rows["plain"]
    assert bool(r["flag_cpu_split_disagrees"]) is flagged
    assert ("cpu_split_disagrees" in _flags(r)) is flagged
    if harness is not None:
        assert r["cpu_harness_s"] == harness and r["cpu_engine_tree_s"] == engine


def _answers(prompt_ids):
    return [{"prompt_id": p} for p in prompt_ids]


@pytest.mark.parametrize(
    "waste,prompts,flagged,reason",
    [
        (1.18, ["a", "b"], False, False),
        (1.0, ["a", "b"], False, False),
        (0.9, ["a", "b"], True, False),  # below the physical minimum with nothing shared: impossible
        (0.9, ["a", "a", "b"], False, True),  # two answers of one prompt read each other's cache
        (None, ["a"], False, False),
    ],
)
def test_waste_ratio_below_one_only_with_a_shared_prompt(waste, prompts, flagged, reason):
    got = inv.waste_check({"waste_ratio": waste}, _answers(prompts))
    assert got["flag_waste_below_one"] is flagged
    assert (got["waste_below_one_reason"] is not None) is reason
    if reason:
        assert "prompt(s) answered more than once" in got["waste_below_one_reason"]


def test_waste_below_one_reaches_the_table():
    df = pd.DataFrame([{"cell": "bon:n=4", "load": "batch", "waste_ratio": 0.8, "sanity_flags": None,
                        "stage_score_tokens_per_answer": None, "reward_tokens_computed_per_answer": None}])
    empty = pd.DataFrame(columns=["cell", "load"])
    answers = pd.DataFrame([{"cell": "bon:n=4", "load": "batch", "prompt_id": p, "answer_id": p} for p in ("x", "y")])
    out = inv.add_invariants(df, {"answers": answers, "calls": empty, "cells": empty, "meta": {}})
    assert out.loc[0, "sanity_flags"] == "waste_below_one"
    assert any("sanity check failed: waste_below_one" in w for w in row_warnings(out))


def test_existing_flags_are_kept_and_new_ones_appended():
    df = pd.DataFrame([{"cell": "c", "load": "batch", "waste_ratio": 0.8, "sanity_flags": "energy_below_idle",
                        "stage_score_tokens_per_answer": 10.0, "reward_tokens_computed_per_answer": 11.0}])
    empty = pd.DataFrame(columns=["cell", "load"])
    answers = pd.DataFrame([{"cell": "c", "load": "batch", "prompt_id": "p", "answer_id": "a"}])
    out = inv.add_invariants(df, {"answers": answers, "calls": empty, "cells": empty, "meta": {}})
    assert out.loc[0, "sanity_flags"] == "energy_below_idle;score_tokens_mismatch;waste_below_one"


def test_served_judge_tokens_count_on_the_policy_engine():
    """`served` scores on the policy's own server: its computed tokens are in that server's
    counters, so costtax's side adds them (named by run.json's spec or by the score calls)."""
    unit = {"cell_repeat": 0, "engine_stats": {"prefix_cache_queries": 500, "prefix_cache_hits": 100}}
    calls = [{"stage": "sample", "n": 1, "prompt_tokens": 100, "prompt_tokens_computed": 100, "cell_repeat": 0},
             {"stage": "score", "n": 1, "prompt_tokens": 400, "reward_tokens_computed": 300, "cell_repeat": 0,
              "extra": {"reward_model": "served"}}]
    assert inv.served_on_policy_server({}, calls) and inv.served_on_policy_server({"reward_model": {"spec": "served"}})
    assert not inv.served_on_policy_server({"reward_model": {"spec": "judge"}}, [{**calls[1], "extra": {"reward_model": "judge:x"}}])
    on = inv.prefix_counter_check([unit], calls, block=32, reward_on_engine=True)
    assert (on["engine_prefill_tokens_computed"], on["costtax_prefill_tokens_computed"], on["flag_prefix_counters_disagree"]) == (400, 400, False)
    off = inv.prefix_counter_check([unit], calls, block=32, reward_on_engine=False)
    assert off["costtax_prefill_tokens_computed"] == 100 and off["flag_prefix_counters_disagree"]
