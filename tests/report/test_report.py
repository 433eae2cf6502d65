"""summary.csv arithmetic on a hand-built run directory with known numbers."""
from __future__ import annotations

import json

import pytest

from costtax.store.records import AnswerRecord, CallRecord, CellRecord, RunWriter

from costtax.jsonio import write_json_atomic
from costtax.report import build_summary, capacity_plan, headline_rows, write_plots, write_summary
from costtax.report.columns import CONTRACT_COLUMNS, all_columns, markdown, readme_section

pytestmark = pytest.mark.unit


def _call(cell, aid, pid, stage, *, n=1, pt=10, cached=0, out=5, t0=0.0, t1=1.0, ttft=0.1, rewards=None, session="s"):
    return CallRecord(
        run_id="r", cell=cell, call_id=f"{aid}-{stage}-{t0}", answer_id=aid, prompt_id=pid, stage=stage, n=n,
        prompt_tokens=pt, cached_prompt_tokens=cached, output_tokens=out, t_submit_s=t0, t_first_token_s=None if ttft is None else t0 + ttft,
        t_finish_s=t1, latency_s=t1 - t0, ttft_s=ttft, prompt_tokens_computed=pt * n - cached,
        rewards=tuple(rewards) if rewards else None, session=session,
    )


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    w = RunWriter(d)
    meta = {
        "run_id": "r", "schema_version": 1, "status": "finished",
        "config": {"prompts": ["arith"], "limit": 2, "seed": 0, "model": "m", "temperature": 0.7, "top_p": 1.0, "max_tokens": 8, "engine": "vllm"},
        "provenance": {"machine": {"device": "cpu: test"}, "versions": {"torch": "t", "vllm": "v"}, "git_commit": "abc"},
        "engine": {"engine": "vllm", "dtype": "float32", "prefix_caching": True},
        "eval_reward": {"source": "eval"},
    }
    write_json_atomic(d / "run.json", meta)
    # plain: latencies 1 and 3 s; 5 output tokens each; wall 4 s; arith answers: "12" right, "99" wrong
    from costtax.prompts.arith import generate_arith

    ans = {r["id"]: r["answer"] for r in generate_arith()}
    texts = {"arith-000": ans["arith-000"], "arith-001": "99999"}
    for i, (pid, lat, ev) in enumerate([("arith-000", 1.0, 0.0), ("arith-001", 3.0, 1.0)]):
        aid = f"plain|{pid}|0"
        w.call(_call("plain", aid, pid, "sample", t0=0.0, t1=lat))
        w.call(_call("plain", aid, pid, "eval", pt=20, out=0, t0=5, t1=5.5, ttft=None, rewards=[ev]))
        w.answer(AnswerRecord(run_id="r", cell="plain", answer_id=aid, technique="plain", prompt_id=pid, text=texts[pid],
                              calls=1, prompt_tokens=10, output_tokens=5, latency_s=lat, prompt_set="arith", session="s"))
    w.cell(CellRecord(run_id="r", cell="plain", technique="plain", params={}, status="ok", answers=2, cell_wall_s=4.0,
                      engine_start_s=30.0, is_baseline=True, meter={"cpu_s": 8.0, "rss_peak_bytes": 1000, "memory_source": "process_tree_rss",
                                                                    "foreign_cpu_share": 0.05}))
    # bon:n=4: latencies 2 and 6 s; 20 output tokens each; 30 cached of 40 prompt tokens; both right; eval 2.0 and 0.5
    for pid, lat, ev in [("arith-000", 2.0, 2.0), ("arith-001", 6.0, 0.5)]:
        aid = f"bon:n=4|{pid}|0"
        w.call(_call("bon:n=4", aid, pid, "sample", n=4, cached=30, out=20, t0=0.0, t1=lat - 0.5))
        w.call(_call("bon:n=4", aid, pid, "score", n=4, pt=100, out=0, t0=lat - 0.5, t1=lat, ttft=None, rewards=[0.1, 0.9, 0.3, 0.2]))
        w.call(_call("bon:n=4", aid, pid, "eval", pt=20, out=0, t0=9, t1=9.5, ttft=None, rewards=[ev]))
        w.answer(AnswerRecord(run_id="r", cell="bon:n=4", answer_id=aid, technique="bon", prompt_id=pid, text=ans[pid],
                              calls=2, prompt_tokens=40, output_tokens=20, latency_s=lat, prompt_set="arith", session="s",
                              selection_reward=0.9, candidate_texts=("a b", "a b", "c d", "e f")))
    w.cell(CellRecord(run_id="r", cell="bon:n=4", technique="bon", params={"n": 4, "share_prefix": True}, status="ok", answers=2,
                      cell_wall_s=8.0, engine_start_s=30.0, meter={"cpu_s": 32.0, "rss_peak_bytes": 1500, "memory_source": "process_tree_rss",
                                                                                   "foreign_cpu_share": 0.6}))
    w.cell(CellRecord(run_id="r", cell="cai:rounds=1", technique="cai", params={"rounds": 1}, status="failed", answers=0,
                      cell_wall_s=0.0, engine_start_s=30.0, error="RuntimeError: boom"))
    w.close()
    return d


def test_summary_arithmetic(run_dir):
    df = build_summary(run_dir).set_index("cell")
    p, b = df.loc["plain"], df.loc["bon:n=4"]
    assert p["latency_p50_s"] == pytest.approx(2.0) and p["latency_p95_s"] == pytest.approx(2.9) and p["latency_p99_s"] == pytest.approx(2.98)
    assert p["answers_per_s"] == pytest.approx(0.5) and p["output_tokens_per_s"] == pytest.approx(2.5)
    assert p["output_tokens_per_answer"] == pytest.approx(5.0) and p["calls_per_answer"] == pytest.approx(1.0)
    assert p["accuracy"] == pytest.approx(0.5) and p["accuracy_n"] == 2
    assert b["accuracy"] == pytest.approx(1.0) and b["accuracy_delta_vs_plain"] == pytest.approx(0.5)
    assert b["latency_p50_s"] == pytest.approx(4.0) and b["latency_p50_x"] == pytest.approx(2.0)
    assert b["output_tokens_per_answer_x"] == pytest.approx(4.0)
    assert b["cpu_s_per_answer"] == pytest.approx(16.0) and b["cpu_s_per_answer_x"] == pytest.approx(4.0)
    assert b["peak_memory_x"] == pytest.approx(1.5)
    assert b["prefix_cache_hit_rate"] == pytest.approx(30 / 40)
    assert b["prefill_tokens_computed_per_answer"] == pytest.approx(10.0)
    assert b["reward_tokens_per_answer"] == pytest.approx(100.0)
    assert b["score_latency_s_per_answer"] == pytest.approx(0.5)
    assert b["score_share_of_wall"] == pytest.approx(1.0 / 8.0)  # 2 x 0.5 s of scoring in an 8 s cell
    assert b["calls_per_answer"] == pytest.approx(2.0)  # eval excluded
    # eval rewards: plain 0.0, 1.0; bon 2.0, 0.5 -> one win, one loss
    assert b["eval_reward_mean"] == pytest.approx(1.25) and b["win_rate_vs_plain"] == pytest.approx(0.5)
    assert b["eval_reward_delta_vs_plain"] == pytest.approx(0.75)
    assert p["win_rate_vs_plain"] == pytest.approx(0.5)  # plain vs itself: all ties
    assert pd_isnull(b["proxy_win_rate_vs_plain"])
    assert b["selection_reward_mean"] == pytest.approx(0.9)
    assert b["bon_kl_bound_nats"] == pytest.approx(0.636294, abs=1e-6) and b["bon_win_rate_bound"] == pytest.approx(0.8)
    assert b["candidate_distinct_2"] == pytest.approx(3 / 4)
    assert pd_isnull(b["repeats_self_bleu"])
    assert df.loc["cai:rounds=1", "status"] == "failed" and "boom" in df.loc["cai:rounds=1", "error"]
    assert bool(b["pareto"]) and bool(p["pareto"])  # cheaper-but-worse and dearer-but-better
    assert not bool(df.loc["cai:rounds=1", "pareto"])
    assert b["ttft_p50_s"] == pytest.approx(0.1)
    assert (df["device"] == "cpu: test").all() and (df["git_commit"] == "abc").all() and (df["dtype"] == "float32").all()
    assert "mostly noise" in b["noise_note"]


def pd_isnull(v):
    return v is None or v != v


def test_headline_and_plots(run_dir):
    df = build_summary(run_dir)
    header, rows = headline_rows(df)
    assert header[0] == "cell" and "win" in header and "win (proxy)" not in header
    assert rows[2][0].startswith("cai:rounds=1 (FAILED")
    files = write_plots(run_dir, df)
    # the fixture grades accuracy (reference answers): its own cost-vs-accuracy plot too
    assert [f.name for f in files] == ["cost_quality.png", "cost_accuracy.png", "latency.png"]
    assert all(f.stat().st_size > 5000 for f in files)


def test_capacity_plan(run_dir):
    plan = capacity_plan(run_dir, qps=3.0, slo_p95_s=5.0, usd_per_device_hour=3.6).set_index("cell")
    p, b = plan.loc["plain"], plan.loc["bon:n=4"]
    assert p["feasible"] and p["devices_needed"] == 6  # 3 qps / 0.5 answers/s per device
    assert p["usd_per_1k_answers"] == pytest.approx(1000 * 3.6 / 3600 / 0.5)
    assert not b["feasible"] and pd_isnull(b["devices_needed"])  # p95 5.8 s > 5 s
    plan2 = capacity_plan(run_dir, qps=3.0, slo_p95_s=10.0).set_index("cell")
    assert plan2.loc["bon:n=4", "devices_needed"] == 12 and plan2.loc["bon:n=4", "devices_x_plain"] == pytest.approx(2.0)


def test_every_summary_column_is_in_the_column_table(run_dir):
    df = build_summary(run_dir)
    names = [c.name for c in all_columns()]
    assert len(names) == len(set(names)), "a column is defined twice"
    assert list(df.columns[: len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    undocumented = [c for c in df.columns if c not in names]
    assert undocumented == [], f"add these to costtax/report/columns.py: {undocumented}"
    # Only the columns of techniques this fixture has no ok cell for are absent (its cai cell
    # failed; bon_es and sc never ran); any other table entry the summary never emits is a stale
    # or misspelt name.
    from costtax.report.columns import SCORED_COLUMNS, technique_columns

    absent_techniques = {c.name for c in technique_columns() if c.meaning.split(":")[0] in ("cai", "bon_es", "sc")}
    # ... and the columns of sources scored after the unit (HumanEval, refusal sets): none here
    assert set(names) - set(df.columns) == absent_techniques | SCORED_COLUMNS
    assert all(c.unit and c.meaning for c in all_columns())


def test_param_columns_are_plain_values(run_dir):
    df = build_summary(run_dir).set_index("cell")
    assert df.loc["bon:n=4", "param_n"] == 4 and bool(df.loc["bon:n=4", "param_share_prefix"]) is True
    assert pd_isnull(df.loc["bon:n=4", "param_rounds"]) and pd_isnull(df.loc["plain", "param_n"])
    # the failed cai cell recorded rounds only: early_stop falls back to the declared default
    assert df.loc["cai:rounds=1", "param_rounds"] == 1 and bool(df.loc["cai:rounds=1", "param_early_stop"]) is False
    assert df.loc["bon:n=4", "seed"] == 0  # provenance column untouched by the prefixed params


def test_readme_column_reference_matches_the_table():
    from pathlib import Path

    root = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    page = (root / "docs" / "columns.md").read_text(encoding="utf-8")
    assert readme_section(page) == markdown(), "docs/columns.md is out of date: run python scripts/columns_doc.py"


def test_capacity_plan_reads_the_written_summary(run_dir):
    df = write_summary(run_dir)
    df.loc[df["cell"] == "plain", "answers_per_s"] = 1.0  # edit the table the run wrote
    df.to_csv(run_dir / "summary.csv", index=False)
    plan = capacity_plan(run_dir, qps=3.0, slo_p95_s=5.0).set_index("cell")
    assert plan.loc["plain", "devices_needed"] == 3  # 3 qps / 1.0 from the file, not 0.5 recomputed


def test_reference_answers_follow_the_recorded_prompt_counts(run_dir):
    """report grades against the prompts the run used (run.json prompts.sources), not against
    what the config's limit would select today."""
    meta = json.loads((run_dir / "run.json").read_text())
    assert build_summary(run_dir).set_index("cell").loc["plain", "accuracy_n"] == 2  # config limit 2
    meta["prompts"] = {"count": 1, "sources": [{"source": "arith", "used": 1, "available": 120}]}
    (run_dir / "run.json").write_text(json.dumps(meta))
    plain = build_summary(run_dir).set_index("cell").loc["plain"]
    assert plain["accuracy_n"] == 1 and plain["accuracy"] == pytest.approx(1.0)  # only arith-000 has a reference


def test_contention_is_reported_and_warned_about(run_dir):
    from costtax.report import row_warnings

    df = build_summary(run_dir).set_index("cell", drop=False)
    assert df.loc["plain", "foreign_cpu_share"] == pytest.approx(0.05)
    assert df.loc["bon:n=4", "foreign_cpu_share"] == pytest.approx(0.6)
    warns = [w for w in row_warnings(df.reset_index(drop=True)) if "other processes" in w]
    assert len(warns) == 1 and warns[0].startswith("warning: bon:n=4: other processes kept 60% of this machine's CPUs busy")


def test_contention_of_a_row_is_its_worst_repeat(tmp_path):
    """With cell repeats the row reports the largest foreign share: one disturbed repeat is enough
    to doubt the row's spread, and a median would hide it."""
    from costtax.config import RunConfig
    from costtax.run.profile import profile
    from costtax.jsonio import read_jsonl
    from fakes import FakeEngine, FakeReward

    cfg = RunConfig(techniques=("plain",), prompts=("helpful",), limit=2, max_tokens=4, out=str(tmp_path / "run"),
                    judge_calibration=False, cell_repeats=3)
    res = profile(cfg, engine=FakeEngine(), scorer=FakeReward(), eval_scorer=FakeReward())
    cells = list(read_jsonl(res.run_dir / "cells.jsonl"))
    assert len(cells) == 3
    for c, share in zip(cells, (0.1, 0.7, 0.2)):
        c["meter"]["foreign_cpu_share"] = share
    (res.run_dir / "cells.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cells))
    df = build_summary(res.run_dir)
    assert df.loc[df["cell"] == "plain", "foreign_cpu_share"].item() == pytest.approx(0.7)


def test_capacity_plan_names_a_curve_measured_beside_neighbours(run_dir, capsys):
    from costtax.cli import main

    plan = capacity_plan(run_dir, qps=1.0, slo_p95_s=100.0).set_index("cell")
    assert plan.loc["bon:n=4", "curve_foreign_cpu_share_max"] == pytest.approx(0.6)
    assert plan.loc["plain", "curve_foreign_cpu_share_max"] == pytest.approx(0.05)
    assert main(["plan", str(run_dir), "--qps", "1", "--slo-p95-s", "100"]) in (0, None)
    out = capsys.readouterr().out
    assert "note: bon:n=4 was measured while other processes kept up to 60% of the CPUs busy" in out
    assert "note: plain was measured" not in out
