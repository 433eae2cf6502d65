"""The client's gauges (costtax/metering/client_gauge.py) and their summary columns and flag
(report/client.py, report/checks.py): a blocked loop shows as lag, an idle one does not; the
worst cell repeat speaks for the row; the flag fires at CLIENT_LAG_TTFT_SHARE of TTFT."""
from __future__ import annotations

import asyncio
import time

import pytest

from costtax.metering.client_gauge import CLIENT_LAG_FLOOR_S, CLIENT_LAG_TTFT_SHARE, PROFILER_LOOP, ClientGauge, LoopLag, client_record, measured_loop
from costtax.engines.loop_thread import LoopThread
from costtax.report.client import client_columns

pytestmark = pytest.mark.unit


def test_a_blocked_loop_shows_as_lag_and_an_idle_one_does_not():
    async def run(block_s: float) -> list[float]:
        lag = LoopLag(asyncio.get_running_loop(), 0.005).start()
        await asyncio.sleep(0.05)
        time.sleep(block_s)  # the loop cannot run its timer meanwhile
        await asyncio.sleep(0.05)
        return lag.stop()

    idle = asyncio.run(run(0.0))
    blocked = asyncio.run(run(0.2))
    assert len(idle) >= 5 and all(x >= 0 for x in idle)
    assert max(blocked) >= 0.15  # the firing due during the block ran that late
    assert sorted(idle)[len(idle) // 2] < 0.05


def test_gauge_times_the_engines_own_loop_thread_when_it_has_one():
    lt = LoopThread("costtax-openai-client")

    class Served:
        def client_loop(self):
            return lt.thread.name, lt.loop

    try:
        assert measured_loop(Served()) == ("engine:costtax-openai-client", lt.loop)
        assert measured_loop(object())[0] == PROFILER_LOOP

        async def unit():
            with ClientGauge(Served(), interval_s=0.005) as g:
                fut = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), lt.loop)
                await asyncio.wrap_future(fut)
                # block the engine's loop, not the profiler's: only the engine's lag may show it
                lt.loop.call_soon_threadsafe(time.sleep, 0.2)
                await asyncio.sleep(0.35)
            return g.result()

        rec = asyncio.run(unit())
    finally:
        lt.stop()
    assert rec["loop"] == "engine:costtax-openai-client"
    assert rec["lag_max_s"] >= 0.15 and rec["workers"] == 1
    assert 0 <= rec["cpu_share"] and rec["wall_s"] >= 0.3
    assert rec["lag_samples"] >= 10


def test_client_record_quantiles_and_cpu_share():
    rec = client_record([0.0, 0.001, 0.002, 0.003, 0.1], cpu=1.5, wall_s=3.0, loop="profiler", workers=2)
    assert rec["lag_p50_s"] == pytest.approx(0.002)
    assert rec["lag_p99_s"] == pytest.approx(0.003 + (0.1 - 0.003) * 0.96)
    assert rec["lag_max_s"] == 0.1 and rec["lag_samples"] == 5
    assert rec["cpu_share"] == pytest.approx(0.5) and rec["workers"] == 2
    empty = client_record([], cpu=0.0, wall_s=0.0, loop="profiler")
    assert empty["lag_p50_s"] is None and empty["cpu_share"] is None


def test_worst_repeat_speaks_for_the_row():
    units = [
        {"client": {"loop": "engine:x", "lag_p50_s": 0.001, "lag_p99_s": 0.02, "lag_max_s": 0.03, "cpu_share": 0.4, "workers": 1}},
        {"client": {"loop": "engine:x", "lag_p50_s": 0.004, "lag_p99_s": 0.01, "lag_max_s": 0.05, "cpu_share": 0.9, "workers": 1}},
        {"client": {}},  # a unit recorded before the gauge existed
    ]
    row = client_columns(units)
    assert row == {"client_loop": "engine:x", "client_lag_p50_s": 0.004, "client_lag_p99_s": 0.02, "client_lag_max_s": 0.05,
                   "client_cpu_share": 0.9, "client_workers": 1}
    assert set(client_columns([{}]).values()) == {None}


def test_flag_fires_at_the_stated_share_of_ttft():
    import pandas as pd

    from costtax.report.checks import add_checks

    ttft = 0.05
    df = pd.DataFrame([
        {"cell": "plain", "load": "concurrency=2", "status": "ok", "cell_wall_s": 1.0, "technique": "plain", "params": "{}",
         "ttft_p50_s": ttft, "client_lag_p50_s": ttft * CLIENT_LAG_TTFT_SHARE * 0.9},
        {"cell": "plain", "load": "concurrency=256", "status": "ok", "cell_wall_s": 1.0, "technique": "plain", "params": "{}",
         "ttft_p50_s": ttft, "client_lag_p50_s": ttft * CLIENT_LAG_TTFT_SHARE * 1.1},
        {"cell": "plain", "load": "batch", "status": "ok", "cell_wall_s": 1.0, "technique": "plain", "params": "{}",
         "ttft_p50_s": None, "client_lag_p50_s": 0.5},  # no TTFT measured: nothing to compare with
        {"cell": "plain", "load": "concurrency=4", "status": "ok", "cell_wall_s": 1.0, "technique": "plain", "params": "{}",
         "ttft_p50_s": 0.005, "client_lag_p50_s": CLIENT_LAG_FLOOR_S * 0.9},  # a large share of a tiny TTFT: the idle loop's floor
    ])
    out = add_checks(df, pd.DataFrame(), pd.DataFrame(), {})
    assert list(out["flag_client_lag"]) == [False, True, False, False]
    assert list(out["sanity_flags"].fillna("")) == ["", "client_lag", "", ""]
    assert out["client_lag_share_of_ttft"][1] == pytest.approx(CLIENT_LAG_TTFT_SHARE * 1.1)
