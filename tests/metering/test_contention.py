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


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs /proc/stat (Linux)")
def test_meter_sees_a_busy_neighbour_outside_its_process_tree():
    cpus = our_cpus()
    with ResourceMeter() as quiet:
        time.sleep(1.0)
    # a busy loop in a process that is NOT our descendant: its shell parent exits at once, so
    # it is re-parented and the meter's process tree never contains it
    pin = f"os.sched_setaffinity(0, {{{cpus[0]}}}); " if hasattr(os, "sched_setaffinity") else ""
    code = f"import os, time; {pin}t = time.time() + 3\nwhile time.time() < t: pass"
    subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{code}" >/dev/null 2>&1 &'], check=True)
    time.sleep(0.3)  # let it start
    with ResourceMeter() as busy:
        time.sleep(1.5)
    q, b = quiet.reading.foreign_cpu_share, busy.reading.foreign_cpu_share
    assert q is not None and b is not None
    # one of our n CPUs kept busy by someone else: about 1/n more than the quiet window
    assert b - q > 0.5 / len(cpus), (q, b, len(cpus))
    assert busy.reading.cpu_s is not None and busy.reading.cpu_s < 0.5  # the busy loop is not billed to us
