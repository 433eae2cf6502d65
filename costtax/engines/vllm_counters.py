"""vLLM's scheduler statistics, kept by a stat logger of ours: every scheduler step's
SchedulerStats (cumulative prefix-cache queries and hits, preemptions, KV-cache usage, running
and waiting requests) with each gauge's peak per named window. No polling thread."""
from __future__ import annotations

import threading
from typing import Any


class SchedulerCounters:
    """A vLLM per-engine stat logger (duck-typed StatLoggerBase): vLLM's output handler calls
    `record` with every scheduler step's SchedulerStats, on the engine's loop thread. We keep
    cumulative prefix-cache counters (the same sums vLLM's Prometheus counters hold), the last
    value of each gauge, and each gauge's peak since the last `take_peaks(window)` of a named
    window (windows are independent: counters() and generate() each have their own)."""

    GAUGES = ("kv_cache_usage", "num_requests_running", "num_requests_waiting")

    def __init__(self):
        self._lock = threading.Lock()
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.preempted_requests = 0
        self.scheduler_steps = 0
        self.last = dict.fromkeys(self.GAUGES, 0.0)
        self.windows: dict[str, dict[str, float]] = {}
        self._since_start = dict.fromkeys(self.GAUGES, 0.0)

    # vLLM calls these -------------------------------------------------------------------------
    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
        if scheduler_stats is None:
            return
        pc = scheduler_stats.prefix_cache_stats
        now = {
            "kv_cache_usage": float(scheduler_stats.kv_cache_usage),
            "num_requests_running": float(scheduler_stats.num_running_reqs),
            # vLLM's Prometheus gauge counts deferred waiting requests too
            "num_requests_waiting": float(scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs),
        }
        with self._lock:
            self.scheduler_steps += 1
            if pc is not None:
                self.prefix_cache_queries += int(pc.queries)
                self.prefix_cache_hits += int(pc.hits)
                self.preempted_requests += int(getattr(pc, "preempted_requests", 0))
            self.last = now
            for peaks in (self._since_start, *self.windows.values()):
                for k, v in now.items():
                    if v > peaks[k]:
                        peaks[k] = v

    def log(self) -> None:
        pass

    def log_engine_initialized(self) -> None:
        pass

    def record_sleep_state(self, is_awake: int, level: int) -> None:
        pass

    # we call these ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "prefix_cache_queries": self.prefix_cache_queries,
                "prefix_cache_hits": self.prefix_cache_hits,
                "preempted_requests": self.preempted_requests,
                "scheduler_steps": self.scheduler_steps,
                **self.last,
            }

    def take_peaks(self, window: str) -> dict[str, float]:
        """Each gauge's peak since the previous call for `window` (since start for the first);
        starts the next window at the current values."""
        with self._lock:
            peaks = dict(self.windows.get(window, self._since_start))
            self.windows[window] = dict(self.last)
        return peaks
