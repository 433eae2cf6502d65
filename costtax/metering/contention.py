"""How much of our CPUs other processes used while a block ran: the contention gauge.

On a shared machine the same cell can take several times longer because a neighbour's test
suite or engine runs beside it (bench/results/capacity-cpu-2026-11-27/ against its -quiet twin:
one cell's capacity moved several-fold). Timing alone cannot tell that apart from a slow
technique; this gauge can:

    foreign_cpu_share = (busy CPU seconds on our CPUs - our process tree's CPU seconds)
                        / (wall seconds x number of our CPUs)

"Our CPUs" are the ones this process may run on (``os.sched_getaffinity``); their busy time
comes from the per-CPU lines of ``/proc/stat`` (user+nice+system+irq+softirq+steal; idle and
iowait are not busy). Steal counts as busy on purpose: a hypervisor taking our cores is
contention too. Our own CPU seconds are the process tree's (the meter's psutil sampler:
this process, vLLM's engine core and workers, a judge in process).

Caveats, recorded with the number: our tree's CPU can also run outside "our CPUs" when affinity
is not restricted (then it is subtracted from a larger busy total: still right); the psutil
tree misses a child that started and ended between two samples (over-states foreign use
slightly); without ``/proc/stat`` (macOS, Windows), and for blocks shorter than
``MIN_WINDOW_S`` (0.5 s: /proc/stat counts 10 ms ticks), the gauge is ``None``. A GPU's other
tenants are not seen here.

Stdlib only.
"""
from __future__ import annotations

import os
from typing import Optional

_PROC_STAT = "/proc/stat"
# /proc/stat counts in clock ticks (10 ms at the usual USER_HZ=100): over a shorter window one tick
# more or less is a large share, so a block shorter than this gets no share at all.
MIN_WINDOW_S = 0.5


def our_cpus() -> tuple[int, ...]:
    """CPU ids this process may run on."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


def busy_cpu_s(cpus: tuple[int, ...], path: str = _PROC_STAT) -> Optional[float]:
    """Busy CPU seconds so far, summed over `cpus`, from /proc/stat; None where unreadable."""
    want = {f"cpu{i}" for i in cpus}
    try:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        seen = 0
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if not line.startswith("cpu"):
                    break
                parts = line.split()
                if parts[0] not in want:
                    continue
                f = [int(x) for x in parts[1:9]] + [0] * max(0, 8 - len(parts[1:9]))
                # user nice system idle iowait irq softirq steal
                total += f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
                seen += 1
        if seen != len(want):
            return None
        return total / tick
    except (OSError, ValueError, IndexError):
        return None


def foreign_share(busy_s: Optional[float], own_cpu_s: Optional[float], wall_s: float, n_cpus: int) -> Optional[float]:
    """Share of our CPUs' capacity over a window that other processes used, clipped to [0, 1];
    None for windows under MIN_WINDOW_S (tick quantisation) or without readings."""
    if busy_s is None or own_cpu_s is None or wall_s < MIN_WINDOW_S or n_cpus < 1:
        return None
    return min(1.0, max(0.0, busy_s - own_cpu_s) / (wall_s * n_cpus))


class ContentionGauge:
    """Start/stop around a block; `.share(own_cpu_s, wall_s)` after it."""

    def __init__(self, path: str = _PROC_STAT):
        self.path = path
        self.cpus = our_cpus()
        self._b0: Optional[float] = None
        self.busy_s: Optional[float] = None

    def start(self) -> None:
        self._b0 = busy_cpu_s(self.cpus, self.path)

    def stop(self) -> None:
        b1 = busy_cpu_s(self.cpus, self.path)
        self.busy_s = None if self._b0 is None or b1 is None else max(0.0, b1 - self._b0)

    def share(self, own_cpu_s: Optional[float], wall_s: float) -> Optional[float]:
        return foreign_share(self.busy_s, own_cpu_s, wall_s, len(self.cpus))


def sample_now(window_s: float = 1.0, path: str = _PROC_STAT) -> Optional[float]:
    """Other processes' share of our CPUs over the next `window_s` seconds, this process idle
    meanwhile (`costtax doctor`: is this machine quiet enough to measure on right now?)."""
    import time

    g = ContentionGauge(path)
    g.start()
    c0, t0 = time.process_time(), time.perf_counter()
    time.sleep(window_s)
    wall, own = time.perf_counter() - t0, time.process_time() - c0
    g.stop()
    return g.share(own, wall)
