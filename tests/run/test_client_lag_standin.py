"""The client lag gauge against the stand-in OpenAI server (bench/standin_server.py, a separate
process with a known TTFT): at concurrency 2 the openai engine's loop keeps up and the lag is a
negligible share of TTFT (no flag); at concurrency 256 with a token every 5 ms the one client
loop cannot read the streams as fast as they arrive, its lag is a visible share of the TTFT it
measures, and the flag's rule (report/client.py, report/checks.py) fires."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from costtax.metering.client_gauge import CLIENT_LAG_TTFT_SHARE, ClientGauge
from costtax.engines.base import GenRequest, SamplingSpec
from costtax.engines.openai import OpenAIEngine
from costtax.load.levels import LoadLevel, drive
from costtax.report.client import lag_share_of_ttft

pytestmark = pytest.mark.integration

SERVER = Path(__file__).resolve().parents[2] / "bench" / "standin_server.py"


def standin(*args: str):
    """Start the stand-in server; returns (process, base_url)."""
    proc = subprocess.Popen([sys.executable, str(SERVER), "--port", "0", *args], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line and line[0] == "ready", "the stand-in server did not start"
    return proc, f"http://127.0.0.1:{line[1]}/v1"


def measure(base_url: str, concurrency: int, answers: int, max_tokens: int) -> dict:
    eng = OpenAIEngine(base_url)
    eng.start()
    sampling = SamplingSpec(max_tokens=max_tokens, temperature=0.0)
    ttfts: list[float] = []

    async def one(i: int) -> None:
        res = await eng.agenerate(GenRequest(f"r{i}", ({"role": "user", "content": f"question {i}"},)), sampling)
        ttfts.append(res.t_first_token_s - res.t_submit_s)

    async def unit():
        with ClientGauge(eng) as g:
            await drive(LoadLevel("concurrency", concurrency), list(range(answers)), one)
        return g.result()

    try:
        rec = asyncio.run(unit())
    finally:
        eng.close()
    ttfts.sort()
    return {**rec, "ttft_p50_s": ttfts[len(ttfts) // 2]}


def test_no_flag_at_low_concurrency_and_a_flag_where_the_client_saturates():
    # a server with a TTFT of 200 ms: a lag of a few ms (this shared machine's scheduling) is 1-2%
    proc, url = standin("--ttft-ms", "200", "--token-ms", "20")
    try:
        low = measure(url, concurrency=2, answers=8, max_tokens=8)
    finally:
        proc.terminate()
        proc.wait(10)
    proc, url = standin("--ttft-ms", "50", "--token-ms", "5")
    try:
        high = measure(url, concurrency=256, answers=512, max_tokens=64)
    finally:
        proc.terminate()
        proc.wait(10)
    for rec in (low, high):
        assert rec["loop"] == "engine:costtax-openai-client" and rec["lag_samples"] > 10
    low_share = lag_share_of_ttft({"client_lag_p50_s": low["lag_p50_s"], "ttft_p50_s": low["ttft_p50_s"]})
    high_share = lag_share_of_ttft({"client_lag_p50_s": high["lag_p50_s"], "ttft_p50_s": high["ttft_p50_s"]})
    print(f"low: {low} share {low_share:.3f}; high: {high} share {high_share:.3f}")
    assert low_share < CLIENT_LAG_TTFT_SHARE, low
    assert high_share >= CLIENT_LAG_TTFT_SHARE, high
    assert high["cpu_share"] > low["cpu_share"]
