"""flag_energy_below_idle: a row whose energy per answer is below what the machine draws idle
over the same wall time (idle power x cell wall time / answers) cannot be right (the meter missed
part of the cell, or the idle reading is wrong) and is flagged; report/checks.py computes it in
add_checks from run.json's idle_power_w."""
from __future__ import annotations

import pandas as pd
import pytest

from costtax.report.checks import add_checks as _add_checks

pytestmark = pytest.mark.unit


def _checked(energy_j_per_answer, idle_w, *, wall_s=4.0, answers=2):
    df = pd.DataFrame(
        [
            {
                "cell": "bon:n=4", "load": "batch", "technique": "bon", "params": '{"n": 4}', "status": "ok",
                "answers": answers, "cell_wall_s": wall_s, "energy_j_per_answer": energy_j_per_answer,
                "output_tokens_per_answer": 10.0, "latency_p50_s": 1.0,
            }
        ]
    )
    answers_df = pd.DataFrame(
        [{"cell": "bon:n=4", "load": "batch", "answer_id": f"a{i}", "latency_s": 1.0} for i in range(answers)]
    )
    meta = {} if idle_w is None else {"idle_power_w": {"power_w": idle_w}}
    return _add_checks(df, answers_df, pd.DataFrame(), meta).iloc[0]


@pytest.mark.parametrize(
    "energy,idle,flagged",
    [
        (15.0, 10.0, True),  # 10 W x 4 s / 2 answers = 20 J floor: 15 J is impossible
        (19.9, 10.0, True),
        (20.0, 10.0, False),  # exactly the idle floor
        (35.0, 10.0, False),
        (15.0, None, False),  # no idle reading: nothing to compare with
        (float("nan"), 10.0, False),  # no energy measured
        (None, 10.0, False),
    ],
)
def test_energy_below_idle(energy, idle, flagged):
    row = _checked(energy, idle)
    assert bool(row["flag_energy_below_idle"]) is flagged
    assert ("energy_below_idle" in (row["sanity_flags"] or "")) is flagged


def test_floor_scales_with_wall_time_and_answers():
    # the same 15 J per answer: below the floor over 4 s for 2 answers (20 J), above it over 4 s
    # for 4 answers (10 J) and over 2 s for 2 answers (10 J)
    assert bool(_checked(15.0, 10.0)["flag_energy_below_idle"])
    assert not bool(_checked(15.0, 10.0, answers=4)["flag_energy_below_idle"])
    assert not bool(_checked(15.0, 10.0, wall_s=2.0)["flag_energy_below_idle"])
