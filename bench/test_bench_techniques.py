"""Each technique on the embedded model, profiled with the costtax pytest plugin (the project runs
its own regression suite the way a user would). One shared vLLM engine and judge for the session;
plain on the same prompts is the baseline, run once.

`pytest bench --benchmark-disable` (CI smoke): each cell runs once and its limits are checked.
`make bench-baseline` / `make bench-compare`: ROUNDS timed runs per cell (benchmark.pedantic),
cost and quality fields with CIs in extra_info, compared by `costtax compare`.

Sizes: 4 helpful prompts, 24 new tokens: enough to exercise every stage (sample, score, critique,
revise, eval) in about a minute per technique on the 2-core CPU.

What is asserted, and how each check can fail:

* token structure (no noise): an answer never has more output tokens than its technique's
  generations allow (plain 1 x MAX_TOKENS, bon N x, cai 3 x: answer, critique, revision), and
  best-of-N generates at least twice plain's tokens (N candidates; the demo measured 3.98x at N=4);
* latency: no cheaper than plain for a technique that does strictly more work (min 1x), and at
  most LATENCY_SLACK times the multiplier the committed demo run measured for the same technique
  (bench/results/demo-cpu-2026-11-27/summary.csv, read here, not typed);
* plain is the baseline, so its multipliers are 1 by construction and are not asserted; its
  absolute numbers are (tokens within max_tokens, a positive p95 latency);
* no sanity flag on any row (flag_* columns: e.g. a technique cheaper than plain at 2x its tokens).
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from costtax.pytest_plugin import assert_cost, assert_quality

LIMIT, MAX_TOKENS, ROUNDS = 4, 24, 2
# The demo ran 8 prompts x 64 tokens on a quiet machine; here 4 x 24 on a shared one: the judge's
# scoring weighs more at short answers and neighbours add noise. 3x the demo's multiplier leaves
# room for both and still fails a technique that got several times slower.
LATENCY_SLACK = 3.0
DEMO = Path(__file__).parent / "results" / "demo-cpu-2026-11-27" / "summary.csv"
pytestmark = [pytest.mark.filterwarnings("ignore:NVML unavailable"), pytest.mark.filterwarnings("ignore:could not rebuild")]

# technique -> (generations per answer that produce output tokens, demo cell it is bounded by,
#               min output tokens x plain, assert_quality limits)
CASES = {
    "plain": (1, None, None, {}),
    "bon:n=4": (4, "bon:n=4", 2.0, {"min_win_rate": 0.25}),
    "bon:n=4,share_prefix=false": (4, "bon:n=4", 2.0, {}),
    "cai:rounds=1": (3, "cai:rounds=1", None, {}),
}


def demo_multipliers() -> dict[str, float]:
    """latency_p95_x per cell of the committed demo run."""
    with DEMO.open(newline="") as fh:
        return {r["cell"]: float(r["latency_p95_x"]) for r in csv.DictReader(fh)}


def test_demo_bounds_are_real_measurements():
    """The bounds below come from a run where the techniques cost more than plain."""
    m = demo_multipliers()
    assert m["plain"] == 1.0 and m["bon:n=4"] > 1.5 and m["cai:rounds=1"] > 1.5


@pytest.mark.parametrize("technique", list(CASES))
def test_technique(costtax_profile, benchmark, technique):
    benchmark.group = "technique"
    result = costtax_profile(
        technique=technique, prompts="helpful", limit=LIMIT, max_tokens=MAX_TOKENS, benchmark=benchmark, rounds=ROUNDS
    )
    generations, demo_cell, min_tokens_x, quality = CASES[technique]
    row = result.row
    assert row["status"] == "ok" and row["answers"] == LIMIT
    assert not row.get("sanity_flags"), row.get("sanity_flags")
    tokens = float(row["output_tokens_per_answer"])
    assert 0 < tokens <= generations * MAX_TOKENS, f"{technique}: {tokens} output tokens per answer"
    if demo_cell is None:  # plain: the baseline; its multipliers are 1 by definition
        assert float(row["latency_p95_s"]) > 0
    else:
        limit_x = LATENCY_SLACK * demo_multipliers()[demo_cell]
        assert_cost(result, max_latency_p95_x=limit_x)
        assert float(row["latency_p95_x"]) >= 1.0, f"{technique} faster than plain at more work: {row['latency_p95_x']}"
    if min_tokens_x is not None:
        assert float(row["output_tokens_per_answer_x"]) >= min_tokens_x, row["output_tokens_per_answer_x"]
    if quality:
        assert_quality(result, **quality)
