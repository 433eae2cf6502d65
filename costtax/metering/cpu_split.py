"""The CPU split of a metered window by two counters that do not share a total:

* ``harness_cpu_s``: this process's own CPU time (``time.process_time``: the kernel's
  CLOCK_PROCESS_CPUTIME_ID, every thread of the harness: event loop, batcher, in-process reward
  model, the meter's own sampler thread);
* ``engine_cpu_s``: the CPU time of this process's descendants (vLLM's engine core and workers,
  a server started with --serve and its children), read from each descendant's own counters
  (user + system, plus what it reaped) at the window's start and end.

The process-tree sampler (process.py) measures the whole tree a third way (psutil walks at
4 Hz); report/invariants.py checks harness + engine against it. What each side misses, so the
tolerance there has to cover it: a descendant that starts and exits inside the window is
invisible here (the sampler sees it if it lived across a sample); counters tick at 10 ms per
process per read. A server costtax did not start (--base-url) is in neither number.
"""
from __future__ import annotations

import os
import time
from typing import Optional


def _descendant_cpu() -> Optional[dict[tuple[int, float], float]]:
    """{(pid, create_time): CPU seconds so far} for every live descendant; None without psutil."""
    try:
        import psutil

        kids = psutil.Process(os.getpid()).children(recursive=True)
    except Exception:  # noqa: BLE001 - a diagnostic: never fail the window for it
        return None
    out: dict[tuple[int, float], float] = {}
    for p in kids:
        try:
            with p.oneshot():
                t = p.cpu_times()
                key = (p.pid, p.create_time())
            out[key] = t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        except Exception:  # noqa: BLE001 - gone or denied between listing and reading
            continue
    return out


class CpuSplit:
    """start() and stop() around a window; then ``harness_cpu_s`` and ``engine_cpu_s``."""

    def __init__(self):
        self._h0: Optional[float] = None
        self._e0: Optional[dict] = None
        self.harness_cpu_s: Optional[float] = None
        self.engine_cpu_s: Optional[float] = None

    def start(self) -> None:
        self._h0 = time.process_time()
        self._e0 = _descendant_cpu()

    def stop(self) -> None:
        h1 = time.process_time()
        e1 = _descendant_cpu()
        self.harness_cpu_s = None if self._h0 is None else max(0.0, h1 - self._h0)
        if self._e0 is None or e1 is None:
            self.engine_cpu_s = None
            return
        # a descendant born inside the window counts from zero
        self.engine_cpu_s = sum(max(0.0, v - self._e0.get(k, 0.0)) for k, v in e1.items())
