"""profile(config, baseline_from=DIR) reuses an earlier run's plain cell: only the other cells
run, the new run's summary has the plain row (same answers) and its ×plain columns, run.json
names the baseline, and a directory without a finished plain cell is refused in one line."""
from __future__ import annotations

import json

import pytest

from costtax.config import RunConfig
from costtax.errors import ConfigError
from costtax.run.profile import profile
from costtax.report import summary_records
from costtax.store.rundata import RunData
from fakes import FakeEngine, FakeReward

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:NVML unavailable")]


def _cfg(out, techniques):
    return RunConfig(techniques=techniques, prompts=("helpful",), limit=4, max_tokens=16, out=str(out),
                     judge_calibration=False, warmup_answers=0)


def test_plain_is_reused_not_rerun(tmp_path):
    s = FakeReward()
    profile(_cfg(tmp_path / "base", ("plain",)), engine=FakeEngine(), scorer=s, eval_scorer=s)
    eng = FakeEngine()
    s = FakeReward()
    res = profile(_cfg(tmp_path / "bon", ("bon:n=2",)), engine=eng, scorer=s, eval_scorer=s, baseline_from=tmp_path / "base")
    assert not res.cells_failed
    rd = RunData.open(tmp_path / "bon")
    base = RunData.open(tmp_path / "base")
    assert rd.meta["baseline_from"] == {"run_dir": str(base.path), "run_id": base.run_id}
    assert rd.run_id != base.run_id
    assert {a.answer_id for a in rd.answers_at("plain")} == {a.answer_id for a in base.answers}
    assert {a.session for a in rd.answers_at("plain")} == {a.session for a in base.answers}  # copied, not rerun
    assert all(c.cell == "bon:n=2" for c in rd.calls if c.session not in {a.session for a in base.answers})
    rows = {r["cell"]: r for r in summary_records(tmp_path / "bon")}
    assert set(rows) == {"plain", "bon:n=2"} and rows["plain"]["latency_p50_x"] == 1.0
    assert rows["bon:n=2"]["output_tokens_per_answer_x"] is not None


def test_baseline_without_plain_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "run.json").write_text(json.dumps({"run_id": "r", "schema_version": 1}))
    with pytest.raises(ConfigError, match="baseline_from: bad value .*no finished plain cell"):
        profile(_cfg(tmp_path / "bon", ("bon:n=2",)), engine=FakeEngine(), scorer=FakeReward(), baseline_from=tmp_path / "empty")
    with pytest.raises(ConfigError, match="baseline_from: .*no such directory"):
        profile(_cfg(tmp_path / "bon2", ("bon:n=2",)), engine=FakeEngine(), scorer=FakeReward(), baseline_from=tmp_path / "nope")
