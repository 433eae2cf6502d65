"""Builds the frozen run directories under tests/golden/ (run once, then committed and never
rebuilt by the tests): the golden test (tests/test_golden.py) reads them and checks that
summary.csv, plan.csv and `costtax compare` built from them stay byte-identical to the stored
expected files while the reader code is refactored.

    PYTHONPATH=$PWD .venv/bin/python tests/golden/make_golden.py

What the runs hold: three cells (plain, bon:n=2, cai:rounds=1), two load levels (batch and
concurrency=2), two cell repeats, three prompt sources (helpful: reward only; arith: exact
answers; harmful: the refusal scorer, so scores.jsonl is present), every record file. `old` is
interrupted mid-run (KeyboardInterrupt from the reward model) and resumed, so it holds two
sessions; `new` runs on an engine that writes more words per sample with a slower decode in
the concurrency=2 level only, so compare has something to flag.
Rerunning this script writes different timings (the fake engine uses the real clock); the
expected files would then have to be regenerated too (tests/test_golden.py --regen is not
offered on purpose: regenerate by hand with `python tests/test_golden.py regen` after a reviewed
change).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fakes import FakeEngine, FakeReward  # noqa: E402

from costtax.config import RunConfig  # noqa: E402
from costtax.profile import RunInterrupted, profile  # noqa: E402


def config(out: Path) -> RunConfig:
    return RunConfig(
        techniques=("plain", "bon:n=2", "cai:rounds=1"), prompts=("helpful", "arith", "harmful"), limit=3,
        max_tokens=16, out=str(out), judge_calibration=False, cell_repeats=2, load=("batch", "concurrency=2"),
        warmup_answers=0, score_max_pairs=4, slo_p95_s=0.5,
    )


class DieOnce(FakeReward):
    """Interrupts the run at its `at`-th reward-model pass (a kill mid-cell, as Ctrl-C)."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def score(self, prompts, responses, *, harmful=None):
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().score(prompts, responses, harmful=harmful)


class SlowerUnderLoad(FakeEngine):
    """More words per sample everywhere; a slower decode when two answers are in flight."""

    in_flight = 0

    async def agenerate(self, request, sampling):
        SlowerUnderLoad.in_flight += 1
        try:
            self.delay_s = 0.004 if SlowerUnderLoad.in_flight > 1 else 0.001
            return await super().agenerate(request, sampling)
        finally:
            SlowerUnderLoad.in_flight -= 1


def main() -> None:
    old, new = HERE / "old", HERE / "new"
    for d in (old, new):
        shutil.rmtree(d, ignore_errors=True)
    eng = FakeEngine(words_per_sample=8)
    eng.delay_s = 0.001
    try:
        s = DieOnce(at=20)
        profile(config(old), engine=eng, scorer=s, eval_scorer=s)
        raise SystemExit("the interrupt never came: raise DieOnce.at's count")
    except RunInterrupted:
        pass
    eng = FakeEngine(words_per_sample=8)
    eng.delay_s = 0.001
    s = FakeReward()
    profile(config(old), resume=old, engine=eng, scorer=s, eval_scorer=s)
    s = FakeReward()
    profile(config(new), engine=SlowerUnderLoad(words_per_sample=10), scorer=s, eval_scorer=s)
    for d in (old, new):
        for png in d.glob("*.png"):
            png.unlink()


if __name__ == "__main__":
    main()
