"""costtax.store.schema, the one declaration of every run-directory record: the writer's rows read back
equal, layout-1 rows (fields kept in `extra`) are lifted by an explicit list and nothing else,
a field this costtax does not declare is kept (and written back), the agreed round-5 fields are
left out while default, and the reader's types are the schema's records."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from costtax.store import schema
from costtax.load.levels import LoadLevel
from costtax.store.records import RunWriter
from costtax.store.rundata import Answer, Call, RunData, RunDataError, Score, Unit, as_row
from costtax.store.schema import (
    AnswerRecord, CallRecord, CellRecord, RecordError, RunRecord, ScoreRecord, declared, from_row, legacy_extra, to_row,
)

pytestmark = pytest.mark.unit

GOLDEN_OLD = Path(__file__).parents[1] / "golden" / "old"


def _call(**kw) -> CallRecord:
    base = dict(run_id="r", cell="bon:n=2", call_id="bon:n=2|c1", answer_id="bon:n=2|p1|0", prompt_id="p1", stage="score",
                n=2, prompt_tokens=30, cached_prompt_tokens=4, output_tokens=0, t_submit_s=1.0, t_first_token_s=None,
                t_finish_s=1.5, latency_s=0.5, ttft_s=None)
    return CallRecord(**{**base, **kw})


def _answer(**kw) -> AnswerRecord:
    base = dict(run_id="r", cell="bon:n=2", answer_id="bon:n=2|p1|0", technique="bon", prompt_id="p1", text="t", calls=2,
                prompt_tokens=10, output_tokens=6, latency_s=0.7)
    return AnswerRecord(**{**base, **kw})


def _cell(**kw) -> CellRecord:
    base = dict(run_id="r", cell="plain", technique="plain", params={}, status="ok", answers=1, cell_wall_s=0.7, engine_start_s=None)
    return CellRecord(**{**base, **kw})


def test_every_field_set_survives_the_trip():
    recs = [
        _call(load="concurrency=2", cell_repeat=1, queue_s=0.1, score_wait_s=0.02, score_batch_pairs=3.0,
              reward_tokens_computed=12.0, rewards=(0.5, -0.25), evaluated_by_session="s2", worker=2, probe=1,
              answer_ids=("a", "b"), finish_reasons=("stop", None), extra={"reward_model": "fake"}),
        _answer(load="rate=2", candidate_texts=("x", "y"), candidate_rewards=(0.1, None), admission=4, slot=1, worker=1, probe=2,
                extra={"selected_index": 0}),
        _cell(load=LoadLevel("concurrency", 4), probe=1, client={"loop": "main", "lag_p99_s": 0.01}, score_batches=({"pairs": 2},),
              meter={"cpu_s": 1.0}),
        ScoreRecord(run_id="r", cell="plain", answer_id="a", prompt_id="p", scorer="refusal", source="harmful",
                    evaluated_by_session="s2", values={"refusal_rule": True, "refusal_judge": None}),
    ]
    for rec in recs:
        row = json.loads(json.dumps(to_row(rec)))
        assert from_row(type(rec), row) == rec, type(rec).__name__


def test_load_labels_are_normalised_and_written_as_labels():
    c = _call(load="concurrency=2")
    assert c.load == LoadLevel("concurrency", 2) and to_row(c)["load"] == "concurrency=2"
    assert to_row(_call())["load"] == "batch"
    with pytest.raises(Exception, match="nonsense"):
        _call(load="nonsense=1")


def test_layout_1_rows_are_lifted_by_the_explicit_list_only():
    assert legacy_extra(CallRecord) == ("queue_s", "score_wait_s", "score_batch_pairs", "reward_tokens_computed", "rewards",
                                        "evaluated_by_session")
    assert legacy_extra(AnswerRecord) == ("candidate_texts", "candidate_rewards")
    assert legacy_extra(CellRecord) == legacy_extra(ScoreRecord) == legacy_extra(RunRecord) == ()
    row = {**to_row(_call()), "extra": {"queue_s": 0.3, "score_wait_s": 0.01, "score_batch_pairs": 2, "rewards": [1, 2],
                                        "reward_tokens_computed": 9, "reward_model": "fake", "share_prefix": True}}
    for k in ("queue_s", "score_wait_s", "score_batch_pairs", "rewards", "reward_tokens_computed"):
        del row[k]
    c = from_row(CallRecord, row)
    assert (c.queue_s, c.score_wait_s, c.score_batch_pairs, c.rewards, c.reward_tokens_computed) == (0.3, 0.01, 2.0, (1, 2), 9.0)
    assert dict(c.extra) == {"reward_model": "fake", "share_prefix": True}  # the rest stays in extra
    # a top-level value (layout 2) wins over a stale copy in extra
    row2 = {**to_row(_call(queue_s=0.5)), "extra": {"queue_s": 0.9}}
    assert from_row(CallRecord, row2).queue_s == 0.5
    # ... unless it is null: a writer that put the value into extra next to the null field
    row3 = {**to_row(_call()), "extra": {"rewards": [0.7]}}
    assert row3["rewards"] is None and from_row(CallRecord, row3).rewards == (0.7,)
    a = {**to_row(_answer()), "extra": {"candidate_texts": ["p", "q"], "candidate_rewards": [0.1, 0.2], "selected_index": 1}}
    del a["candidate_texts"], a["candidate_rewards"]
    ans = from_row(AnswerRecord, a)
    assert ans.candidate_texts == ("p", "q") and dict(ans.extra) == {"selected_index": 1}


def test_a_field_the_reader_does_not_know_is_kept_and_written_back():
    row = {**to_row(_call()), "from_the_future": {"x": 1}}
    c = from_row(Call, row)
    assert c.unknown == {"from_the_future": {"x": 1}}
    assert to_row(c)["from_the_future"] == {"x": 1}  # baseline reuse copies rows through the schema
    assert as_row(c)["from_the_future"] == {"x": 1}  # the report's tables see it
    unit = from_row(Unit, {**to_row(_cell()), "gauge": 3})
    assert unit.unknown == {"gauge": 3}
    score = from_row(Score, {**to_row(ScoreRecord(run_id="r", cell="c", answer_id="a")), "new_metric": 0.5})
    assert score.values == {"new_metric": 0.5} and as_row(score)["new_metric"] == 0.5
    run = from_row(RunRecord, {"run_id": "r", "schema_version": 2, "notes": "n"})
    assert run.unknown == {"notes": "n"} and run.schema_version == 2


def test_agreed_round5_fields_are_written_only_when_set():
    agreed = {CallRecord: {"worker", "probe"}, AnswerRecord: {"admission", "slot", "worker", "probe"}, CellRecord: {"probe", "client"}}
    for cls, names in agreed.items():
        omitted = {f.name for f in fields(cls) if f.metadata.get("omit_default")}
        assert names <= omitted, cls.__name__
    assert not {"worker", "probe"} & set(to_row(_call()))
    assert not {"admission", "slot", "worker", "probe"} & set(to_row(_answer()))
    assert not {"probe", "client"} & set(to_row(_cell()))
    assert to_row(_answer(admission=0))["admission"] == 0  # 0 is not the default (None): written
    assert to_row(_cell(probe=1))["probe"] == 1
    assert from_row(AnswerRecord, to_row(_answer())).admission is None  # absent: the default


def test_a_row_missing_a_required_field_is_one_line_naming_it(tmp_path):
    row = to_row(_call())
    del row["stage"]
    with pytest.raises(RecordError, match="'stage'"):
        from_row(CallRecord, row)
    run = tmp_path / "run"
    w = RunWriter(run)
    w.answer(_answer())
    w.close()
    (run / "run.json").write_text(json.dumps({"run_id": "r", "schema_version": schema.SCHEMA_VERSION}))
    bad = to_row(_answer(answer_id="bon:n=2|p2|0"))
    del bad["calls"]
    with open(run / "answers.jsonl", "a") as fh:
        fh.write(json.dumps(bad) + "\n")
    with pytest.raises(RunDataError, match=r"answers.jsonl: row 2 lacks field 'calls'"):
        RunData.open(run)


def test_reader_types_are_the_schema_records():
    for reader, record in ((Call, CallRecord), (Answer, AnswerRecord), (Unit, CellRecord), (Score, ScoreRecord)):
        assert issubclass(reader, record)
        extra = {f.name for f in fields(reader)} - {f.name for f in fields(record)}
        assert extra == ({"eval_reward"} if reader is Answer else set()), reader  # only what the reader derives


def test_old_golden_run_reads_with_lifted_fields_and_nothing_unknown():
    rd = RunData.open(GOLDEN_OLD)
    assert rd.run.schema_version == 1
    score_calls = [c for c in rd.calls if c.stage == "score"]
    assert score_calls and all(c.rewards and c.score_batch_pairs for c in score_calls)
    assert all(not set(legacy_extra(CallRecord)) & set(c.extra) for c in rd.calls)
    assert all(not c.unknown for c in rd.calls) and all(not a.unknown for a in rd.answers) and all(not u.unknown for u in rd.units)
    assert any(a.candidate_texts for a in rd.answers)


def test_declared_keys_exclude_the_open_mapping():
    assert "unknown" not in declared(CallRecord) and "values" not in declared(ScoreRecord)
    assert "queue_s" in declared(CallRecord)


def test_no_module_but_the_reader_parses_record_files():
    """rundir, the search and baseline reuse read through rundata (issue 25): only jsonio.py (which
    defines read_jsonl) and store/rundata.py call it in the package."""
    root = Path(__file__).resolve().parents[2] / "costtax"
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "read_jsonl(" in p.read_text(encoding="utf-8"))
    assert users == ["jsonio.py", "store/rundata.py"], users
