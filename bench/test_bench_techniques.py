"""Each technique on the embedded model, profiled with the costtax pytest plugin (the project runs
its own regression suite the way a user would). One shared vLLM engine and judge for the session;
plain on the same prompts is the baseline, run once.

`pytest bench --benchmark-disable` (CI smoke): each cell runs once and its limits are checked.
`make bench-baseline` / `make bench-compare`: ROUNDS timed runs per cell (benchmark.pedantic),
cost and quality fields with CIs in extra_info, compared by `costtax compare`.

Sizes: 4 helpful prompts, 24 new tokens: enough to exercise every stage (sample, score, critique,
revise, eval) in about a minute per technique on the 2-core CPU; the cost multipliers at n=4 are
wide (the assertion messages and extra_info carry the CIs). The limits below are loose guards on
the structure of each technique's cost, not quality claims about a 135M model.
"""
from __future__ import annotations

import pytest

from costtax.pytest_plugin import assert_cost, assert_quality

LIMIT, MAX_TOKENS, ROUNDS = 4, 24, 2
pytestmark = [pytest.mark.filterwarnings("ignore:NVML unavailable"), pytest.mark.filterwarnings("ignore:could not rebuild")]

# technique -> (assert_cost limits, assert_quality limits)
CASES = {
    "plain": ({"max_latency_p95_x": 1.0 + 1e-9, "max_tokens_per_answer_x": 1.0 + 1e-9}, {}),
    # N samples per answer: about N× plain's tokens (each candidate may stop early or not).
    "bon:n=4": ({"max_tokens_per_answer_x": 8.0, "max_latency_p95_x": 40.0}, {"min_win_rate": 0.25}),
    "bon:n=4,share_prefix=false": ({"max_tokens_per_answer_x": 8.0, "max_latency_p95_x": 40.0}, {}),
    # answer + critique + revision: at most 3 generations' worth of tokens per answer.
    "cai:rounds=1": ({"max_tokens_per_answer_x": 6.0, "max_latency_p95_x": 40.0}, {}),
}


@pytest.mark.parametrize("technique", list(CASES))
def test_technique(costtax_profile, benchmark, technique):
    benchmark.group = "technique"
    result = costtax_profile(
        technique=technique, prompts="helpful", limit=LIMIT, max_tokens=MAX_TOKENS, benchmark=benchmark, rounds=ROUNDS
    )
    cost, quality = CASES[technique]
    assert result.row["status"] == "ok" and result.row["answers"] == LIMIT
    assert_cost(result, **cost)
    if quality:
        assert_quality(result, **quality)
