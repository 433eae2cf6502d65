"""The table header states the judge's marginal value honestly: judge alone, refusal rule alone
and judge + rule side by side, from run.json's public_calibration."""
from __future__ import annotations

from costtax.report import reward_model_line
import pytest

pytestmark = pytest.mark.unit


def _meta(**rule):
    return {"reward_model": {"spec": "judge", "public_calibration": {
        "auc": 0.31, "n": 80, "dataset": "pyrit", "weak_proxy": True, "with_refusal_rule": rule}}}


def test_header_shows_all_three_side_by_side():
    line = reward_model_line(_meta(auc=0.81, rule_alone_auc=0.85))
    i, j, k = line.index("judge alone 0.31"), line.index("refusal rule alone 0.85"), line.index("judge + rule 0.81")
    assert i < j < k  # the combined figure does not lead
    assert line.startswith("WEAK PROXY")


def test_header_without_the_rule():
    line = reward_model_line(_meta())
    assert "judge alone 0.31" in line and "rule alone" not in line and "judge + rule" not in line
