"""Nothing lost: kill -9 mid-run keeps every finished row, --resume completes the rest with no
duplicates; a changed config is refused; Ctrl-C flushes and says how to resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from costtax.config import RunConfig
from costtax.errors import ConfigError
from costtax.run.profile import RunInterrupted, profile
from costtax.jsonio import read_jsonl
from fakes import FakeEngine, FakeReward

pytestmark = pytest.mark.integration

HERE = Path(__file__).parents[1]


def _lines(p: Path) -> int:
    return sum(1 for _ in read_jsonl(p)) if p.exists() else 0


def test_kill9_then_resume(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen([sys.executable, str(HERE / "slow_run.py"), str(out), "0.4"], env=env)
    deadline = time.time() + 60
    # wait until the plain cell finished and the next cell has started writing calls
    while time.time() < deadline:
        cells = _lines(out / "cells.jsonl")
        if cells >= 2 and _lines(out / "calls.jsonl") > 0:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("run did not progress")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    done_before = [r["cell"] for r in read_jsonl(out / "cells.jsonl")]
    answers_before = list(read_jsonl(out / "answers.jsonl"))
    assert done_before and len(done_before) < 4
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # killed: never finalised
    # resume (in a new process, like a user would)
    res = subprocess.run([sys.executable, str(HERE / "slow_run.py"), str(out), "0.0", "resume"], env=env, capture_output=True, text=True, timeout=120)
    assert "DONE" in res.stdout, res.stderr[-2000:]
    cells = list(read_jsonl(out / "cells.jsonl"))
    assert [c["cell"] for c in cells] == ["plain", "bon:n=2", "cai:rounds=2", "bon:n=3"]
    assert all(c["status"] == "ok" for c in cells)
    answers = list(read_jsonl(out / "answers.jsonl"))
    ids = [a["answer_id"] for a in answers]
    assert len(ids) == len(set(ids)) == 4 * 3
    for a in answers_before:  # finished rows survive untouched
        assert a in answers
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and [e["event"] for e in meta["events"]] == ["start", "resume"]
    # the summary counts only the calls of the session that finished each answer
    import csv

    with open(out / "summary.csv") as fh:
        rows = {r["cell"]: r for r in csv.DictReader(fh)}
    assert float(rows["cai:rounds=2"]["calls_per_answer"]) == pytest.approx(5.0)
    assert float(rows["bon:n=2"]["calls_per_answer"]) == pytest.approx(2.0)


def test_resume_refuses_changed_config(tmp_path):
    cfg = RunConfig(techniques=("plain",), prompts=("helpful",), limit=2, out=str(tmp_path / "r"), judge_calibration=False)
    profile(cfg, engine=FakeEngine(), scorer=FakeReward())
    changed = RunConfig(techniques=("plain",), prompts=("helpful",), limit=3, out=str(tmp_path / "r"), judge_calibration=False)
    with pytest.raises(ConfigError, match=r"limit: 2 -> 3"):
        profile(changed, resume=tmp_path / "r", engine=FakeEngine(), scorer=FakeReward())
    # same config: nothing left to do, no duplicate rows
    profile(cfg, resume=tmp_path / "r", engine=FakeEngine(), scorer=FakeReward())
    assert _lines(tmp_path / "r" / "answers.jsonl") == 2


def test_resume_finishes_answers_of_unfinished_cell(tmp_path):
    """Answers already written for an unfinished cell are kept and not redone."""
    # One score call per reward-model pass (max 2 pairs = one bon:n=2 answer) and no warm-up,
    # so the interrupt lands between bon answers.
    cfg = RunConfig(techniques=("bon:n=2",), prompts=("helpful",), limit=3, out=str(tmp_path / "r"), judge_calibration=False,
                    score_max_pairs=2, warmup_answers=0)

    class DieInScore(FakeReward):
        def score(self, prompts, responses, *, harmful=None):
            if self.calls == 3:  # plain's eval pass done, two bon answers scored
                raise KeyboardInterrupt
            return super().score(prompts, responses)

    class Partial(FakeEngine):
        pass

    with pytest.raises(RunInterrupted, match="--resume"):
        scorer = DieInScore()
        profile(cfg, engine=Partial(), scorer=scorer, eval_scorer=scorer)
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["status"] == "interrupted"
    assert [c["cell"] for c in read_jsonl(tmp_path / "r" / "cells.jsonl")] == ["plain"]
    scorer = FakeReward()
    profile(cfg, resume=tmp_path / "r", engine=FakeEngine(), scorer=scorer, eval_scorer=scorer)
    answers = list(read_jsonl(tmp_path / "r" / "answers.jsonl"))
    assert sorted(a["answer_id"] for a in answers) == sorted({a["answer_id"] for a in answers})
    assert len(answers) == 6
    first = [a for a in answers if a["cell"] == "bon:n=2"]
    assert len({a["session"] for a in first}) == 2  # some bon answers came from the interrupted session


def test_engine_restart_after_death(tmp_path):
    """An engine that dies inside a cell is restarted for the next cell (recorded)."""
    import importlib

    prof_mod = importlib.import_module("costtax.run.profile")
    startup = importlib.import_module("costtax.run.startup")

    class Dying(FakeEngine):
        def _results(self, requests, sampling, t0):
            if any("cai" in r.request_id or "Read your last" in str(r.messages) for r in requests):
                self.started = False  # dead: every later call fails
                raise RuntimeError("engine died")
            return super()._results(requests, sampling, t0)

    started = []

    def fake_restart(engine, config, meta, emit):
        e = FakeEngine()
        e.start()
        started.append(e)
        meta.setdefault("events", []).append({"event": "engine_restart"})
        return e

    orig = startup._restart
    startup._restart = fake_restart
    try:
        cfg = RunConfig(techniques=("cai:rounds=1", "bon:n=2"), prompts=("helpful",), limit=2, out=str(tmp_path / "r"), judge_calibration=False)
        res = prof_mod.profile(cfg, engine=Dying(), scorer=FakeReward(), restart_dead_engine=True)
    finally:
        startup._restart = orig
    assert res.cells_failed == ("cai:rounds=1",) and "bon:n=2" in res.cells_ok
    assert started and json.loads((tmp_path / "r" / "run.json").read_text())["events"][-1]["event"] == "engine_restart"
