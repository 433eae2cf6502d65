"""costtax.store.records: the run-directory rows, the writer (every row flushed, appends on resume) and
the readers (a torn last line is skipped). A leaf module: no torch, no pandas."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from costtax.store.records import (
    ANSWERS,
    CALLS,
    CELLS,
    RUN_JSON,
    SCORES,
    STAGES,
    AnswerRecord,
    CallRecord,
    CellRecord,
    RunWriter,
    ScoreRecord,
    read_run_json,
    to_json_dict,
)
from costtax.jsonio import read_jsonl, write_json_atomic

pytestmark = pytest.mark.integration


def _call(**kw) -> CallRecord:
    base = dict(run_id="r", cell="bon:n=2", call_id="bon:n=2|c0", answer_id="bon:n=2|p1|0", prompt_id="p1", stage="sample",
                n=2, prompt_tokens=10, cached_prompt_tokens=10, output_tokens=6, t_submit_s=1.0, t_first_token_s=1.5,
                t_finish_s=2.0, latency_s=1.0, ttft_s=0.5)
    base.update(kw)
    return CallRecord(**base)


def _score(answer_id: str, **values) -> ScoreRecord:
    return ScoreRecord(run_id="r", cell="plain", answer_id=answer_id, prompt_id="p1", scorer="pass_at_k", values=values)


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b": [1, 2', encoding="utf-8")  # killed mid-write
    assert [r["a"] for r in read_jsonl(p)] == [1, 2]
    assert list(read_jsonl(tmp_path / "missing.jsonl")) == []


def test_writer_flushes_every_row_and_appends_on_reopen(tmp_path):
    w = RunWriter(tmp_path)
    w.scored(_score("a", code_passed=False))
    # flushed: a reader sees the row before the writer closes
    assert [r["answer_id"] for r in read_jsonl(tmp_path / SCORES)] == ["a"]
    w.close()
    w2 = RunWriter(tmp_path)  # a resumed session appends
    w2.scored(_score("b"))
    w2.close()
    assert [r["answer_id"] for r in read_jsonl(tmp_path / SCORES)] == ["a", "b"]
    assert (tmp_path / CALLS).exists() and (tmp_path / CELLS).exists()


def test_write_json_atomic_replaces_whole(tmp_path):
    p = tmp_path / "run.json"
    write_json_atomic(p, {"status": "running"})
    write_json_atomic(p, {"status": "finished", "n": 2})
    assert json.loads(p.read_text()) == {"status": "finished", "n": 2}
    assert not list(tmp_path.glob(".*.tmp"))


def test_call_record_rejects_an_unknown_stage():
    for stage in STAGES:
        assert _call(stage=stage).stage == stage
    with pytest.raises(ValueError, match="stage must be one of") as exc:
        _call(stage="judge")
    assert all(s in str(exc.value) for s in STAGES)  # the message lists the valid stages


def test_rows_round_trip_through_the_writer_with_tuples_as_lists(tmp_path):
    call = _call(answer_ids=("a1", "a2"), finish_reasons=("stop", None), queue_s=0.25, extra={"share_prefix": True})
    d = to_json_dict(call)
    assert d["answer_ids"] == ["a1", "a2"] and d["finish_reasons"] == ["stop", None]
    answer = AnswerRecord(run_id="r", cell="plain", answer_id="plain|p1|0", technique="plain", prompt_id="p1",
                          text="Voilà: 3 œufs", calls=1, prompt_tokens=None, output_tokens=4, latency_s=0.5)
    cell = CellRecord(run_id="r", cell="plain", technique="plain", params={}, status="ok", answers=1, cell_wall_s=0.7,
                      engine_start_s=None, meter={"gpu_s": None})
    w = RunWriter(tmp_path / "run")  # creates the directory
    w.call(call)
    w.answer(answer)
    w.cell(cell)
    w.close()
    [c] = read_jsonl(tmp_path / "run" / CALLS)
    [a] = read_jsonl(tmp_path / "run" / ANSWERS)
    [k] = read_jsonl(tmp_path / "run" / CELLS)
    assert c == d  # every field, defaults included, survives the trip
    assert c["load"] == "batch" and c["cell_repeat"] == 0 and c["queue_s"] == 0.25 and c["extra"] == {"share_prefix": True}
    assert a["prompt_tokens"] is None and a["text"] == "Voilà: 3 œufs"  # unknown stays null, not 0
    assert "Voilà" in (tmp_path / "run" / ANSWERS).read_text(encoding="utf-8")  # UTF-8, not \u escapes
    assert k["status"] == "ok" and k["meter"] == {"gpu_s": None} and k["score_batches"] == []


def test_records_are_frozen():
    call = _call()
    with pytest.raises(AttributeError):
        call.stage = "score"  # type: ignore[misc]


def test_json_writers_stringify_what_json_cannot_hold(tmp_path):
    write_json_atomic(tmp_path / RUN_JSON, {"out": tmp_path / "x", "status": "running"})
    assert read_run_json(tmp_path) == {"out": str(tmp_path / "x"), "status": "running"}
    w = RunWriter(tmp_path)
    w.scored(_score("a", path=Path("/tmp/p")))
    w.close()
    [row] = read_jsonl(tmp_path / SCORES)
    assert row["answer_id"] == "a" and row["path"] == "/tmp/p"  # a scorer's value at the top level, as text


def test_records_import_no_heavy_module():
    code = "import sys, costtax.store.records; print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))"
    repo = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "[]"
