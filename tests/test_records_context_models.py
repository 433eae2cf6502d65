"""Unit tests for the leaves every run relies on: the run-directory writer and reader, the
per-answer accounting in CellContext, and model resolution (no engine, no model load)."""
from __future__ import annotations

import asyncio
import json

import pytest

from costtax.context import CellContext, PromptInstance
from costtax.engines.base import GenResult, Sample, SamplingSpec
from costtax.errors import ConfigError
from costtax.models import DEFAULT_MODEL, EMBEDDED, cache_root, converted_dir, resolve_model
from costtax.prompts import Prompt
from costtax.records import CALLS, CELLS, SCORES, RunWriter, read_jsonl, write_json_atomic


# -- records -------------------------------------------------------------------------------------
def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b": [1, 2', encoding="utf-8")  # killed mid-write
    assert [r["a"] for r in read_jsonl(p)] == [1, 2]
    assert list(read_jsonl(tmp_path / "missing.jsonl")) == []


def test_writer_flushes_every_row_and_appends_on_reopen(tmp_path):
    w = RunWriter(tmp_path)
    w.scored({"answer_id": "a", "code_passed": False})
    # flushed: a reader sees the row before the writer closes
    assert [r["answer_id"] for r in read_jsonl(tmp_path / SCORES)] == ["a"]
    w.close()
    w2 = RunWriter(tmp_path)  # a resumed session appends
    w2.scored({"answer_id": "b"})
    w2.close()
    assert [r["answer_id"] for r in read_jsonl(tmp_path / SCORES)] == ["a", "b"]
    assert (tmp_path / CALLS).exists() and (tmp_path / CELLS).exists()


def test_write_json_atomic_replaces_whole(tmp_path):
    p = tmp_path / "run.json"
    write_json_atomic(p, {"status": "running"})
    write_json_atomic(p, {"status": "finished", "n": 2})
    assert json.loads(p.read_text()) == {"status": "finished", "n": 2}
    assert not list(tmp_path.glob(".*.tmp"))


# -- context accounting ----------------------------------------------------------------------------
class _Rows:
    def __init__(self):
        self.calls, self.answers = [], []

    def call(self, rec):
        self.calls.append(rec)

    def answer(self, rec):
        self.answers.append(rec)


class _Engine:
    """Returns scripted results: prompt 10 tokens, cached per the script, 3 tokens per sample."""

    def __init__(self, cached):
        self.cached = list(cached)

    async def agenerate(self, req, sampling):
        t = 100.0 + len(self.cached)
        return GenResult(req.request_id, tuple(Sample("a b c", (1, 2, 3), "stop") for _ in range(req.n)), 10,
                         10 * req.n, self.cached.pop(0), t, t + 0.5, t + 1.0, "engine", queue_s=0.25)


def _ctx(engine, rows, **kw):
    return CellContext(run_id="r", cell="bon:n=2", technique="bon", engine=engine, sampling=SamplingSpec(), writer=rows,
                       epoch=100.0, **kw)


def test_answer_totals_follow_the_calls():
    rows = _Rows()
    ctx = _ctx(_Engine([10, None]), rows)
    p = Prompt("p1", "hi", "helpful")
    inst = ctx.expand([p])[0]
    assert inst.answer_id == "bon:n=2|p1|0"

    async def run():
        await ctx.generate(inst, ctx.request(inst, p.messages(), n=2), stage="sample")
        await ctx.generate(inst, ctx.request(inst, p.messages()), stage="critique")

    asyncio.run(run())
    ctx.finish_answer(inst, "a b c")
    a = rows.answers[0]
    assert a.calls == 2 and a.prompt_tokens == 10 * 2 + 10 and a.output_tokens == 3 * 2 + 3
    # the second call could not say how much it read from the cache: the answer's total is
    # unknown (None), never a silent partial sum
    assert a.cached_prompt_tokens is None
    # sample call: submitted at 102, finished 103; critique: 101 -> 102 (epoch 100): first submit
    # to last finish
    assert a.latency_s == pytest.approx(2.0)
    assert rows.calls[0].extra["queue_s"] == 0.25 and rows.calls[0].ttft_s == pytest.approx(0.5)
    assert a.ttft_s == pytest.approx(0.5)  # from the sample call, not the critique


def test_unit_tag_keeps_default_ids_and_separates_units():
    p = Prompt("p1", "hi", "helpful")
    assert _ctx(None, _Rows()).expand([p])[0].answer_id == "bon:n=2|p1|0"
    ids = {_ctx(None, _Rows(), load=lv, cell_repeat=k).expand([p])[0].answer_id
           for lv in ("batch", "concurrency=4") for k in (0, 1)}
    assert len(ids) == 4
    skip = _ctx(None, _Rows(), repeats=2, skip_answers=frozenset({"bon:n=2|p1|0"})).expand([p])
    assert [i.answer_id for i in skip] == ["bon:n=2|p1|1"]


# -- models ----------------------------------------------------------------------------------------
def test_default_model_is_the_embedded_alias():
    assert DEFAULT_MODEL in EMBEDDED and EMBEDDED[DEFAULT_MODEL].alias == DEFAULT_MODEL


def test_cache_root_and_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("COSTTAX_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert converted_dir(DEFAULT_MODEL).is_relative_to(tmp_path / "c")
    assert resolve_model(DEFAULT_MODEL, convert=False) == converted_dir(DEFAULT_MODEL)
    with pytest.raises(ConfigError, match="no such directory"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "m").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "m")) == tmp_path / "m"
