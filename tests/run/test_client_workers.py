"""--client-workers against the stand-in OpenAI server (bench/standin_server.py, a separate
process): the run directory written from 2 worker processes holds the same answers as one
process writes, no duplicate answer or call ids, rows of both workers; a rate level's arrivals
follow the one Poisson schedule; a run killed with kill -9 mid-level leaves no worker behind and
`--resume` finishes it without duplicates."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from costtax.config import RunConfig
from costtax.load.levels import poisson_arrivals
from costtax.run.profile import profile
from costtax.store.rundata import RunData
from test_client_lag_standin import standin

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server():
    proc, url = standin("--ttft-ms", "30", "--token-ms", "5")
    yield url
    proc.terminate()
    proc.wait(10)


def config(url: str, out: Path, workers: int, load=("concurrency=8",), **kw) -> RunConfig:
    return RunConfig(engine="openai", base_url=url, techniques=("plain",), prompts=("helpful",), limit=12, repeats=3,
                     max_tokens=8, load=load, warmup_answers=0, eval_reward_model="none", client_workers=workers,
                     oversaturation_stop=False, out=str(out), **kw)


def rows(run: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (run / name).read_text().splitlines() if x.strip()]


def test_two_workers_write_what_one_process_writes(server, tmp_path):
    one = Path(profile(config(server, tmp_path / "one", 1)).run_dir)
    two = Path(profile(config(server, tmp_path / "two", 2)).run_dir)
    a1, a2 = rows(one, "answers.jsonl"), rows(two, "answers.jsonl")
    assert len(a2) == len(a1) == 36
    assert Counter(r["answer_id"] for r in a2) == Counter(r["answer_id"] for r in a1)  # same answers, none twice
    assert {r["answer_id"]: r["text"] for r in a2} == {r["answer_id"]: r["text"] for r in a1}
    assert {r["answer_id"]: r["output_tokens"] for r in a2} == {r["answer_id"]: r["output_tokens"] for r in a1}
    assert Counter(r.get("worker", 0) for r in a2) == {0: 18, 1: 18} and {r.get("worker", 0) for r in a1} == {0}
    c2 = rows(two, "calls.jsonl")
    assert len(c2) == len(rows(one, "calls.jsonl")) == 36
    assert len({r["call_id"] for r in c2}) == len(c2)  # call ids unique across workers
    assert all(r.get("worker", 0) == a.get("worker", 0) for r in c2 for a in a2 if a["answer_id"] == r["answer_id"])
    (cell,) = rows(two, "cells.jsonl")
    assert cell["status"] == "ok" and cell["answers"] == 36 and cell["load_stats"]["finished"] == 36
    assert cell["client"]["workers"] == 2 and cell["client"]["lag_samples"] > 0
    rd = RunData.open(two)  # the reader accepts it as a run (no duplicate answers)
    assert len(rd.answers) == 36 and len(rd.units) == 1
    import csv

    (s1,), (s2,) = (list(csv.DictReader(open(r / "summary.csv"))) for r in (one, two))
    assert s1["client_workers"] == "1" and s1["client_loop"] == "engine:costtax-openai-client"
    assert s2["client_workers"] == "2" and s2["client_loop"].startswith("engine:costtax-openai-client x2")
    assert s2["answers"] == s1["answers"] == "36" and float(s2["client_lag_p50_s"]) >= 0


def test_rate_level_stays_one_poisson_schedule(server, tmp_path):
    run = Path(profile(config(server, tmp_path / "rate", 2, load=("rate=12",))).run_dir)
    ans = rows(run, "answers.jsonl")
    assert len(ans) == 36 and {r.get("worker", 0) for r in ans} == {0, 1}
    t = sorted(r["t_arrival_s"] for r in ans)
    got = [x - t[0] for x in t]
    want = poisson_arrivals(36, 12.0, 0)
    # each arrival at its scheduled offset, give or take this shared machine's scheduling (each worker
    # drawing its own schedule would end 1.5 s early)
    late = [g - w for g, w in zip(got, want)]
    assert max(abs(x) for x in late) < 0.5, late


def test_kill_mid_level_leaves_no_worker_and_resume_finishes(server, tmp_path):
    import psutil

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "costtax", "profile", "--engine", "openai", "--base-url", server, "-t", "plain", "-p", "helpful",
            "--limit", "16", "--repeats", "6", "--max-tokens", "24", "--load", "concurrency=4", "--warmup-answers", "0",
            "--eval-reward-model", "none", "--no-oversaturation-stop", "--client-workers", "2", "--out", str(out)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        answers = out / "answers.jsonl"
        while time.monotonic() < deadline:
            if answers.exists() and len(answers.read_text().splitlines()) >= 10:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"workers outlived their killed parent: {alive}"
    before = rows(out, "answers.jsonl")
    assert 10 <= len(before) < 96
    res = subprocess.run([sys.executable, "-m", "costtax", "profile", "--resume", str(out)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    after = rows(out, "answers.jsonl")
    ids = Counter(r["answer_id"] for r in after)
    assert len(ids) == 96 and max(ids.values()) == 1, [k for k, v in ids.items() if v > 1]
    assert {r["answer_id"] for r in before} <= set(ids)
    rd = RunData.open(out)
    assert len(rd.answers) == 96 and rd.units[0].status == "ok" and rd.units[0].client["workers"] == 2


def test_cells_that_score_inside_the_answer_run_in_one_process(server, tmp_path):
    """bon needs the selection reward model during the answer; workers have none, so its units
    run in the parent (a split would need the engine's worker_kwargs, which the fake has not)."""
    from fakes import FakeEngine, FakeReward

    cfg = RunConfig(engine="openai", base_url=server, techniques=("bon:n=2",), prompts=("helpful",), limit=2,
                    max_tokens=8, load=("concurrency=2",), warmup_answers=0, judge_calibration=False, client_workers=2,
                    out=str(tmp_path / "run"))
    scorer = FakeReward()
    res = profile(cfg, engine=FakeEngine(), scorer=scorer, eval_scorer=scorer)
    cells = [json.loads(x) for x in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    bon = [c for c in cells if c["cell"] == "bon:n=2"]
    assert bon and all(c["status"] == "ok" and c["client"]["workers"] == 1 for c in bon), bon
    assert "bon:n=2" in res.cells_ok


def test_the_over_saturation_watch_sees_every_worker_and_stops_them_all(tmp_path):
    """An open-loop level far above what the server holds (answers take 1.5 s, 50 arrive per s):
    the answers in flight, counted over both workers in the parent, keep rising; the parent's
    watch stops the level and both workers cancel what they still run."""
    proc, url = standin("--ttft-ms", "300", "--token-ms", "50")
    try:
        cfg = RunConfig(engine="openai", base_url=url, techniques=("plain",), prompts=("helpful",), limit=24, repeats=4,
                        max_tokens=24, load=("rate=50",), warmup_answers=0, eval_reward_model="none", client_workers=2,
                        oversaturation_stop=True, out=str(tmp_path / "run"))
        run = Path(profile(cfg).run_dir)
    finally:
        proc.terminate()
        proc.wait(10)
    (cell,) = rows(run, "cells.jsonl")
    stats = cell["load_stats"]
    assert (stats["stop_reason"] or "").startswith("oversaturated"), stats
    assert stats["oversaturated"] and stats["finished"] < 96 and stats["started"] < 96
    ans = rows(run, "answers.jsonl")
    assert len(ans) == stats["finished"] and len({r["answer_id"] for r in ans}) == len(ans)
