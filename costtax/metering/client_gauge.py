"""The client's own gauges during a load level: is the client the bottleneck?

Under load the event loop that sends the requests and reads their streams is part of what is
measured: a chunk that reached the socket waits until the loop gets round to it, and that wait is
in the TTFT and latency the client records. Two gauges per unit, recorded as the cells.jsonl
`client` dict (costtax/store/records.py):

- **loop lag**: a timer re-armed every `LAG_INTERVAL_S` on the measured loop; each firing records
  its lateness (actual - scheduled time). An idle loop fires within about a millisecond (epoll
  waits in whole milliseconds); a loop busy parsing 256 streams fires as late as its backlog.
  `lag_p50_s`, `lag_p99_s`, `lag_max_s` over the unit's load window, `lag_samples` firings.
- **CPU share**: the client's CPU seconds (process user + system time, all threads) over the
  window's wall seconds, summed over the client's processes (`cpu_share` 1.0 = one core busy; one
  Python process tops out near 1.0, the GIL). For an in-process engine (vLLM, HF) the process is
  engine and client at once, so the share counts the engine's host work too.

Which loop (`loop`): `engine:<thread>` for an engine that owns the loop its requests run on
(`client_loop()`, the openai engine's `costtax-openai-client` thread); `profiler` otherwise (the
loop the unit runner drives the answers on, in-process engines). With `--client-workers N`
the lag samples of every worker's loop are pooled and their CPU added (`workers` = N).
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Sequence

LAG_INTERVAL_S = 0.010  # the timer's period: 100 firings a second, far below the loop's own work
PROFILER_LOOP = "profiler"


def cpu_s() -> float:
    """This process's CPU seconds so far (user + system, every thread)."""
    return time.process_time()


class LoopLag:
    """A periodic timer on `loop` recording how late each firing ran. start()/stop() may be
    called from any thread; samples are read after stop()."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float = LAG_INTERVAL_S):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.loop, self.interval_s = loop, interval_s
        self.samples: list[float] = []
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()

    def _arm(self) -> None:
        if self._stopped.is_set():
            return
        self._due = self.loop.time() + self.interval_s
        self._handle = self.loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        # asyncio may run a timer up to clock_resolution early: never a negative lateness
        self.samples.append(max(0.0, self.loop.time() - self._due))
        self._arm()

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def start(self) -> "LoopLag":
        self.loop.call_soon_threadsafe(self._arm)
        return self

    def stop(self) -> list[float]:
        self._stopped.set()
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._cancel)
            except RuntimeError:  # loop closed meanwhile
                pass
        return list(self.samples)


def _quantile(xs: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default), None for no samples."""
    if not xs:
        return None
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def client_record(samples: Sequence[float], cpu: float, wall_s: float, loop: str, workers: int = 1) -> dict[str, Any]:
    """The cells.jsonl `client` dict from pooled lag samples and the client's CPU seconds."""
    return {
        "loop": loop,
        "lag_p50_s": _quantile(samples, 0.50),
        "lag_p99_s": _quantile(samples, 0.99),
        "lag_max_s": max(samples) if samples else None,
        "lag_samples": len(samples),
        "lag_interval_s": LAG_INTERVAL_S,
        "cpu_s": cpu,
        "wall_s": wall_s,
        "cpu_share": (cpu / wall_s) if wall_s > 0 else None,
        "workers": workers,
    }


def measured_loop(engine) -> tuple[str, asyncio.AbstractEventLoop | None]:
    """(name, loop) of the loop that sends and reads `engine`'s requests: the engine's own
    (`client_loop()`), else (`profiler`, None): the caller's running loop."""
    fn = getattr(engine, "client_loop", None)
    got = fn() if fn is not None else None
    if got is not None:
        name, loop = got
        return f"engine:{name}", loop
    return PROFILER_LOOP, None


class ClientGauge:
    """Lag of the loop that sends `engine`'s requests, and this process's CPU, over a window.
    Enter inside the profiler's running loop (async with or with), read `result()` after."""

    def __init__(self, engine, interval_s: float = LAG_INTERVAL_S):
        self.name, loop = measured_loop(engine)
        self._loop = loop
        self.interval_s = interval_s
        self._lag: LoopLag | None = None
        self._t0 = self._cpu0 = 0.0
        self.samples: list[float] = []
        self.cpu_s = self.wall_s = 0.0

    def __enter__(self) -> "ClientGauge":
        loop = self._loop or asyncio.get_running_loop()
        self._lag = LoopLag(loop, self.interval_s).start()
        self._t0, self._cpu0 = time.monotonic(), cpu_s()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.monotonic() - self._t0
        self.cpu_s = cpu_s() - self._cpu0
        self.samples = self._lag.stop() if self._lag is not None else []

    def result(self, workers: int = 1) -> dict[str, Any]:
        return client_record(self.samples, self.cpu_s, self.wall_s, self.name, workers)


# The sanity flag `client_lag` (costtax/report/checks.py): the client's median loop lag is at
# least this share of the median TTFT it measured. A first token crosses the client's loop
# several times before it is timestamped (the hop onto the engine's loop, sending the request,
# reading the headers, reading the first chunk), each time waiting about one lag, so the client's
# part of a TTFT is a multiple of its median lag: at 4% that part is visible (a quarter of the
# TTFT or more when the first token crosses the loop six times). On the stand-in
# server (tests/run/test_client_lag_standin.py; measured shares in bench/results/client-lag-*.json)
# concurrency 2 stays well below it and concurrency 256, where the client saturates, above it.
CLIENT_LAG_TTFT_SHARE = 0.04
# ...and only above the loop's own floor: an idle asyncio loop already fires a timer about 1 ms
# late (epoll's millisecond granularity), so against a TTFT of a few milliseconds (fake or very
# fast engines) the share crosses 4 % with a loop that is doing nothing. A median lag under
# twice that floor is no evidence that the client saturates, whatever the TTFT.
CLIENT_LAG_FLOOR_S = 0.002
