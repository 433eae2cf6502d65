"""The contention gauge (costtax/metering/contention.py): /proc/stat arithmetic on a written file,
and a real neighbour (a busy process outside our process tree) seen by ResourceMeter."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from costtax.metering import ResourceMeter
from costtax.metering.contention import ContentionGauge, busy_cpu_s, foreign_share, our_cpus

pytestmark = pytest.mark.integration

TICK = os.sysconf("SC_CLK_TCK")


def _stat(path, rows):
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"] + [f"cpu{i} " + " ".join(str(x) for x in r) for i, r in enumerate(rows)] + ["intr 1 2 3"]
    path.write_text("\n".join(lines) + "\n")


def test_busy_time_counts_our_cpus_and_steal_not_idle(tmp_path):
    p = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    _stat(p, [(100, 1, 10, 5000, 70, 2, 3, 4, 0, 0), (50, 0, 5, 9000, 0, 0, 0, 0, 0, 0), (999, 0, 0, 0, 0, 0, 0, 0, 0, 0)])
    assert busy_cpu_s((0,), str(p)) == pytest.approx((100 + 1 + 10 + 2 + 3 + 4) / TICK)
    assert busy_cpu_s((0, 1), str(p)) == pytest.approx((120 + 55) / TICK)  # cpu2 is not ours
    assert busy_cpu_s((0, 7), str(p)) is None  # a CPU we may use but cannot read: no guess
    assert busy_cpu_s((0,), str(tmp_path / "absent")) is None


def test_foreign_share_arithmetic():
    assert foreign_share(3.0, 1.0, 2.0, 2) == pytest.approx(0.5)  # 2 of 4 CPU-seconds were someone else's
    assert foreign_share(1.0, 1.5, 2.0, 2) == 0.0  # our tree ran partly elsewhere: never negative
    assert foreign_share(10.0, 0.0, 1.0, 2) == 1.0  # clipped
    assert foreign_share(None, 1.0, 1.0, 2) is None and foreign_share(1.0, None, 1.0, 2) is None
    assert foreign_share(1.0, 1.0, 0.0, 2) is None
    assert foreign_share(0.01, 0.0, 0.002, 2) is None  # one 10 ms tick in a 2 ms window says nothing


def test_gauge_reads_a_changing_file(tmp_path):
    p = tmp_path / "stat"
    _stat(p, [(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)] * 2)
    g = ContentionGauge(str(p))
    g.cpus = (0, 1)
    g.start()
    _stat(p, [(3 * TICK, 0, 0, 0, 0, 0, 0, 0, 0, 0), (TICK, 0, 0, 0, 0, 0, 0, 0, 0, 0)])
    g.stop()
    assert g.busy_s == pytest.approx(4.0)
    assert g.share(own_cpu_s=1.0, wall_s=2.0) == pytest.approx(0.75)


def _neighbour(seconds: float, cpus) -> int:
    """A busy loop in a process that is NOT our descendant (its shell parent exits at once, so it
    is re-parented and the meter's process tree never contains it); returns its pid."""
    pin = "" if not hasattr(os, "sched_setaffinity") else f"os.sched_setaffinity(0, {{{cpus[0]}}}); "
    code = f"import os, time; {pin}t = time.time() + {seconds}\nwhile time.time() < t: pass"
    out = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{code}" >/dev/null 2>&1 & echo $!'],
                         check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def _stop(pids) -> None:
    """Neighbours must not outlive their test: later tests time things."""
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs /proc/stat (Linux)")
def test_meter_sees_a_busy_neighbour_outside_its_process_tree():
    """The neighbour's own CPU seconds during the window must show up as foreign busy time: a
    lower bound that holds however busy the rest of the machine is (the share is clipped at 1
    only when everything else is busy too, and then foreign time is all the more)."""
    import psutil

    cpus = our_cpus()
    pid = _neighbour(4.0, cpus)
    proc = psutil.Process(pid)
    time.sleep(0.3)  # let it start
    c0 = sum(proc.cpu_times()[:2])
    with ResourceMeter() as busy:
        time.sleep(1.5)
    neighbour_cpu_s = sum(proc.cpu_times()[:2]) - c0
    _stop([pid])
    r = busy.reading
    assert r.foreign_cpu_share is not None and r.cpu_s is not None
    foreign_s = r.foreign_cpu_share * r.wall_s * len(cpus)
    assert neighbour_cpu_s > 0.2  # the neighbour really ran
    assert foreign_s >= min(0.8 * neighbour_cpu_s, 0.95 * r.wall_s * len(cpus) - r.cpu_s), (foreign_s, neighbour_cpu_s)
    assert r.cpu_s < 0.5  # the busy loop is not billed to us


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs /proc/stat (Linux)")
def test_a_busy_machine_is_said_before_the_cells_run(tmp_path):
    """The engine start is metered: a neighbour busy through it gets a status line up front, and
    the share is in run.json's engine_start meter."""
    import json

    from costtax.config import RunConfig
    from costtax.run.profile import profile
    from fakes import FakeEngine, FakeReward

    cpus = our_cpus()

    class SlowStart(FakeEngine):
        def start(self):
            # one busy loop per CPU we may use: the share is unmistakable
            self.pids = [_neighbour(2.0, cpus[i:] + cpus[:i]) for i in range(len(cpus))]
            time.sleep(1.5)
            return super().start()

    seen = []
    cfg = RunConfig(techniques=("plain",), prompts=("helpful",), limit=1, max_tokens=4, out=str(tmp_path / "run"), judge_calibration=False)
    engine = SlowStart()
    try:
        res = profile(cfg, engine=engine, scorer=FakeReward(), eval_scorer=FakeReward(),
                      on_event=lambda kind, data: seen.append(data.get("msg")) if kind == "status" else None)
    finally:
        _stop(getattr(engine, "pids", []))
    busy = [m for m in seen if m and m.startswith("machine busy: other processes kept")]
    share = json.loads((res.run_dir / "run.json").read_text())["engine_start"]["meter"]["foreign_cpu_share"]
    assert share > 0.25 and len(busy) == 1, (share, seen)


def test_a_server_costtax_did_not_start_gets_no_share():
    """--engine openai against someone else's server: its work is outside our process tree, so on
    this machine it would read as a neighbour's. The share is left empty, the rest kept."""
    from types import SimpleNamespace

    from costtax.run.startup import StartedModels, meter_reading

    class Meter:
        def result(self):
            return SimpleNamespace(as_dict=lambda: {"cpu_s": 1.0, "foreign_cpu_share": 0.7})

    assert meter_reading(Meter()) == {"cpu_s": 1.0, "foreign_cpu_share": 0.7}
    assert meter_reading(Meter(), external=True) == {"cpu_s": 1.0, "foreign_cpu_share": None}
    openai = SimpleNamespace(name="openai")
    assert StartedModels(engine=openai).external_server is True
    assert StartedModels(engine=openai, server=object()).external_server is False  # --serve: our child
    assert StartedModels(engine=SimpleNamespace(name="vllm")).external_server is False


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs /proc/stat (Linux)")
def test_doctor_samples_the_neighbours_now():
    """`costtax doctor` says whether the machine is quiet enough to measure on: a neighbour busy on
    every CPU we may use during its 1 s sample makes it say busy."""
    from costtax.doctor import run_doctor
    from costtax.metering.contention import sample_now

    cpus = our_cpus()
    # outlive the doctor's own checks (torch import) before its sample; stopped when done
    pids = [_neighbour(8.0, cpus[i:] + cpus[:i]) for i in range(len(cpus))]
    try:
        time.sleep(0.3)
        assert sample_now(1.0) > 0.5
        line = [x for x in run_doctor() if x.startswith("neighbours")]
    finally:
        _stop(pids)
    assert len(line) == 1 and "busy: timings measured now would be inflated" in line[0], line
