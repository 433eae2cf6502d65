"""`--serve` launcher. Lifecycle tests run a fake "python" (a script that ignores `-m vllm...`,
serves /health on --port and forks a child into its process group, like vLLM's engine core);
one slow test starts the real vLLM OpenAI server on the tiny Llama and profiles through it."""
from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from costtax.engines.serve import ServedVllm, ServerStartError, group_alive

pytestmark = pytest.mark.integration

FAKE_LAUNCHER = r'''#!{python}
import os, sys, time, subprocess
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
mode = os.environ.get("FAKE_MODE", "ok")
print("fake server args:", " ".join(args), flush=True)
print("dev mode:", os.environ.get("VLLM_SERVER_DEV_MODE"), flush=True)
CHILD = """
import os, signal, time
if os.environ.get("FAKE_MODE") == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(600)
"""
child = subprocess.Popen([sys.executable, "-c", CHILD])
with open(os.environ["FAKE_CHILD_FILE"], "w") as f:
    f.write(str(child.pid))
if mode == "port_taken_once" and not os.path.exists(os.environ["FAKE_CHILD_FILE"] + ".tried"):
    open(os.environ["FAKE_CHILD_FILE"] + ".tried", "w").close()
    print("OSError: [Errno 98] Address already in use", flush=True)
    print("(traceback continues)", flush=True)
    sys.exit(1)
if mode == "crash":
    print("RuntimeError: fake engine failed to start", flush=True)
    sys.exit(3)
if mode == "stubborn":
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "never_healthy":
    time.sleep(600)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        code = 200 if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "fake-python"
    path.write_text(FAKE_LAUNCHER.replace("{python}", sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _served(tmp_path, fake_python, mode, **kw):
    child_file = tmp_path / f"child-{mode}.pid"
    served = ServedVllm(
        tmp_path / "model", tmp_path / "run" / "server.log", python=fake_python, device="cpu",
        env={"FAKE_MODE": mode, "FAKE_CHILD_FILE": str(child_file)}, **kw,
    )
    return served, child_file


def _pid_alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st[st.rfind(")") + 2] not in "ZX"


def test_serve_starts_waits_for_health_and_stops_the_group(tmp_path, fake_python):
    served, child_file = _served(tmp_path, fake_python, "ok", health_timeout_s=60)
    with served:
        assert served.alive()
        import httpx

        assert httpx.get(f"{served.root_url}/health").status_code == 200
        assert served.base_url == f"http://127.0.0.1:{served.port}/v1"
        pgid = served.pgid
        child = int(child_file.read_text())
        assert os.getpgid(child) == pgid  # the engine-core stand-in is in the server's group
        assert pgid != os.getpgid(0)  # ... which is not ours: Ctrl-C at the terminal does not hit it first
        prov = served.provenance()
        assert prov["start_s"] > 0 and prov["log_path"].endswith("server.log")
        kw = served.engine_kwargs()
        assert kw["base_url"] == served.base_url and kw["url_field"] == "--serve"
        assert kw["tokenizer"] == served.model_name == str(tmp_path / "model") and kw["launch"]["pid"] == pgid
    assert not served.alive() and not group_alive(pgid) and not _pid_alive(child)
    log = (tmp_path / "run" / "server.log").read_text()
    cmd = served.command
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    for flag in ("--enable-prompt-tokens-details", "--enable-per-request-metrics", "--enforce-eager"):
        assert flag in cmd
    assert cmd[cmd.index("--dtype") + 1] == "float32" and cmd[cmd.index("--block-size") + 1] == "32"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert "dev mode: 1" in log and "fake server args:" in log  # env and output went to the log
    assert served.env_used["VLLM_SERVER_DEV_MODE"] == "1" and served.env_used["VLLM_CPU_KVCACHE_SPACE"] == "1"
    served.stop()  # idempotent


def test_serve_process_exiting_during_start_names_the_log(tmp_path, fake_python):
    served, child_file = _served(tmp_path, fake_python, "crash", health_timeout_s=60)
    with pytest.raises(ServerStartError) as ei:
        served.start()
    msg = str(ei.value)
    assert msg.startswith("--serve:") and "exited with code 3" in msg and "server.log" in msg
    assert "fake engine failed to start" in msg and "\n" not in msg
    time.sleep(0.2)
    assert not _pid_alive(int(child_file.read_text()))  # the orphaned child was killed too


def test_serve_retries_on_another_port_when_the_port_was_taken(tmp_path, fake_python):
    served, child_file = _served(tmp_path, fake_python, "port_taken_once", health_timeout_s=60)
    with served:
        assert served.alive()
        log = (tmp_path / "run" / "server.log").read_text()
        assert log.count("# costtax --serve:") == 2 and "Address already in use" in log
        assert served.provenance()["command"] == served.command and str(served.port) in served.command


def test_serve_health_timeout_stops_everything(tmp_path, fake_python):
    served, child_file = _served(tmp_path, fake_python, "never_healthy", health_timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(ServerStartError, match=r"not healthy after 2 s; see .*server.log"):
        with served:
            pytest.fail("the body must not run")
    assert time.monotonic() - t0 < 30
    assert not _pid_alive(int(child_file.read_text())) and served.proc is None


def test_serve_ctrl_c_during_start_stops_the_group(tmp_path, fake_python):
    served, child_file = _served(tmp_path, fake_python, "never_healthy", health_timeout_s=60)
    # a KeyboardInterrupt raised in the wait loop, as Ctrl-C would. Python's own SIGINT handler,
    # whatever an earlier test in this process (vLLM, the CLI) installed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.5, lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            served.start()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert served.proc is None and not _pid_alive(int(child_file.read_text()))


def test_serve_sigkills_a_group_that_ignores_sigterm(tmp_path, fake_python):
    served, child_file = _served(tmp_path, fake_python, "stubborn", health_timeout_s=60, stop_grace_s=1.0)
    with served:
        pgid = served.pgid
    assert not group_alive(pgid) and not _pid_alive(int(child_file.read_text()))


def test_serve_failure_inside_the_block_stops_the_server(tmp_path, fake_python):
    served, child_file = _served(tmp_path, fake_python, "ok", health_timeout_s=60)
    with pytest.raises(RuntimeError, match="cell failed"):
        with served:
            pgid = served.pgid
            raise RuntimeError("cell failed")
    assert not group_alive(pgid)


def test_sigterm_to_costtax_stops_the_server(tmp_path, fake_python):
    """costtax killed with SIGTERM (not Ctrl-C) still takes the server group down with it."""
    import subprocess

    script = f"""
import sys, time
from costtax.engines.serve import ServedVllm
s = ServedVllm({str(tmp_path / 'model')!r}, {str(tmp_path / 'run' / 'server.log')!r}, python={fake_python!r},
               device="cpu", env={{"FAKE_MODE": "ok", "FAKE_CHILD_FILE": {str(tmp_path / 'child.pid')!r}}})
with s:
    print(s.pgid, flush=True)
    time.sleep(600)
"""
    repo = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pgid = int(proc.stdout.readline())
        assert group_alive(pgid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not group_alive(pgid) and not _pid_alive(int((tmp_path / "child.pid").read_text()))


def test_serve_command_on_cuda_has_no_cpu_flags(tmp_path, monkeypatch):
    # the CPU engine of an earlier test may have exported these into this process
    from costtax.engines.vllm_settings import CPU_ENV_DEFAULTS

    for k in (*CPU_ENV_DEFAULTS, "VLLM_CPU_OMP_THREADS_BIND"):
        monkeypatch.delenv(k, raising=False)
    served = ServedVllm("/m", tmp_path / "log", port=1234, device="cuda")
    cmd = served.build_command(on_cuda=True)
    assert "--enforce-eager" not in cmd and "--dtype" not in cmd
    assert "--enable-prefix-caching" in cmd and cmd[cmd.index("--port") + 1] == "1234"
    env = served.build_env(on_cuda=True)
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and "VLLM_CPU_KVCACHE_SPACE" not in served.env_used


@pytest.mark.slow
@pytest.mark.vllm
def test_real_vllm_server_end_to_end(tiny_llama_dir, tmp_path):
    """One real server start (~50 s on 2 cores): n=2 through the openai engine, cached tokens
    reported, counters, reset endpoint, and no process left afterwards."""
    pytest.importorskip("vllm", reason="vllm not installed (make setup installs it)")
    from costtax.engines.base import GenRequest, SamplingSpec
    from costtax.engines import make_engine
    from costtax.engines.openai import OpenAIEngine

    log = tmp_path / "run" / "server.log"
    served = ServedVllm(tiny_llama_dir, log, seed=0, max_model_len=1024, health_timeout_s=600)
    with served:
        pgid = served.pgid
        engine = make_engine("openai", served.model_name, **served.engine_kwargs(), seed=0, max_model_len=1024)
        try:
            engine.start()
            prompt = ("The quick brown fox jumps over the lazy dog. " * 12).strip()
            messages = ({"role": "user", "content": prompt},)
            sp = SamplingSpec(temperature=0.8, max_tokens=8, seed=5, ignore_eos=True)
            assert engine.reset_prefix_cache() is True
            c0 = engine.counters()
            t0 = time.monotonic()
            res = asyncio.run(engine.agenerate(GenRequest("r1", messages, n=2), sp))
            wall = time.monotonic() - t0
            c1 = engine.counters()
            plen = engine.count_tokens(engine.render(messages))
            print(f"\nreal server: start {served.start_s:.1f} s; n=2 x 8 tokens: {wall:.2f} s, ttft {res.t_first_token_s - res.t_submit_s:.3f} s, "
                  f"queue {res.queue_s}, prompt {res.prompt_tokens}, cached {res.cached_prompt_tokens}, counters {c1}")
            assert res.prompt_tokens == plen
            assert [s.output_tokens for s in res.samples] == [8, 8]  # ignore_eos: full length
            assert all(s.finish_reason == "length" for s in res.samples)
            assert res.cached_prompt_tokens is not None  # reported (--enable-prompt-tokens-details)
            assert res.t_submit_s < res.t_first_token_s <= res.t_finish_s and res.queue_s is not None
            # a repeat of the same prompt reads its full blocks from the prefix cache
            again = asyncio.run(engine.agenerate(GenRequest("r2", messages, n=1), sp))
            assert again.cached_prompt_tokens >= 32 * (plen // 32) - 32 and again.cached_prompt_tokens > 0
            assert c1["prefix_cache_queries"] > c0.get("prefix_cache_queries", 0)
            # a distinct cache salt per sample: no sharing of the prompt at all
            salted = asyncio.run(engine.agenerate(GenRequest("r3", messages, n=2, share_prefix=False), sp))
            assert salted.cached_prompt_tokens == 0
            assert {"kv_cache_usage", "num_requests_waiting", "num_requests_running"} <= set(c1)
            prov = engine.provenance()
            assert prov["server"] == "vllm" and prov["server_version"] and prov["max_model_len"] == 1024
            assert prov["launch"]["log_path"] == str(log)
            # without a local tokenizer: the server's /tokenize counts the same tokens
            remote = OpenAIEngine(served.base_url, served.model_name)
            remote.start()
            try:
                assert remote.provenance()["tokenizer_source"] == "server:/tokenize"
                text = engine.render(messages)
                assert remote.count_tokens(text) == plen
                assert remote.render(messages) == text  # /tokenize + /detokenize keep the template's special tokens
            finally:
                remote.close()
        finally:
            engine.close()
    assert not group_alive(pgid)
    assert "Application startup complete" in log.read_text() or log.stat().st_size > 0
