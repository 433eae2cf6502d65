"""With vLLM's real server: SIGKILL of `costtax profile --serve` in the middle of a run leaves
no process of that run's server alive, its engine core (`VLLM::EngineCore`) included. One
server start (~1-2 min on 2 cores)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def _stat(pid: int) -> list[str] | None:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return st[st.rfind(")") + 2:].split()


def _of_run(run: Path) -> list[tuple[int, str]]:
    """Live processes whose environment names this run directory (the server, its engine core)."""
    out = []
    for e in Path("/proc").iterdir():
        if not e.name.isdigit():
            continue
        try:
            env = (e / "environ").read_bytes()
            cmd = (e / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        f = _stat(int(e.name))
        if f and f[0] not in "ZX" and f"COSTTAX_RUN_DIR={run.resolve()}".encode() in env.split(b"\0"):
            out.append((int(e.name), cmd))
    return out


def test_sigkill_of_costtax_leaves_no_engine_core_of_the_run(tmp_path):
    pytest.importorskip("vllm", reason="vllm not installed (make setup installs it)")
    from costtax.model_files import DEFAULT_MODEL, EMBEDDED

    if EMBEDDED[DEFAULT_MODEL].source_path() is None:
        pytest.skip("embedded model not installed")
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "costtax", "profile", "--serve", "-t", "plain", "--limit", "8", "--max-tokens", "256",
           "--ignore-eos", "--eval-reward-model", "none", "--no-judge-calibration", "--warmup-answers", "0",
           "--serve-arg=--max-num-seqs=4", "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 900
        # in the middle of the load level: generation calls are in flight
        while time.monotonic() < deadline and proc.poll() is None:
            calls = run / "calls.jsonl"
            if calls.exists() and calls.read_text().strip():
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        rec = json.loads((run / "run.json").read_text())["servers"][0]
        procs = _of_run(run)
        assert any("VLLM::EngineCore" in c for _, c in procs), procs  # the engine core is there to be left behind
        assert all(_stat(p)[2] == str(rec["pgid"]) for p, _ in procs)  # ... in the recorded process group
        assert rec["serve_args"] == ["--max-num-seqs=4"] and "--max-num-seqs=4" in rec["command"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        t0 = time.monotonic()
        while _of_run(run) and time.monotonic() - t0 < 40:  # SIGTERM, SIGKILL after the 20 s grace
            time.sleep(0.2)
        left = _of_run(run)
        print(f"\nserver group {rec['pgid']} gone {time.monotonic() - t0:.1f} s after SIGKILL of costtax; left: {left}")
        assert left == []
        log = (run / "server.log").read_text()
        assert "--max-num-seqs=4" in log.splitlines()[0]  # --serve-arg reached the real server's command line
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid, _ in _of_run(run):
            os.kill(pid, signal.SIGKILL)
