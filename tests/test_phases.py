"""Every long phase of a run shows that it is alive (issue 20): phase events, how the display
shows them on and off a terminal, and that profile() announces each phase with its count."""
from __future__ import annotations

import io
import re
import time

import pytest

from costtax.config import RunConfig
from costtax.console.display import RunDisplay, log_stage
from costtax.console.live_line import progress_line as _progress_line
from costtax.phases import phase
from costtax.run.profile import profile
from fakes import FakeReward, TimedEngine

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:NVML unavailable")]


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_phase_events_carry_count_duration_and_outcome():
    got = []
    with phase(lambda k, d: got.append((k, d)), "loading", total=4, unit="pairs") as ph:
        ph.update(1)
        ph.advance(2)
        time.sleep(0.05)
    with pytest.raises(RuntimeError):
        with phase(lambda k, d: got.append((k, d)), "failing"):
            raise RuntimeError("x")
    kinds = [k for k, _ in got]
    assert kinds == ["phase_start", "phase_progress", "phase_progress", "phase_end", "phase_start", "phase_end"]
    assert got[0][1]["total"] == 4 and got[0][1]["unit"] == "pairs"
    assert [d["done"] for k, d in got if k == "phase_progress"] == [1, 3]
    assert got[3][1]["ok"] is True and got[3][1]["wall_s"] >= 0.05
    assert got[5][1]["ok"] is False and got[5][1]["id"] != got[0][1]["id"]


def test_off_a_terminal_a_line_at_each_phase_start_and_end():
    buf = io.StringIO()
    d = RunDisplay(buf, tty=False)
    with phase(d, "starting vllm engine"):
        pass
    with pytest.raises(KeyError):
        with phase(d, "measuring the reward model", total=10, unit="pairs") as ph:
            ph.update(5)
            raise KeyError("boom")
    d.close()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "costtax: starting vllm engine ..."
    assert re.fullmatch(r"costtax: starting vllm engine: done in \d+\.\d s", lines[1])
    assert lines[2] == "costtax: measuring the reward model ..."
    assert re.fullmatch(r"costtax: measuring the reward model: stopped in \d+\.\d s", lines[3])
    assert len(lines) == 4  # progress events print nothing off a terminal


def test_on_a_terminal_a_live_line_moves_while_the_main_thread_blocks(tmp_path):
    """The engine start blocks the main thread; rich's refresh thread keeps the line moving:
    elapsed time, and the log's last line naming the stage."""
    log = tmp_path / "server.log"
    log.write_text("(APIServer pid=7) INFO 12-02 09:30:01 [api_server.py:1] an earlier session's last line\n")
    buf = io.StringIO()
    d = RunDisplay(buf, tty=True, width=80)
    with phase(d, "starting vLLM's OpenAI server (polling /health)", log=str(log), hint="launching the server"):
        time.sleep(0.6)  # blocked, as in ServedVllm.__enter__; the server's log grows meanwhile
        with open(log, "a") as f:
            f.write("(EngineCore pid=9) INFO 12-02 09:40:03 [gpu_model_runner.py:2] Loading weights took 0.52 seconds\n")
        time.sleep(0.9)
    d.close()
    frames = [f for f in _plain(buf.getvalue()).split("\r") if "starting vLLM" in f]
    assert len(frames) >= 3  # refreshed while blocked
    assert any("0:00:01" in f for f in frames)
    assert any("launching the server" in f for f in frames)  # before the log has a line of this start
    assert any("Loading weights took 0.52" in f for f in frames)  # then the stage, from the log
    assert not any("earlier session" in f for f in frames)
    assert "costtax: starting vLLM's OpenAI server (polling /health): done in 1." in _plain(buf.getvalue())


def test_counted_phase_and_cells_show_done_of_total_never_unknown():
    buf = io.StringIO()
    d = RunDisplay(buf, tty=True, width=80)
    with phase(d, "warm-up bon:n=4 (discarded)", total=8, unit="answers") as ph:
        ph.update(3)
        d.progress.refresh()
        assert "3/8 answers" in _plain(buf.getvalue())
    d("cell_start", {"cell": "bon:n=4"})
    d("unit_start", {"cell": "bon:n=4", "total": 8, "done": 0})
    d.progress.refresh()
    d("answer_done", {"cell": "bon:n=4", "done": 2, "total": 8})
    d.progress.refresh()
    d.close()
    out = _plain(buf.getvalue())
    assert "0/8 answers" in out and "2/8 answers" in out and "/?" not in out


@pytest.mark.parametrize("width", [80, 120])
def test_a_live_line_fits_the_terminal(width):
    from rich.progress import Progress

    p = Progress()
    for desc, total, done in (("measuring the reward model on public human labels (pyrit; cached afterwards)", 80, 17),
                              ("cai:rounds=1 [concurrency=16, repeat 2]", 64, 0), ("starting vllm engine", None, 0)):
        t = p.add_task(desc, total=total, completed=done, unit="pairs")
        line = _progress_line(p._tasks[t], width - 1, None)
        assert len(line) <= width - 1
        if total:
            assert f"{done}/{total} pairs" in line


def test_log_stage_strips_the_prefix_and_survives_a_missing_file(tmp_path):
    p = tmp_path / "engine.log"
    p.write_text("x\nINFO 12-02 09:40:01 [core.py:123] init engine (profile, create kv cache) took 3.1 seconds\n\n")
    assert log_stage(p) == "init engine (profile, create kv cache) took 3.1 seconds"
    assert log_stage(tmp_path / "nope.log") == ""


def test_a_display_error_never_stops_the_run():
    buf = io.StringIO()
    d = RunDisplay(buf, tty=False)
    d("phase_end", {"id": 1})  # malformed: no phase name
    d("cell_done", {"cell": "plain"})  # malformed: no answers
    assert buf.getvalue().count("progress display error") == 1


def test_profile_announces_each_phase_with_its_count(tmp_path):
    events = []
    cfg = RunConfig(techniques=("bon:n=2",), prompts=("helpful",), limit=3, max_tokens=8, out=str(tmp_path / "r"),
                    judge_calibration=False, warmup_answers=2)
    scorer = FakeReward()
    profile(cfg, engine=TimedEngine(base_s=0.001), scorer=scorer, eval_scorer=scorer, on_event=lambda k, d: events.append((k, d)))
    starts = {d["id"]: d for k, d in events if k == "phase_start"}
    ends = {d["id"]: d for k, d in events if k == "phase_end"}
    assert set(starts) == set(ends)  # every phase that starts ends
    names = [d["phase"] for d in starts.values()]
    assert any(n.startswith("starting ") and "engine" in n for n in names)
    warm = [d for d in starts.values() if d["phase"].startswith("warm-up ")]
    assert [w["total"] for w in warm] == [2, 2] and all(w["unit"] == "answers" for w in warm)
    for w in warm:  # its own count, up to its total
        assert max(d["done"] for k, d in events if k == "phase_progress" and d["id"] == w["id"]) == 2
    scoring = [d for d in starts.values() if d["phase"].startswith("scoring ")]
    assert len(scoring) == 2 and all(s["total"] == 3 for s in scoring)
    for sc in scoring:  # counted up to its total as the evaluation reward model scores
        assert max(d["done"] for k, d in events if k == "phase_progress" and d["id"] == sc["id"]) == 3
    assert "rebuilding summary.csv and plots" in names and any(n.startswith("shutting down") for n in names)
    units = [d for k, d in events if k == "unit_start"]
    assert all(u["total"] == 3 for u in units)
