"""End to end through the product: ``costtax profile -p humaneval --engine openai`` against a
stand-in OpenAI server whose "model" answers carry attacks on the host (a mode-666 unix socket,
the terminal, output names symlinked to a secret). The run completes, each answer is scored by
its tests (the correct one passes, the wrong one fails with ``assertion``), and nothing reaches
the host: the listener hears nothing, the pty reads nothing, the secret is in no file of the run.
Each attack is first run on the host as the control (it does reach the listener and the pty).
"""
from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RIGHT = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"


def attack(sock: str, tty: str, secret: str) -> str:
    return (
        "import os, socket\n"
        "try:\n    s = socket.socket(socket.AF_UNIX)\n    s.connect(%r)\n"
        "    s.sendall(b'line from ' + socket.gethostname().encode())\n    s.close()\nexcept Exception as e:\n    print('socket:', e)\n"
        "try:\n    fd = os.open(%r, os.O_RDWR)\n    os.write(fd, b'INJECTED')\nexcept Exception as e:\n    print('tty:', e)\n"
        "for name in ('stdout.txt', 'stderr.txt', 'program.py'):\n    try:\n        os.symlink(%r, name)\n"
        "    except Exception as e:\n        print('symlink:', e)\n"
    ) % (sock, tty, secret)


class StandIn:
    """Chat answers by entry point; a character tokenizer and fixed log-probs for the judge."""

    def __init__(self, answers: dict[str, str]):
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _json(self, obj):
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._json({"object": "list", "data": [{"id": "stand-in", "object": "model", "max_model_len": 100000}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path == "/tokenize":
                    text = body.get("prompt") or "".join(f"<{m['role']}>{m['content']}" for m in body["messages"])
                    return self._json({"tokens": [ord(c) for c in text], "count": len(text)})
                if self.path == "/detokenize":
                    return self._json({"prompt": "".join(chr(t) for t in body["tokens"])})
                if self.path == "/v1/completions":  # the served judge: logprob(Yes) - logprob(No)
                    top = {f"token_id:{t}": -0.5 - i for i, t in enumerate(body.get("logprob_token_ids") or [])}
                    return self._json({"choices": [{"index": 0, "text": "", "logprobs": {"top_logprobs": [top]}}]})
                text = json.dumps(body.get("messages"))
                ans = next((a for k, a in answers.items() if k in text), "no idea")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                base = {"id": "x", "object": "chat.completion.chunk", "model": "stand-in"}
                for i in range(0, len(ans), 40):
                    ch = {"index": 0, "delta": {"content": ans[i:i + 40]}, **({"finish_reason": "stop"} if i + 40 >= len(ans) else {})}
                    self.wfile.write(b"data: " + json.dumps({**base, "choices": [ch]}).encode() + b"\n\n")
                usage = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
                self.wfile.write(b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\ndata: [DONE]\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def host():
    """A mode-666 unix socket listener and a pty (both outside /tmp), a secret; removed after."""
    base = Path(tempfile.mkdtemp(prefix="costtax-e2e-", dir="/var/tmp" if os.access("/var/tmp", os.W_OK) else None))
    os.chmod(base, 0o755)
    sock, secret = str(base / "bus.sock"), base / "secret.txt"
    secret.write_text("E2E-ROOT-SECRET")
    os.chmod(secret, 0o600 if os.geteuid() == 0 else 0o000)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock)
    os.chmod(sock, 0o666)
    srv.listen(8)
    srv.settimeout(0.2)
    heard: list[bytes] = []

    def serve():
        while srv.fileno() != -1:
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                heard.append(conn.recv(200))

    threading.Thread(target=serve, daemon=True).start()
    master, slave = pty.openpty()
    os.set_blocking(master, False)

    def drain() -> str:
        try:
            return os.read(master, 4096).decode("utf-8", "replace")
        except BlockingIOError:
            return ""

    yield {"sock": sock, "tty": os.ttyname(slave), "secret": str(secret), "heard": heard, "drain": drain}
    srv.close()
    os.close(master)
    os.close(slave)
    os.chmod(secret, 0o600)
    for p in base.iterdir():
        p.unlink()
    base.rmdir()


def test_profile_humaneval_with_attacking_answers_scores_them_and_nothing_reaches_the_host(host, tmp_path):
    code = attack(host["sock"], host["tty"], host["secret"])
    # the control: the same attack on the host reaches the listener and the terminal
    subprocess.run([sys.executable, "-I", "-c", code], check=True, capture_output=True, cwd=tmp_path, timeout=30)
    import time

    time.sleep(0.5)
    assert len(host["heard"]) == 1 and host["heard"][0].startswith(b"line from ") and host["drain"]() == "INJECTED"
    answers = {
        "has_close_elements": f"Here:\n\n```python\n{code}\ndef has_close_elements(numbers, threshold):\n{RIGHT}```\n",
        "separate_paren_groups": f"```python\n{code}\ndef separate_paren_groups(paren_string):\n    return []\n```\n",
    }
    srv = StandIn(answers)
    out = tmp_path / "run"
    try:
        p = subprocess.run([sys.executable, "-m", "costtax.cli", "profile", "--engine", "openai", "--base-url", srv.url,
                            "-t", "plain", "-p", "humaneval", "--limit", "2", "--reward-model", f"openai:{srv.url}",
                            "--no-judge-calibration", "--eval-reward-model", "none", "--out", str(out)],
                           capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        srv.close()
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {r["prompt_id"]: r for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines()) if r.get("scorer") == "pass_at_k"}
    assert (rows["humaneval-000"]["code_passed"], rows["humaneval-000"]["code_fail_reason"]) == (True, None)
    assert (rows["humaneval-001"]["code_passed"], rows["humaneval-001"]["code_fail_reason"]) == (False, "assertion")
    assert all(r["code_sandbox"]["path"] == "bwrap" and r["code_sandbox"]["Seccomp"] == "2" for r in rows.values())
    time.sleep(0.5)
    assert len(host["heard"]) == 1 and host["drain"]() == ""  # nothing more reached the host
    for f in out.rglob("*"):
        if f.is_file():
            assert b"E2E-ROOT-SECRET" not in f.read_bytes(), f
