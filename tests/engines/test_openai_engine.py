"""The `openai` engine against a small fake OpenAI-compatible server on 127.0.0.1 (stdlib
http.server in a thread): streaming SSE with per-request TTFT, n samples as n concurrent
requests, usage present/absent, vLLM extensions, /metrics, /reset_prefix_cache, /tokenize, and
the failure paths (unreachable server, HTTP errors, a server dying mid-stream)."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from costtax.engines.base import GenRequest, SamplingSpec
from costtax.engines.openai import OpenAIEngine
from costtax.engines.openai_stream import ServerRequestError, sample_seed
from costtax.engines.prometheus import counters_from_metrics, parse_prometheus_text
from costtax.engines.serve import free_port
from costtax.errors import ConfigError, CosttaxError

pytestmark = pytest.mark.integration

MODEL = "fake-model"

METRICS_HEAD = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="fake-model"} 3.0
vllm:num_requests_running{engine="1",model_name="fake-model"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="fake-model"} 5.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="fake-model"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="fake-model"} 0.5
# TYPE vllm:request_queue_time_seconds histogram
vllm:request_queue_time_seconds_bucket{engine="0",le="0.3",model_name="fake-model"} 2.0
vllm:request_queue_time_seconds_sum{engine="0",model_name="fake-model"} 0.75
vllm:request_queue_time_seconds_count{engine="0",model_name="fake-model"} 2.0
"""


class FakeServer:
    """Tokens are words. A prompt's tokens: the words of its rendering (`render`: a role tag per
    message, the words, a final <assistant> tag), the same count /tokenize gives.

    Simulated prefix cache keyed by (cache_salt, prompt): the first request of a key computes,
    later ones read the whole prompt from the cache. Sample text: `max_tokens` words
    "s<seed>_<i>" so tests can see which seed produced which sample."""

    def __init__(self, *, vllm=True, usage="full", reset=True, metrics=True, tokenize=True,
                 first_delay_s=0.0, token_delay_s=0.0, die_after_chunks=None, status=200):
        self.vllm, self.usage, self.reset, self.metrics, self.tokenize = vllm, usage, reset, metrics, tokenize
        self.first_delay_s, self.token_delay_s = first_delay_s, token_delay_s
        self.die_after_chunks, self.status = die_after_chunks, status
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        self.seen: set = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.queries = 0
        self.hits = 0
        self.resets = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _json(self, obj, code=200):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self):
                if self.path == "/v1/models":
                    card = {"id": MODEL, "object": "model"}
                    if server.vllm:
                        card["max_model_len"] = 512
                    return self._json({"object": "list", "data": [card]})
                if self.path == "/version" and server.vllm:
                    return self._json({"version": "0.0-fake"})
                if self.path == "/health":
                    return self._json({})
                if self.path == "/metrics" and server.metrics:
                    text = METRICS_HEAD + (
                        f'vllm:prefix_cache_queries_total{{engine="0",model_name="fake-model"}} {float(server.queries)}\n'
                        f'vllm:prefix_cache_hits_total{{engine="0",model_name="fake-model"}} {float(server.hits)}\n'
                    )
                    data = text.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return self.wfile.write(data)
                self._json({"error": "not found"}, 404)

            def do_POST(self):
                body = self._body()
                if self.path == "/reset_prefix_cache" and server.reset:
                    with server.lock:
                        server.seen.clear()
                        server.resets += 1
                    return self._json({"success": True})
                if self.path == "/tokenize" and server.tokenize and server.vllm:
                    if "messages" in body:
                        text = server.render(body["messages"], body.get("add_generation_prompt", True))
                    else:
                        text = body["prompt"]
                    toks = [len(w) for w in text.split()]
                    return self._json({"count": len(toks), "max_model_len": 512, "tokens": toks})
                if self.path == "/detokenize" and server.tokenize and server.vllm:
                    return self._json({"prompt": " ".join("x" * t for t in body["tokens"])})
                if self.path == "/v1/chat/completions":
                    return self._chat(body)
                self._json({"error": "not found"}, 404)

            def _send_chunk(self, obj):
                self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()

            def _chat(self, body):
                with server.lock:
                    server.bodies.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.status != 200:
                        return self._json({"error": {"message": "bad request", "code": server.status}}, server.status)
                    gen_prompt = body.get("add_generation_prompt", True)
                    plen = server.prompt_len(body["messages"], gen_prompt)
                    key = (body.get("cache_salt"), server.render(body["messages"], gen_prompt))
                    with server.lock:
                        cached = plen if key in server.seen else 0
                        server.seen.add(key)
                        server.queries += plen
                        server.hits += cached
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                    time.sleep(server.first_delay_s)
                    seed = body.get("seed", 0)
                    n_tok = body["max_tokens"]
                    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "model": MODEL}
                    self._send_chunk({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
                    for i in range(n_tok):
                        if server.die_after_chunks is not None and i >= server.die_after_chunks:
                            self.wfile.flush()
                            self.connection.shutdown(2)  # the server dies mid-stream
                            return
                        if i:
                            time.sleep(server.token_delay_s)
                        choice = {"index": 0, "delta": {"content": (" " if i else "") + f"s{seed}_{i}"}}
                        if body.get("return_token_ids"):
                            choice["token_ids"] = [seed % 1000 + i]
                        if i == n_tok - 1:
                            choice["finish_reason"] = "length"
                        self._send_chunk({**base, "choices": [choice]})
                    if server.usage != "none" and (body.get("stream_options") or {}).get("include_usage"):
                        usage = {"prompt_tokens": plen, "completion_tokens": n_tok, "total_tokens": plen + n_tok}
                        if server.usage == "full":
                            usage["prompt_tokens_details"] = {"cached_tokens": cached}
                        chunk = {**base, "choices": [], "usage": usage}
                        if server.vllm:
                            chunk["metrics"] = {"queue_time_ms": 10.0 + len(server.bodies)}
                        self._send_chunk(chunk)
                    self.wfile.write(b"data: [DONE]\n\n")
                finally:
                    with server.lock:
                        server.in_flight -= 1

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default backlog of 5 drops bursts of connections

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @staticmethod
    def render(messages, add_generation_prompt=True):
        # without the generation prompt (continue_final_message) the last turn is continued
        text = " ".join(f"<{m['role']}> {m['content']}" for m in messages)
        return text + " <assistant>" if add_generation_prompt else text

    @staticmethod
    def prompt_len(messages, add_generation_prompt=True):
        # the rendered prompt's tokens, as /tokenize counts them (one message: its words + 2)
        return len(FakeServer.render(messages, add_generation_prompt).split())

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def make_server():
    servers = []

    def make(**kw):
        s = FakeServer(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def make_engine():
    engines = []

    def make(server, **kw):
        e = OpenAIEngine(server.base_url, MODEL, **kw)
        e.start()
        engines.append(e)
        return e

    yield make
    for e in engines:
        e.close()


def req(rid="r1", n=1, share=True, text="what is two plus two", max_tokens=None):
    return GenRequest(rid, ({"role": "user", "content": text},), n=n, share_prefix=share, max_tokens=max_tokens)


SP = SamplingSpec(temperature=0.7, max_tokens=5, seed=11)


def test_streaming_ttft_is_per_request_and_before_finish(make_server, make_engine):
    srv = make_server(first_delay_s=0.3, token_delay_s=0.05)
    eng = make_engine(srv)
    res = asyncio.run(eng.agenerate(req(), SP))
    assert res.ttft_source == "stream"
    assert res.t_first_token_s - res.t_submit_s >= 0.28  # waited for the first chunk
    assert res.t_finish_s - res.t_first_token_s >= 4 * 0.05 * 0.9  # 4 more tokens streamed after it
    assert res.t_finish_s <= time.monotonic()
    s = res.samples[0]
    assert s.finish_reason == "length" and s.output_tokens == 5
    body = srv.bodies[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True} and body["n"] == 1


def test_n_samples_are_n_concurrent_requests_in_order_with_derived_seeds(make_server, make_engine):
    srv = make_server(first_delay_s=0.5)
    eng = make_engine(srv)
    res = asyncio.run(eng.agenerate(req("q7", n=4), SP))
    assert len(srv.bodies) == 4 and all(b["n"] == 1 for b in srv.bodies)
    assert srv.max_in_flight == 4  # all four were in flight at once
    seeds = [sample_seed(11, "q7", k) for k in range(4)]
    assert len(set(seeds)) == 4
    assert sorted(b["seed"] for b in srv.bodies) == sorted(seeds)
    # sample k is the one generated with seed k, whatever order the requests finished in
    assert [s.text.split()[0] for s in res.samples] == [f"s{sd}_0" for sd in seeds]
    assert [s.token_ids[0] for s in res.samples] == [sd % 1000 for sd in seeds]
    # the same (seed, request id) gives the same seeds; another request id gives others
    assert sample_seed(11, "q7", 0) == seeds[0] and sample_seed(11, "q8", 0) != seeds[0]
    assert res.output_tokens == 20
    assert res.queue_s is not None and res.queue_s >= 0.010  # vLLM per-request metrics, max over samples


def test_usage_full_gives_prompt_and_cached_tokens(make_server, make_engine):
    srv = make_server()
    eng = make_engine(srv)
    res = asyncio.run(eng.agenerate(req(n=3), SP))
    plen = FakeServer.prompt_len([{"role": "user", "content": "what is two plus two"}])
    assert res.prompt_tokens == plen
    assert res.cached_prompt_tokens == 2 * plen  # samples 2 and 3 hit the prefix cache
    assert res.prompt_tokens_computed == plen
    prov = eng.provenance()
    assert prov["usage_cached_tokens"] is True and prov["usage_prompt_tokens"] is True
    assert prov["output_tokens_source"] == "token_ids"


def test_share_prefix_false_sends_distinct_cache_salts(make_server, make_engine):
    srv = make_server()
    eng = make_engine(srv)
    res = asyncio.run(eng.agenerate(req(n=3, share=False), SP))
    salts = [b.get("cache_salt") for b in srv.bodies]
    assert None not in salts and len(set(salts)) == 3
    assert all(len(s) <= 128 and "/" not in s and "@" not in s for s in salts)  # vLLM's salt rules
    assert res.cached_prompt_tokens == 0
    assert res.prompt_tokens_computed == 3 * res.prompt_tokens


def test_usage_without_details_means_cached_unknown_not_zero(make_server, make_engine):
    srv = make_server(usage="prompt_only")
    eng = make_engine(srv)
    res = asyncio.run(eng.agenerate(req(n=2), SP))
    assert res.cached_prompt_tokens is None
    assert res.prompt_tokens == FakeServer.prompt_len([{"role": "user", "content": "what is two plus two"}])
    assert res.prompt_tokens_computed == 2 * res.prompt_tokens  # upper bound when hits are unknown
    assert eng.provenance()["usage_cached_tokens"] is False


def test_no_usage_and_no_vllm_extensions(make_server, make_engine):
    srv = make_server(vllm=False, usage="none", reset=False, metrics=False)
    eng = make_engine(srv)
    res = asyncio.run(eng.agenerate(req(n=2), SP))
    assert res.cached_prompt_tokens is None and res.prompt_tokens is None and res.prompt_tokens_computed is None
    assert res.queue_s is None
    # no token ids and no usage: output tokens from the streamed chunks (labelled lower bound)
    assert [s.output_tokens for s in res.samples] == [5, 5] and res.output_tokens == 10
    assert eng.provenance()["output_tokens_source"] == "streamed chunks (lower bound)"
    # a non-vLLM server gets no vLLM-only fields
    assert all("return_token_ids" not in b for b in srv.bodies)
    prov = eng.provenance()
    assert prov["server"] == "unknown" and prov["server_version"] is None
    assert eng.counters() == {}
    assert eng.reset_prefix_cache() is False
    assert eng.provenance()["prefix_cache_reset"].startswith("not reset")
    with pytest.raises(CosttaxError, match="tokenize"):
        eng.count_tokens("hello")


def test_usage_without_token_ids_counts_completion_tokens(make_server, make_engine):
    srv = make_server(vllm=False, usage="prompt_only")
    eng = make_engine(srv)
    res = asyncio.run(eng.agenerate(req(max_tokens=3), SP))
    assert res.samples[0].token_ids == () and res.samples[0].output_tokens == 3
    assert eng.provenance()["output_tokens_source"] == "usage"
    assert srv.bodies[0]["max_tokens"] == 3  # GenRequest.max_tokens overrides SamplingSpec


def test_ignore_eos_and_sampling_fields_sent(make_server, make_engine):
    srv = make_server()
    eng = make_engine(srv)
    asyncio.run(eng.agenerate(req(), SamplingSpec(temperature=0.0, top_p=0.9, max_tokens=4, ignore_eos=True)))
    b = srv.bodies[0]
    assert b["ignore_eos"] is True and b["temperature"] == 0.0 and b["top_p"] == 0.9 and b["max_tokens"] == 4
    assert b["model"] == MODEL and b["return_token_ids"] is True
    asyncio.run(eng.agenerate(req("r2"), SP))
    assert "ignore_eos" not in srv.bodies[1]


def test_counters_parse_vllm_metrics(make_server, make_engine):
    srv = make_server()
    eng = make_engine(srv)
    c0 = eng.counters()
    assert c0["num_requests_running"] == 4 and c0["num_requests_waiting"] == 5
    assert c0["kv_cache_usage"] == 0.5  # max over engines
    assert c0["request_queue_time_s_sum"] == 0.75 and c0["request_queue_time_count"] == 2
    assert c0["prefix_cache_queries"] == 0 and c0["prefix_cache_hits"] == 0
    asyncio.run(eng.agenerate(req(n=2), SP))
    c1 = eng.counters()
    plen = FakeServer.prompt_len([{"role": "user", "content": "what is two plus two"}])
    assert c1["prefix_cache_queries"] - c0["prefix_cache_queries"] == 2 * plen
    assert c1["prefix_cache_hits"] - c0["prefix_cache_hits"] == plen
    assert eng.provenance()["server_metrics"] is True


def test_prometheus_parser_labels_escapes_and_timestamps():
    text = (
        '# HELP x y\n'
        'a_total 3 1700000000000\n'
        'b{l="with \\"quote\\" and } brace",m="2"} 1.5e1\n'
        'c{} 7\n'
        'garbage line here\n'
        'vllm:prefix_cache_hits_total{engine="0"} 10\n'
        'vllm:prefix_cache_hits_total{engine="1"} 5\n'
    )
    fam = parse_prometheus_text(text)
    assert fam["a_total"] == [({}, 3.0)]
    assert fam["b"] == [({"l": 'with "quote" and } brace', "m": "2"}, 15.0)]
    assert fam["c"] == [({}, 7.0)]
    assert "garbage" not in fam
    assert counters_from_metrics(text) == {"prefix_cache_hits": 15}
    assert counters_from_metrics("") == {}


def test_reset_prefix_cache_present_and_absent(make_server, make_engine):
    srv = make_server()
    eng = make_engine(srv)
    asyncio.run(eng.agenerate(req(n=1), SP))
    assert eng.reset_prefix_cache() is True and srv.resets == 1
    assert eng.provenance()["prefix_cache_reset"] == "reset"
    res = asyncio.run(eng.agenerate(req("r2", n=1), SP))
    assert res.cached_prompt_tokens == 0  # the reset dropped the cached prompt
    srv2 = make_server(reset=False)
    eng2 = make_engine(srv2)
    assert eng2.reset_prefix_cache() is False
    assert "VLLM_SERVER_DEV_MODE" in eng2.provenance()["prefix_cache_reset"]


def test_server_tokenize_for_render_and_count(make_server, make_engine):
    srv = make_server()
    eng = make_engine(srv)
    assert eng.provenance()["tokenizer_source"] == "server:/tokenize"
    assert eng.count_tokens("one two three") == 3
    msgs = [{"role": "user", "content": "hi there"}]
    # the fake detokenizes to one "x" per character of each word of its rendering
    assert eng.render(msgs) == " ".join("x" * len(w) for w in FakeServer.render(msgs).split())
    assert eng.max_model_len() == 512
    assert eng.provenance()["max_model_len_source"] == "server"


def test_local_tokenizer_renders_with_chat_template(make_server, make_engine, tmp_path):
    pytest.importorskip("transformers")
    from costtax.tiny import build_tokenizer

    tok = build_tokenizer(tmp_path)
    srv = make_server(vllm=False)
    eng = make_engine(srv, tokenizer=str(tmp_path), max_model_len=300)
    msgs = [{"role": "user", "content": "The quick brown fox"}]
    text = eng.render(msgs)
    assert text == "<|im_start|>user\nThe quick brown fox<|im_end|>\n<|im_start|>assistant\n"
    assert eng.count_tokens(text) == len(tok.encode(text, add_special_tokens=False))
    assert eng.provenance()["tokenizer_source"] == f"local:{tmp_path}"
    assert eng.max_model_len() == 300 and eng.provenance()["max_model_len_source"] == "argument"


def test_sync_generate_runs_requests_concurrently_in_order(make_server, make_engine):
    srv = make_server(first_delay_s=0.5)
    eng = make_engine(srv)
    t0 = time.monotonic()
    out = eng.generate([req("a", n=2), req("b", text="another prompt"), req("c", n=3)], SP)
    wall = time.monotonic() - t0
    assert [r.request_id for r in out] == ["a", "b", "c"] and [len(r.samples) for r in out] == [2, 1, 3]
    assert srv.max_in_flight == 6 and wall < 6 * 0.5  # concurrent, not one after another
    stats = eng.last_batch_stats()
    assert stats.prefix_cache_queries is not None and stats.prefix_cache_hits is not None
    assert stats.prefix_cache_hits == out[0].cached_prompt_tokens + out[2].cached_prompt_tokens


def test_agenerate_from_several_event_loops_and_concurrent_answers(make_server, make_engine):
    srv = make_server(first_delay_s=0.5)
    eng = make_engine(srv)

    async def many():
        return await asyncio.gather(*(eng.agenerate(req(f"r{i}", n=2, text=f"prompt {i}"), SP) for i in range(5)))

    first = asyncio.run(many())
    second = asyncio.run(many())  # a new loop: the engine's own client loop is unaffected
    assert [r.request_id for r in first] == [f"r{i}" for i in range(5)]
    assert [s.text for r in first for s in r.samples] == [s.text for r in second for s in r.samples]
    assert srv.max_in_flight == 10


def test_cancelled_agenerate_leaves_engine_usable(make_server, make_engine):
    srv = make_server(first_delay_s=0.5)
    eng = make_engine(srv)

    async def cancel_one():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(eng.agenerate(req("slow"), SP), timeout=0.1)

    asyncio.run(cancel_one())
    srv.first_delay_s = 0.0
    res = asyncio.run(eng.agenerate(req("next"), SP))
    assert res.samples[0].finish_reason == "length"


def test_unreachable_server_is_a_config_error():
    port = free_port()
    eng = OpenAIEngine(f"http://127.0.0.1:{port}/v1", MODEL, connect_timeout_s=2)
    with pytest.raises(ConfigError) as ei:
        eng.start()
    assert ei.value.field == "--base-url" and "no server answered" in str(ei.value)
    assert "\n" not in str(ei.value)
    with pytest.raises(ConfigError, match="--serve"):
        OpenAIEngine("127.0.0.1:8000", url_field="--serve")  # not a URL


def test_unknown_model_and_default_model(make_server):
    srv = make_server()
    with pytest.raises(ConfigError) as ei:
        OpenAIEngine(srv.base_url, "other-model").start()
    assert ei.value.field == "--model" and MODEL in str(ei.value)
    eng = OpenAIEngine(srv.base_url, None)
    eng.start()
    try:
        assert eng.model == MODEL  # the only served model
    finally:
        eng.close()


def test_server_dying_mid_stream_raises(make_server, make_engine):
    srv = make_server(die_after_chunks=2)
    eng = make_engine(srv)
    with pytest.raises(ServerRequestError, match="ended before|RemoteProtocolError|ReadError"):
        asyncio.run(eng.agenerate(req(n=2), SP))
    with pytest.raises(ServerRequestError):
        eng.generate([req("b")], SP)


def test_http_error_raises_with_status(make_server, make_engine):
    srv = make_server(status=400)
    eng = make_engine(srv)
    with pytest.raises(ServerRequestError, match="HTTP 400"):
        asyncio.run(eng.agenerate(req(), SP))


def test_server_gone_after_start_raises(make_server, make_engine):
    srv = make_server()
    eng = make_engine(srv)
    srv.close()
    with pytest.raises(ServerRequestError):
        asyncio.run(eng.agenerate(req(), SP))
    assert eng.counters() == {}


def test_make_engine_registers_openai(make_server):
    from costtax.engines import ENGINES, make_engine

    srv = make_server()
    assert "openai" in ENGINES
    eng = make_engine("openai", MODEL, base_url=srv.base_url, seed=3, max_model_len=1024, trust_remote_code=False)
    eng.start()
    try:
        assert isinstance(eng, OpenAIEngine) and eng.provenance()["engine_seed"] == 3
    finally:
        eng.close()


def test_bad_local_tokenizer_dir_is_a_config_error(make_server, tmp_path):
    srv = make_server()
    eng = OpenAIEngine(srv.base_url, MODEL, tokenizer=str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as ei:
        eng.start()
    assert ei.value.field == "--model" and "tokenizer" in str(ei.value)
    assert eng._sync is None  # nothing left open


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, costtax.engines.openai, costtax.engines.serve; print(sorted(m for m in ('httpx', 'torch', 'transformers', 'vllm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
