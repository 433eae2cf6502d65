"""Warnings raised during a run become run.json events (costtax/run/run_events.py), and the terminal
gets one line about them."""
from __future__ import annotations

import json
import logging
import warnings

from costtax.config import RunConfig
from costtax.console.display import warnings_line
from costtax.run.profile import profile
from costtax.run.run_events import MAX_WARNING_EVENTS, WarningEvents
from fakes import FakeEngine, FakeReward
import pytest

pytestmark = pytest.mark.unit


def _now():
    return "2026-01-01T00:00:00+00:00"


def test_python_warnings_are_recorded_once_with_a_count():
    events: list = []
    with warnings.catch_warnings(), WarningEvents(events, now=_now, session="s1"):
        warnings.simplefilter("always")  # (the default filter shows a repeat from one place once)
        for _ in range(3):
            warnings.warn("reward model fell back to fp32", RuntimeWarning)  # same place: one entry
        warnings.warn("something else", UserWarning)
    warns = [e for e in events if e["event"] == "warning"]
    assert [(e["category"], e["message"]) for e in warns] == [("RuntimeWarning", "reward model fell back to fp32"), ("UserWarning", "something else")]
    assert warns[0]["count"] == 3 and warns[1]["count"] == 1
    assert warns[0]["where"].startswith("tests/") and warns[0]["where"].endswith(".py:" + warns[0]["where"].rsplit(":", 1)[1])
    assert all(e["session"] == "s1" and e["source"] == "python" for e in warns)


def test_filters_are_restored_and_ignored_prefixes_dropped(recwarn):
    before = list(warnings.filters)
    shown = warnings.showwarning
    events: list = []
    with WarningEvents(events, now=_now, ignore=("NVML unavailable",)):
        warnings.warn("NVML unavailable: no driver", RuntimeWarning)
        warnings.warn("kept", RuntimeWarning)
    assert [e["message"] for e in events] == ["kept"]
    assert warnings.filters == before and warnings.showwarning is shown
    # after the run the caller's own filters apply again: the NVML warning is no longer swallowed
    warnings.warn("NVML unavailable: no driver", RuntimeWarning)
    assert any("NVML" in str(w.message) for w in recwarn.list)


def test_library_logger_warnings_are_recorded_and_info_is_not():
    events: list = []
    with WarningEvents(events, now=_now):
        logging.getLogger("vllm.engine").warning("KV cache is %d%% full", 97)
        logging.getLogger("vllm.engine").info("not a warning")
        logging.getLogger("somebody.else").warning("not one of ours")
    assert [(e["source"], e["category"], e["message"]) for e in events] == [("logging:vllm.engine", "WARNING", "KV cache is 97% full")]
    assert not any(isinstance(h, logging.Handler) and type(h).__name__ == "_EventHandler" for h in logging.getLogger("vllm").handlers)


def test_distinct_warnings_are_capped_and_the_rest_counted():
    events: list = []
    with WarningEvents(events, now=_now, session="s"):
        for i in range(MAX_WARNING_EVENTS + 7):
            logging.getLogger("costtax.test").warning("warning number %d", i)
    assert sum(e["event"] == "warning" for e in events) == MAX_WARNING_EVENTS
    dropped = [e for e in events if e["event"] == "warnings_dropped"]
    assert len(dropped) == 1 and dropped[0]["count"] == 7


class WarningEngine(FakeEngine):
    """A fake engine that warns on every batch, like a library deprecation would."""

    async def agenerate(self, request, sampling):
        warnings.warn("fake engine: deprecated sampling flag", DeprecationWarning)
        return await super().agenerate(request, sampling)


def test_profile_writes_warnings_into_run_json(tmp_path):
    cfg = RunConfig(techniques=("plain", "bon:n=2"), prompts=("helpful",), limit=2, max_tokens=8, out=str(tmp_path / "run"),
                    judge_calibration=False)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every call reaches showwarning: the count must add up
        res = profile(cfg, engine=WarningEngine(), scorer=FakeReward(), eval_scorer=FakeReward())
    meta = json.loads((res.run_dir / "run.json").read_text())
    warns = [e for e in meta["events"] if e["event"] == "warning"]
    assert len(warns) == 1 and warns[0]["category"] == "DeprecationWarning"
    # warm-up and measured answers: plain 2+2 generate calls, bon:n=2 2+2 (one request, n=2)
    assert warns[0]["count"] >= 8
    assert warns[0]["session"] == next(e["session"] for e in meta["events"] if e["event"] == "start")
    line = warnings_line(res.run_dir)
    assert line is not None and line.startswith(f"1 warning ({warns[0]['count']} occurrences) during the run") and "deprecated sampling flag" in line


def test_a_quiet_run_has_no_warning_line(tmp_path):
    cfg = RunConfig(techniques=("plain",), prompts=("helpful",), limit=1, max_tokens=4, out=str(tmp_path / "run"),
                    judge_calibration=False)
    res = profile(cfg, engine=FakeEngine(), scorer=FakeReward(), eval_scorer=FakeReward())
    assert warnings_line(res.run_dir) is None


def test_report_repeats_the_warning_line(tmp_path, capsys):
    from costtax.cli import main

    cfg = RunConfig(techniques=("plain",), prompts=("helpful",), limit=1, max_tokens=4, out=str(tmp_path / "run"),
                    judge_calibration=False)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        res = profile(cfg, engine=WarningEngine(), scorer=FakeReward(), eval_scorer=FakeReward())
    capsys.readouterr()
    assert main(["report", str(res.run_dir)]) in (0, None)
    err = capsys.readouterr().err
    assert "costtax: 1 warning" in err and "deprecated sampling flag" in err
