"""RSS and CPU-time sampling of the current process and all its descendants (psutil).

``ProcessTreeSampler`` is a context manager.  It takes a synchronous sample on enter and on
exit and samples every ``interval_s`` in between on a daemon thread.  Each sample walks
``psutil.Process().children(recursive=True)``; processes that vanish mid-walk or deny access
are skipped.  The result is an immutable :class:`ProcessReading` on ``sampler.reading``.

Memory: ``rss_peak_bytes`` is the maximum over samples of the *sum* of RSS over the tree
(``memory_source="process_tree_rss"``).  Shared pages (e.g. copy-on-write after fork, shared
libraries, shared-memory tensors) are counted once per process, so this over-states physical
use for forked workers; allocations that live shorter than the interval can be missed.

CPU: ``cpu_s`` is the user+system CPU time the tree consumed during the window:

* every process seen alive at the end: its own ``user+system`` delta (from its value at
  enter, or from 0 if it was created during the window) plus the delta of its
  ``children_user+children_system`` (time of descendants it reaped during the window,
  including what those had themselves reaped);
* a process that vanished during the window and whose chain of (vanished) ancestors leads to a
  process alive at the end: its whole-lifetime time arrives through that ancestor's
  ``children_*`` delta, so only its pre-window part (its values at enter) is subtracted;
* a vanished process with no such ancestor (re-parented out of the tree, or an ancestor that
  was never seen): its time up to the last sample that saw it.

Not counted: time of descendants that were never sampled (started and exited between two
samples) *unless* they were reaped by a process alive at the end (then the ``children_*``
delta includes them); time after the last sample of processes that left the tree; children
auto-reaped because their parent ignores ``SIGCHLD`` (the kernel does not accumulate those),
and processes not descended from this one (e.g. servers started elsewhere).  A process that is
reaped by a live parent *between* two samples after having been seen is counted exactly.
The total is clamped at 0.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Optional

from .nvml import DEFAULT_INTERVAL_S, clamp_interval

MEMORY_SOURCE = "process_tree_rss"


@dataclass(frozen=True)
class ProcessReading:
    rss_peak_bytes: Optional[int]
    rss_start_bytes: Optional[int]
    cpu_s: Optional[float]
    wall_s: Optional[float]
    samples: int
    n_processes_max: int
    memory_source: str = MEMORY_SOURCE


class _Proc:
    __slots__ = ("pid", "ppid", "parent_key", "base_self", "base_children",
                 "last_self", "last_children", "alive")

    def __init__(self, pid: int, ppid: Optional[int], base_self: float, base_children: float):
        self.pid = pid
        self.ppid = ppid
        self.parent_key: Optional[tuple] = None
        self.base_self = base_self
        self.base_children = base_children
        self.last_self = base_self
        self.last_children = base_children
        self.alive = True


class ProcessTreeSampler:
    """Peak RSS and CPU seconds of this process plus its descendants over a window."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, pid: Optional[int] = None):
        self.interval_s = clamp_interval(interval_s)
        self.pid = os.getpid() if pid is None else int(pid)
        self.reading: Optional[ProcessReading] = None
        self._psutil = None
        self._root = None
        self._root_key: Optional[tuple] = None
        self._procs: dict = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._rss_peak: Optional[int] = None
        self._rss_start: Optional[int] = None
        self._samples = 0
        self._nmax = 0
        self._t0: Optional[float] = None
        self._ok = False

    # -- sampling ------------------------------------------------------------------------
    def _sample(self, first: bool = False) -> None:
        ps = self._psutil
        try:
            procs = [self._root] + self._root.children(recursive=True)
        except (ps.NoSuchProcess, ps.AccessDenied):
            procs = [self._root]
        rss_total = 0
        n = 0
        seen: dict = {}
        pid_to_key: dict = {}
        for p in procs:
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    ppid = p.ppid()
                    ct = p.cpu_times()
                    try:
                        rss = p.memory_info().rss
                    except ps.ZombieProcess:
                        rss = 0  # exited, not yet reaped: no memory, CPU times still readable
            except (ps.NoSuchProcess, ps.AccessDenied, OSError):
                continue
            rss_total += int(rss)
            n += 1
            own = float(ct.user) + float(ct.system)
            reaped = float(getattr(ct, "children_user", 0.0)) + float(
                getattr(ct, "children_system", 0.0))
            seen[key] = (ppid, own, reaped)
            pid_to_key[p.pid] = key
        with self._lock:
            for key, (ppid, own, reaped) in seen.items():
                rec = self._procs.get(key)
                if rec is None:
                    # Present at enter: baseline is its current value.  Created during the
                    # window: everything it has used is in-window, baseline 0.
                    rec = _Proc(key[0], ppid, own if first else 0.0, reaped if first else 0.0)
                    self._procs[key] = rec
                rec.ppid = ppid
                rec.parent_key = pid_to_key.get(ppid, rec.parent_key)
                rec.last_self = max(rec.last_self, own)
                rec.last_children = max(rec.last_children, reaped)
            for key, rec in self._procs.items():
                rec.alive = key in seen
            if n:
                self._samples += 1
                self._nmax = max(self._nmax, n)
                if self._rss_peak is None or rss_total > self._rss_peak:
                    self._rss_peak = rss_total
                if first:
                    self._rss_start = rss_total

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample()
            except Exception:  # noqa: BLE001 - sampler must never raise
                pass

    def _cpu_seconds(self) -> float:
        procs = self._procs

        def has_live_ancestor(rec: _Proc) -> bool:
            hops = 0
            key = rec.parent_key
            while key is not None and hops < 1024:
                parent = procs.get(key)
                if parent is None:
                    return False
                if parent.alive:
                    return True
                key = parent.parent_key
                hops += 1
            return False

        total = 0.0
        for rec in procs.values():
            if rec.alive:
                total += (rec.last_self - rec.base_self) + (rec.last_children - rec.base_children)
            elif has_live_ancestor(rec):
                total -= rec.base_self + rec.base_children
            else:
                total += (rec.last_self - rec.base_self) + (rec.last_children - rec.base_children)
        return max(0.0, total)

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> "ProcessTreeSampler":
        self.reading = None
        self._procs = {}
        self._rss_peak = None
        self._rss_start = None
        self._samples = 0
        self._nmax = 0
        self._ok = False
        self._stop = threading.Event()
        self._thread = None
        self._t0 = time.perf_counter()
        try:
            import psutil

            self._psutil = psutil
            self._root = psutil.Process(self.pid)
            self._root_key = (self._root.pid, self._root.create_time())
            self._sample(first=True)
            self._ok = True
            self._thread = threading.Thread(target=self._run, name="costtax-proc-sampler",
                                            daemon=True)
            self._thread.start()
        except Exception:  # noqa: BLE001
            self._ok = False
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        wall = time.perf_counter() - self._t0 if self._t0 is not None else None
        try:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=max(2.0, 4 * self.interval_s))
            cpu = None
            if self._ok:
                self._sample()
                cpu = self._cpu_seconds()
            self.reading = ProcessReading(
                rss_peak_bytes=self._rss_peak,
                rss_start_bytes=self._rss_start,
                cpu_s=cpu,
                wall_s=wall,
                samples=self._samples,
                n_processes_max=self._nmax,
            )
        except Exception:  # noqa: BLE001
            self.reading = ProcessReading(None, None, None, wall, self._samples, self._nmax)
        return False
