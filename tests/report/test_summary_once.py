"""The summary is built once: each row's own columns are computed when its unit ends and reused
by the later rebuilds of the same profile (report/summary.py RowCache); the profile's summary.csv
is byte-identical to the one `costtax report` rebuilds from the files."""
from __future__ import annotations

import pytest

from costtax.config import RunConfig
from costtax.run.profile import profile
from costtax.report import summary as S
from costtax.report import write_summary
from fakes import FakeReward, TimedEngine

pytestmark = pytest.mark.integration


@pytest.fixture
def spied(monkeypatch):
    """Per build_summary call, the (cell, load) rows whose own columns were computed."""
    builds: list[list[tuple[str, str]]] = []
    own, build = S._own_columns, S.build_summary

    def counting_own(rd, meta, cell, level, *a, **kw):
        builds[-1].append((cell, level.label))
        return own(rd, meta, cell, level, *a, **kw)

    def counting_build(*a, **kw):
        builds.append([])
        return build(*a, **kw)

    monkeypatch.setattr(S, "_own_columns", counting_own)
    monkeypatch.setattr(S, "build_summary", counting_build)
    return builds


def test_profile_end_recomputes_no_row_and_report_gives_the_same_bytes(tmp_path, spied):
    cfg = RunConfig(techniques=("plain", "bon:n=2", "cai:rounds=1"), prompts=("helpful", "arith", "harmful"), limit=2,
                    max_tokens=8, out=str(tmp_path / "run"), judge_calibration=False, load=("batch", "concurrency=2"),
                    cell_repeats=2, warmup_answers=0)
    res = profile(cfg, engine=TimedEngine(base_s=0.002), scorer=FakeReward())
    units = 3 * 2 * 2
    assert len(spied) == units + 1  # one rebuild after every unit, one at the end
    assert spied[-1] == []  # the end: every row reused, only cross-row columns recomputed
    computed = sum(len(b) for b in spied)
    # each unit computes its own row; a row is computed again only when a later cell's records
    # change the frames' column types (bounded here: far below a full rebuild every time)
    assert units <= computed < sum(range(1, units + 1))
    written = (res.run_dir / "summary.csv").read_bytes()
    write_summary(res.run_dir)  # what `costtax report` runs: no cache, every row from the files
    assert (res.run_dir / "summary.csv").read_bytes() == written
    assert spied[-1] and len(spied[-1]) == 3 * 2


def test_a_stale_entry_is_recomputed(tmp_path):
    cfg = RunConfig(techniques=("plain", "bon:n=2"), prompts=("helpful",), limit=3, max_tokens=8, out=str(tmp_path / "run"),
                    judge_calibration=False, load=("batch",), warmup_answers=0)
    run = profile(cfg, engine=TimedEngine(base_s=0.002), scorer=FakeReward()).run_dir
    cache = S.RowCache()
    S.build_summary(run, cache)
    assert (cache.hits, cache.misses) == (0, 2)
    S.build_summary(run, cache)
    assert (cache.hits, cache.misses) == (2, 2)
    lines = (run / "answers.jsonl").read_text().splitlines(keepends=True)
    keep = [x for x in lines if '"cell": "bon:n=2"' not in x or x is not next(y for y in lines if '"cell": "bon:n=2"' in y)]
    (run / "answers.jsonl").write_text("".join(keep))  # one bon answer fewer
    df = S.build_summary(run, cache)
    assert (cache.hits, cache.misses) == (3, 3)  # plain reused, bon recomputed
    assert df.to_csv(index=False) == S.build_summary(run).to_csv(index=False)
