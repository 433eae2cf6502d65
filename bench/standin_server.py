"""A stand-in OpenAI-compatible server with a known latency, for measuring the client itself.

    python bench/standin_server.py --port 8123 --ttft-ms 50 --token-ms 20 --tokens 64

One asyncio process (raw streams, HTTP/1.1 keep-alive, chunked server-sent events, no
dependencies), so it stays cheap next to the client it serves. Every streamed chat completion
waits `--ttft-ms` before its first token, then sends one token every `--token-ms`, `max_tokens`
tokens (capped by `--tokens` when given): the true TTFT and latency are known, so what the client
measures above them is the client's (and the machine's) own delay. Endpoints: GET /v1/models,
GET /health, POST /v1/chat/completions (stream or not; usage with prompt and completion tokens,
prompt tokens = words of the messages), POST /tokenize (words) so costtax can count tokens.
Prints `ready <port>` on stdout once it listens. Not a vLLM: no /version, so costtax sends no
vLLM extensions.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys

MODEL = "standin"


def _words(messages) -> int:
    return sum(len(str(m.get("content") or "").split()) + 2 for m in messages)


class StandIn:
    def __init__(self, ttft_s: float, token_s: float, tokens: int | None):
        self.ttft_s, self.token_s, self.tokens = ttft_s, token_s, tokens
        self.requests = 0
        self._frames: dict[int, list[bytes]] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                n = int(headers.get("content-length") or 0)
                body = json.loads(await reader.readexactly(n)) if n else {}
                if method == "POST" and path == "/v1/chat/completions":
                    await self.chat(writer, body)
                elif method == "GET" and path == "/v1/models":
                    self.send_json(writer, {"object": "list", "data": [{"id": MODEL, "object": "model", "max_model_len": 4096}]})
                elif method == "GET" and path == "/health":
                    self.send_json(writer, {})
                elif method == "POST" and path == "/tokenize":
                    text = body.get("prompt") or " ".join(str(m.get("content") or "") for m in body.get("messages") or [])
                    self.send_json(writer, {"count": len(text.split()), "tokens": [1] * len(text.split()), "max_model_len": 4096})
                else:
                    self.send_json(writer, {"error": "not found"}, 404)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def frames(self, n_tok: int) -> list[bytes]:
        """The n_tok token frames (chunked-encoded SSE events), built once per length: the
        server's own cost per token is one write, so the client is what saturates first."""
        got = self._frames.get(n_tok)
        if got is None:
            got = []
            for i in range(n_tok):
                choice = {"index": 0, "delta": {"content": (" " if i else "") + f"w{i % 97}"}, "finish_reason": "length" if i == n_tok - 1 else None}
                payload = b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [choice]}).encode() + b"\n\n"
                got.append(b"%x\r\n%s\r\n" % (len(payload), payload))
            self._frames[n_tok] = got
        return got

    @staticmethod
    def send_json(writer, obj, code: int = 200) -> None:
        data = json.dumps(obj).encode()
        reason = b"OK" if code == 200 else b"Not Found"
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (code, reason, len(data)) + data)

    @staticmethod
    def chunk(writer, payload: bytes) -> None:
        writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))

    async def chat(self, writer, body) -> None:
        self.requests += 1
        n_tok = int(body.get("max_tokens") or 16)
        if self.tokens is not None:
            n_tok = min(n_tok, self.tokens)
        plen = _words(body.get("messages") or [])
        usage = {"prompt_tokens": plen, "completion_tokens": n_tok, "total_tokens": plen + n_tok}
        words = [f"w{i % 97}" for i in range(n_tok)]
        frames = self.frames(n_tok)
        if not body.get("stream"):
            await asyncio.sleep(self.ttft_s + self.token_s * max(n_tok - 1, 0))
            msg = {"role": "assistant", "content": " ".join(words)}
            self.send_json(writer, {"id": "c", "object": "chat.completion", "model": MODEL,
                                    "choices": [{"index": 0, "message": msg, "finish_reason": "length"}], "usage": usage})
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(n_tok):
            # absolute deadlines: a late wake-up does not push every later token back
            delay = t0 + self.ttft_s + self.token_s * i - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(frames[i])
            await writer.drain()
        if (body.get("stream_options") or {}).get("include_usage"):
            self.chunk(writer, b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage}).encode() + b"\n\n")
        self.chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")


async def serve(port: int, ttft_s: float, token_s: float, tokens: int | None) -> None:
    app = StandIn(ttft_s, token_s, tokens)
    server = await asyncio.start_server(app.handle, "127.0.0.1", port, backlog=1024)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--ttft-ms", type=float, default=50.0)
    ap.add_argument("--token-ms", type=float, default=20.0)
    ap.add_argument("--tokens", type=int, default=None, help="cap on tokens per answer (default: the request's max_tokens)")
    a = ap.parse_args(argv)
    try:
        asyncio.run(serve(a.port, a.ttft_ms / 1000, a.token_ms / 1000, a.tokens))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
