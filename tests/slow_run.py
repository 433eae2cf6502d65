"""Helper process for test_reliability: a profile run on a slow fake engine, to be killed."""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from costtax.config import RunConfig  # noqa: E402
from costtax.run.profile import profile  # noqa: E402
from fakes import FakeEngine, FakeReward  # noqa: E402


class SlowEngine(FakeEngine):
    def __init__(self, delay: float, **kw):
        super().__init__(**kw)
        self.delay = delay

    def _results(self, requests, sampling, t0):
        if requests and "warmup" not in requests[0].request_id:
            time.sleep(self.delay)
        return super()._results(requests, sampling, t0)


def config(out: str) -> RunConfig:
    return RunConfig(
        techniques=("bon:n=2", "cai:rounds=2", "bon:n=3"),
        prompts=("helpful",),
        limit=3,
        max_tokens=8,
        out=out,
        judge_calibration=False,
    )


if __name__ == "__main__":
    out, delay = sys.argv[1], float(sys.argv[2])
    resume = len(sys.argv) > 3 and sys.argv[3] == "resume"
    scorer = FakeReward()
    profile(config(out), resume=out if resume else None, engine=SlowEngine(delay), scorer=scorer, eval_scorer=scorer)
    print("DONE")
