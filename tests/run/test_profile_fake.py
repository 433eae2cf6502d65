"""The profiler loop, techniques and accounting with a deterministic fake engine and reward (each
technique's own behaviour: tests/techniques/test_techniques.py)."""
from __future__ import annotations

import csv
import json

import pytest

from costtax.config import RunConfig
from costtax.run.profile import profile
from costtax.jsonio import read_jsonl
from fakes import FakeEngine, FakeReward

pytestmark = pytest.mark.unit

CALL_COLS = {
    "run_id", "cell", "call_id", "answer_id", "batch_id", "prompt_id", "stage", "n", "prompt_tokens",
    "cached_prompt_tokens", "output_tokens", "t_submit_s", "t_first_token_s", "t_finish_s", "latency_s", "ttft_s",
}
ANSWER_COLS = {
    "run_id", "cell", "answer_id", "technique", "prompt_id", "text", "calls", "prompt_tokens", "output_tokens",
    "latency_s", "cached_prompt_tokens", "reward_tokens", "score_latency_s", "truncated",
}
SUMMARY_COLS = [
    "run_id", "cell", "technique", "params", "answers", "latency_p50_s", "latency_p95_s", "latency_p99_s",
    "cell_wall_s", "answers_per_s", "output_tokens_per_s", "output_tokens_per_answer", "engine_start_s",
]
RUN_KEYS = {"schema_version", "run_id", "config", "provenance", "started_at", "finished_at", "status", "sampling"}


def run_fake(tmp_path, techniques, *, engine=None, scorer=None, eval_scorer=None, **kw):
    cfg = RunConfig(
        techniques=tuple(techniques),
        prompts=kw.pop("prompts", ("helpful", "arith")),
        limit=kw.pop("limit", 3),
        max_tokens=kw.pop("max_tokens", 16),
        out=str(tmp_path / "run"),
        judge_calibration=False,
        **kw,
    )
    engine = engine or FakeEngine()
    scorer = scorer or FakeReward()
    res = profile(cfg, engine=engine, scorer=scorer, eval_scorer=eval_scorer or scorer)
    return res, engine


def load(run_dir):
    calls = list(read_jsonl(run_dir / "calls.jsonl"))
    answers = list(read_jsonl(run_dir / "answers.jsonl"))
    with open(run_dir / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    return calls, answers, summary, json.loads((run_dir / "run.json").read_text())


def test_contract_and_invariants(tmp_path):
    techniques = ["bon:n=1,4", "bon:n=4,share_prefix=false", "cai:rounds=1,2"]
    res, engine = run_fake(tmp_path, techniques)
    calls, answers, summary, meta = load(res.run_dir)
    cells = ["plain", "bon:n=1", "bon:n=4", "bon:n=4,share_prefix=false", "cai:rounds=1", "cai:rounds=2"]
    assert list(res.cells_ok) == cells and not res.cells_failed
    assert RUN_KEYS <= set(meta) and meta["status"] == "finished" and meta["cells"] == cells
    assert [r["cell"] for r in summary] == cells
    assert list(summary[0].keys())[: len(SUMMARY_COLS)] == SUMMARY_COLS
    for c in calls:
        assert CALL_COLS <= set(c), CALL_COLS - set(c)
        assert c["latency_s"] == pytest.approx(c["t_finish_s"] - c["t_submit_s"])
    for a in answers:
        assert ANSWER_COLS <= set(a), ANSWER_COLS - set(a)
    n_prompts = 6
    by_cell = {}
    for a in answers:
        by_cell.setdefault(a["cell"], []).append(a)
    assert {k: len(v) for k, v in by_cell.items()} == {c: n_prompts for c in cells}
    tech_calls = {}
    for c in calls:
        if c["stage"] != "eval":
            tech_calls.setdefault(c["answer_id"], []).append(c)
    for a in answers:
        mine = tech_calls[a["answer_id"]]
        assert a["calls"] == len(mine)
        assert a["output_tokens"] == sum(c["output_tokens"] for c in mine)
        assert a["latency_s"] == pytest.approx(max(c["t_finish_s"] for c in mine) - min(c["t_submit_s"] for c in mine))
        if a["technique"] == "plain":
            assert a["calls"] == 1 and mine[0]["stage"] == "sample"
        elif a["technique"] == "bon":
            n = int(a["cell"].split("n=")[1].split(",")[0])
            ex = a["extra"]
            assert len(a["candidate_rewards"]) == n
            # output tokens per answer = the sum over its N candidates
            assert a["output_tokens"] == sum(ex["candidate_output_tokens"])
            # selected reward = max candidate reward, and the selected text is that candidate
            assert a["selection_reward"] == pytest.approx(max(a["candidate_rewards"]))
            assert a["candidate_rewards"][ex["selected_index"]] == pytest.approx(max(a["candidate_rewards"]))
            assert a["text"] == a["candidate_texts"][ex["selected_index"]]
            assert sorted(c["stage"] for c in mine) == ["sample", "score"]
            assert a["reward_tokens"] > 0
            if "share_prefix=false" in a["cell"]:
                assert a["cached_prompt_tokens"] == 0
            else:
                assert a["cached_prompt_tokens"] == mine[0]["prompt_tokens"] * (n - 1)
        elif a["technique"] == "cai":
            rounds = int(a["cell"].split("rounds=")[1])
            assert a["extra"]["rounds"] == rounds and not a["extra"]["stopped_early"]
            assert a["calls"] == 1 + 2 * rounds
            assert len(a["extra"]["principles"]) == rounds
            stages = sorted(c["stage"] for c in mine)
            assert stages == sorted(["sample"] + ["critique", "revise"] * rounds)
    # the conversation grows: each CAI round's prompts are longer than the last
    cai2 = [c for c in calls if c["cell"] == "cai:rounds=2" and c["prompt_id"] == "helpful-001" and c["stage"] != "eval"]
    lens = [c["prompt_tokens"] for c in sorted(cai2, key=lambda c: c["t_submit_s"])]
    assert lens == sorted(lens) and lens[-1] > lens[0]
    # eval scoring is recorded as stage=eval and kept out of the technique's calls
    evals = [c for c in calls if c["stage"] == "eval"]
    assert len(evals) == len(answers)
    # every cell starts from a reset prefix cache
    assert engine.resets >= len(cells)


def test_failed_cell_does_not_lose_others(tmp_path):
    # The engine fails only on CAI critique prompts: the cai cell fails, the rest finish.
    engine = FakeEngine(fail_on="Read your last response")
    res, _ = run_fake(tmp_path, ["bon:n=2", "cai:rounds=1", "bon:n=3"], engine=engine, prompts=("helpful",), limit=2)
    calls, answers, summary, meta = load(res.run_dir)
    assert res.cells_failed == ("cai:rounds=1",)
    assert set(res.cells_ok) == {"plain", "bon:n=2", "bon:n=3"}
    status = {r["cell"]: r["status"] for r in summary}
    assert status == {"plain": "ok", "bon:n=2": "ok", "cai:rounds=1": "failed", "bon:n=3": "ok"}
    failed = [r for r in summary if r["cell"] == "cai:rounds=1"][0]
    assert "fake engine failure" in failed["error"]
    assert meta["failures"][0]["cell"] == "cai:rounds=1"
    assert len([a for a in answers if a["cell"] == "bon:n=3"]) == 2


def test_reward_failure_fails_only_bon_cells(tmp_path):
    res, _ = run_fake(tmp_path, ["bon:n=2"], scorer=FakeReward(fail=True), eval_scorer=FakeReward(), prompts=("helpful",), limit=2)
    assert res.cells_failed == ("bon:n=2",) and res.cells_ok == ("plain",)


def test_tax_columns(tmp_path):
    res, _ = run_fake(tmp_path, ["bon:n=4", "bon:n=1"], prompts=("helpful", "harmful", "arith"), limit=4)
    _, _, summary, meta = load(res.run_dir)
    base, bon, bon1 = summary
    assert float(base["latency_p50_x"]) == pytest.approx(1.0)
    assert float(bon["output_tokens_per_answer_x"]) == pytest.approx(
        float(bon["output_tokens_per_answer"]) / float(base["output_tokens_per_answer"])
    )
    assert float(bon["bon_kl_bound_nats"]) == pytest.approx(0.6363, abs=1e-4)
    assert float(bon["bon_win_rate_bound"]) == pytest.approx(0.8)
    assert bon["proxy_win_rate_vs_plain"] != "" and bon["win_rate_vs_plain"] == ""
    assert base["accuracy_n"] == "4" and base["refusal_n"] == "4"
    # provenance columns carry run.json's values (CSV: None is written as "")
    prov, eng, cfg = meta["provenance"], meta["engine"], meta["config"]
    as_csv = lambda v: "" if v is None else str(v)  # noqa: E731
    expected = {
        "device": prov["machine"].get("device"), "torch_version": prov["versions"].get("torch"),
        "vllm_version": prov["versions"].get("vllm"), "git_commit": prov.get("git_commit"),
        "dtype": eng.get("dtype"), "prefix_caching": eng.get("prefix_caching"), "engine": eng.get("engine", cfg["engine"]),
        "seed": cfg["seed"], "max_tokens": cfg["max_tokens"],
    }
    for row in summary:
        assert {k: row[k] for k in expected} == {k: as_csv(v) for k, v in expected.items()}
    assert "mostly noise" in bon["noise_note"]
    # Pareto flag recomputed from the table: a cell is on the front iff no other cell is at
    # most as costly and at least as good, and strictly better in one of the two.
    cost_col = base["pareto_cost"]
    assert cost_col in ("gpu_s_per_answer", "latency_p50_s")
    points = [(float(r[cost_col]), float(r["eval_reward_mean"])) for r in summary]
    for (c, q), row in zip(points, summary):
        dominated = any(c2 <= c and q2 >= q and (c2, q2) != (c, q) for c2, q2 in points)
        assert row["pareto"] == str(not dominated), (row["cell"], points)
    # bon:n=1 keeps plain's answers (sample 0 of the same prompt): same quality, so it is on the
    # front only where its measured cost is no higher than plain's
    assert bon1["cell"] == "bon:n=1" and float(bon1["eval_reward_mean"]) == pytest.approx(float(base["eval_reward_mean"]))
    assert (bon1["pareto"] == "True") == (float(bon1[cost_col]) <= float(base[cost_col]))


def test_constitution_is_parsed_once_per_run(tmp_path, monkeypatch):
    """cai reads the run's constitution from the runner (parsed by preflight at start-up), never
    the file inside the timed window: one parse for a run of 2 cells x 2 cell repeats x 4 answers."""
    import costtax.techniques.constitution as constitution_mod
    import costtax.run.preflight as preflight_mod

    path = tmp_path / "mine.yaml"
    path.write_text("principles:\n  - id: only-one\n    critique: Is it kind?\n    revision: Make it kind.\n")
    real, parsed = constitution_mod.load_constitution, []

    def counting(p, *a, **kw):
        parsed.append(p)
        return real(p, *a, **kw)

    monkeypatch.setattr(constitution_mod, "load_constitution", counting)
    monkeypatch.setattr(preflight_mod, "load_constitution", counting)
    res, _ = run_fake(tmp_path, ["cai:rounds=1,2"], prompts=("helpful",), limit=4, constitution=str(path), cell_repeats=2)
    _, answers, _, _ = load(res.run_dir)
    cai = [a for a in answers if a["technique"] == "cai"]
    assert len(cai) == 16 and all(set(a["extra"]["principles"]) == {"only-one"} for a in cai)
    assert parsed == [str(path)]


def test_run_ids_have_one_definition(tmp_path):
    """A run id is made in rundir.new_run_id only (the plugin's baseline copy uses it too)."""
    import re
    from pathlib import Path

    from costtax.run.rundir import new_run_id

    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", new_run_id())
    root = Path(__file__).resolve().parents[2] / "costtax"
    makers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "token_hex(3)" in p.read_text())
    assert makers == ["run/rundir.py"], makers
    res, _ = run_fake(tmp_path, ["plain"], prompts=("helpful",), limit=1)
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", res.run_id)
