"""OpenAI-compatible HTTP engine: drives any server with `/v1/chat/completions` (vLLM's
`api_server`, started by `--serve` or by the user, or another compatible server).

Measurement choices recorded here:
- Streaming chat completions with `stream_options: {include_usage: true}`: TTFT is the time the
  first chunk carrying generated text (or token ids) reached the client, per request. It
  includes HTTP and detokenisation, so `ttft_source` is "stream", not "engine".
- n samples = n concurrent requests with n=1 (as the offline vLLM engine fans out), aggregated
  into one GenResult with the samples in order. Every request gets its own seed, derived from
  (sampling.seed, request id, sample index), so a run is reproducible however the server batches
  concurrent requests. (On GPUs vLLM samples seeded requests with per-request generators, a
  little slower than unseeded ones: `per_request_seed=False` turns this off.)
- share_prefix=False: a distinct `cache_salt` per sample (vLLM extension), so the samples cannot
  reuse each other's prefill: the naive best-of-N layout, as in the offline engine.
- Token counts come from the server's `usage`: prompt tokens, cached prompt tokens
  (`prompt_tokens_details.cached_tokens`, vLLM only with `--enable-prompt-tokens-details`). Where
  the server does not return them they are None ("unknown"), never 0.
- On a vLLM server the request also asks for `return_token_ids` (exact sampled token ids) and
  reads per-request metrics (`queue_time_ms`, vLLM with `--enable-per-request-metrics`) into
  `GenResult.queue_s` (max over the n samples: the request waits for its last-scheduled sample).
- Requests run on a private asyncio loop in a daemon thread with one connection pool without a
  connection limit: the client never queues requests itself, so any queueing measured is the
  server's. `agenerate` may be awaited from any event loop.
- Server-side counters come from vLLM's Prometheus `/metrics` (parsed here, no dependency).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, CosttaxError, EngineUnavailable
from .base import BatchStats, GenRequest, GenResult, Message, Sample, SamplingSpec


class ServerRequestError(CosttaxError, RuntimeError):
    """A request to the server failed (connection lost, server died, HTTP error, malformed or
    truncated stream). The cell runner catches it to mark the level failed; it is never
    swallowed here."""


@dataclass(frozen=True)
class CountedSample(Sample):
    """A sample whose token ids the server did not return: `output_tokens` is the server's
    `usage.completion_tokens` (see OpenAIEngine._aggregate for the fallbacks) instead of
    len(token_ids)."""

    reported_output_tokens: int = 0

    @property
    def output_tokens(self) -> int:  # type: ignore[override]
        return self.reported_output_tokens


# vLLM Prometheus metric -> counters() key. Counters are exposed with a `_total` suffix.
_COUNTERS = {
    "vllm:prefix_cache_queries_total": "prefix_cache_queries",
    "vllm:prefix_cache_hits_total": "prefix_cache_hits",
    "vllm:prompt_tokens_total": "prompt_tokens",
    "vllm:generation_tokens_total": "generation_tokens",
    "vllm:num_preemptions_total": "num_preemptions",
    "vllm:request_success_total": "requests_finished",
    "vllm:request_queue_time_seconds_sum": "request_queue_time_s_sum",
    "vllm:request_queue_time_seconds_count": "request_queue_time_count",
}
_GAUGES = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:num_requests_waiting": "num_requests_waiting",
    "vllm:num_requests_running": "num_requests_running",
}


def parse_prometheus_text(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text exposition format -> {sample name: [(labels, value), ...]}.

    Enough of the format for vLLM's exporter: comments, optional labels (quoted values with
    escapes), an optional timestamp after the value; malformed lines are skipped."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        labels: dict[str, str] = {}
        if "{" in line:
            name, rest = line.split("{", 1)
            i, key, buf = 0, None, ""
            # label block: k="v",k2="v2"} value
            while i < len(rest) and rest[i] != "}":
                j = rest.find("=", i)
                if j < 0:
                    break
                key = rest[i:j].strip().lstrip(",").strip()
                if j + 1 >= len(rest) or rest[j + 1] != '"':
                    break
                k, buf = j + 2, ""
                while k < len(rest) and rest[k] != '"':
                    if rest[k] == "\\" and k + 1 < len(rest):
                        buf += {"n": "\n", "\\": "\\", '"': '"'}.get(rest[k + 1], rest[k + 1])
                        k += 2
                    else:
                        buf += rest[k]
                        k += 1
                labels[key] = buf
                i = k + 1
                while i < len(rest) and rest[i] in ", ":
                    i += 1
            if i >= len(rest) or rest[i] != "}":
                continue
            value_part = rest[i + 1 :].split()
        else:
            parts = line.split()
            name, value_part = parts[0], parts[1:]
        if not value_part:
            continue
        try:
            value = float(value_part[0])
        except ValueError:
            continue
        out.setdefault(name.strip(), []).append((labels, value))
    return out


def counters_from_metrics(text: str) -> dict[str, Any]:
    """The counters() dict from a vLLM `/metrics` page: counters summed over label sets (one per
    engine under data parallelism), request gauges summed, KV-cache usage the max over engines."""
    fam = parse_prometheus_text(text)
    out: dict[str, Any] = {}
    for metric, key in _COUNTERS.items():
        if metric in fam:
            out[key] = sum(v for _, v in fam[metric])
    for metric, key in _GAUGES.items():
        if metric in fam:
            vals = [v for _, v in fam[metric]]
            out[key] = max(vals) if key == "kv_cache_usage" else sum(vals)
    for key in ("prefix_cache_queries", "prefix_cache_hits", "prompt_tokens", "generation_tokens",
                "num_preemptions", "requests_finished", "request_queue_time_count",
                "num_requests_waiting", "num_requests_running"):
        if key in out:
            out[key] = int(out[key])
    return out


def sample_seed(seed: int, request_id: str, k: int) -> int:
    """Deterministic per-sample seed in [0, 2**31): same (seed, request id, index) -> same seed."""
    h = hashlib.sha256(f"{seed}|{request_id}|{k}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def _root_url(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port (where /health, /metrics, /version live)."""
    parts = urlsplit(base_url.rstrip("/"))
    path = parts.path
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class OpenAIEngine:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        tokenizer: str | None = None,
        api_key: str | None = None,
        max_model_len: int | None = None,
        seed: int | None = None,
        trust_remote_code: bool = False,
        per_request_seed: bool = True,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 600.0,
        launch: dict[str, Any] | None = None,
        url_field: str = "--base-url",
    ):
        """base_url: the OpenAI API root (http://HOST:PORT/v1). model: the served model name
        (None: the only model the server lists). tokenizer: a local model/tokenizer dir for
        render()/count_tokens() (else the server's /tokenize). launch: what started the server
        (ServedVllm.provenance()), recorded in provenance; None for a server costtax did not
        start. url_field: the flag named in connection errors ("--base-url" or "--serve").
        max_model_len: used only where the server does not report its own. seed: recorded only
        (per-sample seeds derive from SamplingSpec.seed; the server's seed is set at launch)."""
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ConfigError(url_field, base_url, "use an http(s) URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.root_url = _root_url(self.base_url)
        self.model = model
        self.tokenizer_dir = str(tokenizer) if tokenizer else None
        self.api_key = api_key
        self._max_model_len_arg = max_model_len
        self.per_request_seed = per_request_seed
        self.seed = seed
        self.trust_remote_code = trust_remote_code
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.launch = dict(launch) if launch else None
        self.url_field = url_field
        self._started_flag = False
        self._start_s: float | None = None
        self._sync = None  # httpx.Client for start/counters/tokenize/reset
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._aclient = None  # httpx.AsyncClient living on self._loop
        self._tok = None
        self._tokenizer_source: str | None = None
        self._server_version: str | None = None
        self._is_vllm = False
        self._max_model_len: int | None = None
        self._max_model_len_source: str | None = None
        self._reset_state = "not requested"
        self._metrics_available: bool | None = None
        self._usage_seen = {"prompt_tokens": None, "cached_tokens": None, "queue_time": None}
        self._last_stats = BatchStats()
        self._output_tokens_source: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def start(self) -> float:
        """Check the server answers and serves `model`; load the tokenizer. Returns the cold-start
        seconds: the launch's start-up time (when costtax started the server) plus this check."""
        if self._started_flag:
            return self._start_s or 0.0
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx is a core dependency
            raise EngineUnavailable("httpx is not installed: pip install httpx") from exc
        t0 = time.monotonic()
        timeout = httpx.Timeout(self.request_timeout_s, connect=self.connect_timeout_s)
        self._sync = httpx.Client(timeout=timeout, headers=self._headers())
        try:
            self._probe()
            self._load_tokenizer()
        except BaseException:
            self._sync.close()
            self._sync = None
            raise
        self._start_loop(timeout)
        self._started_flag = True
        own = time.monotonic() - t0
        launched = (self.launch or {}).get("start_s") or 0.0
        self._start_s = launched + own
        return self._start_s

    def _probe(self) -> None:
        import httpx

        url = f"{self.base_url}/models"
        try:
            r = self._sync.get(url, timeout=httpx.Timeout(self.connect_timeout_s))
        except httpx.HTTPError as exc:
            raise ConfigError(
                self.url_field, self.base_url,
                f"no server answered at {url} ({type(exc).__name__}); start an OpenAI-compatible server there or use --serve",
            ) from exc
        if r.status_code != 200:
            raise ConfigError(
                self.url_field, self.base_url,
                f"GET {url} returned HTTP {r.status_code}; point it at the API root that serves /models (usually ending in /v1)",
            )
        try:
            models = [m for m in r.json().get("data", [])]
        except (ValueError, AttributeError) as exc:
            raise ConfigError(self.url_field, self.base_url, f"GET {url} did not return an OpenAI model list") from exc
        ids = [m.get("id") for m in models]
        if self.model is None:
            if len(ids) != 1:
                raise ConfigError("--model", None, f"the server serves {len(ids)} models ({', '.join(map(str, ids))}); name one with --model")
            self.model = ids[0]
        elif self.model not in ids:
            raise ConfigError("--model", self.model, f"the server at {self.base_url} serves {', '.join(map(str, ids)) or 'no models'}; use one of those")
        card = models[ids.index(self.model)]
        if isinstance(card.get("max_model_len"), int):  # vLLM's model card carries it
            self._max_model_len, self._max_model_len_source = card["max_model_len"], "server"
        elif self._max_model_len_arg is not None:
            self._max_model_len, self._max_model_len_source = self._max_model_len_arg, "argument"
        # /version exists on vLLM only: it tells us which extensions we may send.
        try:
            v = self._sync.get(f"{self.root_url}/version", timeout=httpx.Timeout(self.connect_timeout_s))
            if v.status_code == 200 and isinstance(v.json(), dict) and "version" in v.json():
                self._server_version = str(v.json()["version"])
                self._is_vllm = True
        except (httpx.HTTPError, ValueError):
            pass

    def _load_tokenizer(self) -> None:
        """A local tokenizer when the model dir is known (no HTTP round trip per count, and the
        same template file the server loaded); else the server's /tokenize (vLLM); else none."""
        if self.tokenizer_dir:
            try:
                from transformers import AutoTokenizer

                self._tok = AutoTokenizer.from_pretrained(self.tokenizer_dir, trust_remote_code=self.trust_remote_code)
                self._tokenizer_source = f"local:{self.tokenizer_dir}"
                return
            except Exception as exc:
                raise ConfigError(
                    "--model", self.tokenizer_dir, f"cannot load its tokenizer ({type(exc).__name__}: {exc}); give the model directory the server loaded"
                ) from exc
        self._tokenizer_source = "server:/tokenize" if self._is_vllm else None

    def _start_loop(self, timeout) -> None:
        import httpx

        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="costtax-openai-client", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop

        async def make_client():
            # No connection limit: a pool limit would queue requests in the client, invisibly.
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
            return httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers())

        self._aclient = asyncio.run_coroutine_threadsafe(make_client(), loop).result()

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._aclient.aclose(), loop).result(timeout=5)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            if not loop.is_running():
                loop.close()
        self._aclient = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        self._started_flag = False

    def _require_started(self) -> None:
        if not self._started_flag:
            raise RuntimeError("engine not started: call start() first")

    # -- tokens ------------------------------------------------------------------------------
    def _post_json(self, path: str, body: dict) -> dict:
        import httpx

        try:
            r = self._sync.post(f"{self.root_url}{path}", json=body)
        except httpx.HTTPError as exc:
            raise ServerRequestError(f"{self.root_url}{path}: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise ServerRequestError(f"{self.root_url}{path}: HTTP {r.status_code}: {r.text[:200]}")
        return r.json()

    def _no_tokenizer(self) -> EngineUnavailable:
        return EngineUnavailable(
            f"the server at {self.base_url} has no /tokenize endpoint and no local tokenizer was given: "
            "pass the model directory as the engine's tokenizer"
        )

    def render(self, messages: Sequence[Message], continue_final: bool = False) -> str:
        """The prompt string the server's chat template makes (local tokenizer: the same template
        file the server loaded; server: /tokenize then /detokenize of its tokens)."""
        self._require_started()
        flags = {"add_generation_prompt": not continue_final}
        if continue_final:
            flags["continue_final_message"] = True
        if self._tok is not None:
            return self._tok.apply_chat_template(list(messages), tokenize=False, **flags)
        if not self._is_vllm:
            raise self._no_tokenizer()
        ids = self._post_json("/tokenize", {"model": self.model, "messages": list(messages), **flags})["tokens"]
        return self._post_json("/detokenize", {"model": self.model, "tokens": ids})["prompt"]

    def count_tokens(self, text: str) -> int:
        self._require_started()
        if self._tok is not None:
            return len(self._tok.encode(text, add_special_tokens=False))
        if not self._is_vllm:
            raise self._no_tokenizer()
        return int(self._post_json("/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False})["count"])

    def max_model_len(self) -> int:
        if self._max_model_len is None:
            # Neither the server nor the caller said; 2048 is what costtax's own engines use.
            # provenance() records max_model_len_source="assumed".
            self._max_model_len, self._max_model_len_source = 2048, "assumed"
        return self._max_model_len

    # -- server state ------------------------------------------------------------------------
    def reset_prefix_cache(self) -> bool:
        """POST /reset_prefix_cache (vLLM with VLLM_SERVER_DEV_MODE=1). False where the endpoint
        is absent or the reset failed; provenance() records "not reset" and why."""
        self._require_started()
        import httpx

        try:
            r = self._sync.post(f"{self.root_url}/reset_prefix_cache")
        except httpx.HTTPError as exc:
            self._reset_state = f"not reset: {type(exc).__name__}"
            return False
        if r.status_code in (404, 405):
            self._reset_state = "not reset: the server has no /reset_prefix_cache (vLLM needs VLLM_SERVER_DEV_MODE=1)"
            return False
        if r.status_code != 200:
            self._reset_state = f"not reset: HTTP {r.status_code}"
            return False
        try:
            ok = bool(r.json().get("success", True))
        except (ValueError, AttributeError):
            ok = True  # older vLLM answers 200 with an empty body
        if not ok:
            self._reset_state = "not reset: the server refused (blocks still in use by running requests)"
            return False
        self._reset_state = "reset"
        return True

    def counters(self) -> dict[str, Any]:
        """vLLM's Prometheus counters and gauges (see _COUNTERS/_GAUGES); {} if unavailable."""
        if self._sync is None:
            return {}
        import httpx

        try:
            r = self._sync.get(f"{self.root_url}/metrics")
        except httpx.HTTPError:
            self._metrics_available = False
            return {}
        if r.status_code != 200:
            self._metrics_available = False
            return {}
        out = counters_from_metrics(r.text)
        self._metrics_available = bool(out)
        return out

    def last_batch_stats(self) -> BatchStats:
        return self._last_stats

    # -- generation ----------------------------------------------------------------------------
    def _body(self, req: GenRequest, sampling: SamplingSpec, k: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(req.messages),
            "n": 1,
            "max_tokens": req.max_tokens or sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.per_request_seed:
            body["seed"] = sample_seed(sampling.seed, req.request_id, k)
        if sampling.ignore_eos:
            body["ignore_eos"] = True  # vLLM extension: run every sample to max_tokens
        if not req.share_prefix:
            # vLLM extension: a salt per sample keeps the samples from sharing prefix blocks.
            body["cache_salt"] = f"costtax-{req.request_id}-{k}-{sample_seed(sampling.seed, req.request_id, k)}"
        if self._is_vllm:
            body["return_token_ids"] = True
        if req.continue_final:
            # vLLM chat extension: continue the partial assistant turn instead of opening a new one
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        return body

    async def _one(self, req: GenRequest, sampling: SamplingSpec, k: int) -> dict[str, Any]:
        """One streamed request (one sample); returns what it observed."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        body = self._body(req, sampling, k)
        text: list[str] = []
        ids: list[int] = []
        got_ids = False
        t_first = t_last = None
        chunks = 0
        finish = None
        usage = None
        metrics = None
        done = False
        try:
            async with self._aclient.stream("POST", url, json=body) as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread()).decode(errors="replace")[:300]
                    raise ServerRequestError(f"POST {url} (request {req.request_id}, sample {k}): HTTP {resp.status_code}: {detail}")
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators and ": keep-alive" comments
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError as exc:
                        raise ServerRequestError(f"POST {url}: malformed stream chunk {data[:120]!r}") from exc
                    if "error" in chunk:
                        raise ServerRequestError(f"POST {url} (request {req.request_id}, sample {k}): server error: {chunk['error']}")
                    now = time.monotonic()
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        piece = delta.get("content") or ""
                        tok = choice.get("token_ids")
                        if tok is not None:
                            got_ids = True
                            ids.extend(int(t) for t in tok)
                        if piece or tok:
                            chunks += 1
                            text.append(piece)
                            if t_first is None:
                                t_first = now
                            t_last = now
                        if choice.get("finish_reason") is not None:
                            finish = choice["finish_reason"]
                            t_last = now if t_last is None else t_last
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    if chunk.get("metrics"):
                        metrics = chunk["metrics"]
        except httpx.HTTPError as exc:
            raise ServerRequestError(
                f"POST {url} (request {req.request_id}, sample {k}): {type(exc).__name__}: {exc or 'connection lost'}"
            ) from exc
        if finish is None and not done:
            raise ServerRequestError(f"POST {url} (request {req.request_id}, sample {k}): the stream ended before the answer finished (server died?)")
        return {"text": "".join(text), "ids": ids if got_ids else None, "finish": finish, "usage": usage,
                "metrics": metrics, "chunks": chunks, "t_first": t_first, "t_last": t_last or time.monotonic()}

    async def _agen(self, req: GenRequest, sampling: SamplingSpec, t_submit: float) -> GenResult:
        tasks = [asyncio.ensure_future(self._one(req, sampling, k)) for k in range(req.n)]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        t_end = time.monotonic()
        return self._aggregate(req, parts, t_submit, t_end)

    def _aggregate(self, req: GenRequest, parts: list[dict], t_submit: float, t_end: float) -> GenResult:
        samples: list[Sample] = []
        plens: list[int] = []
        cached: int | None = 0
        queue: list[float] = []
        for p in parts:
            usage = p["usage"] or {}
            if p["ids"] is not None:
                samples.append(Sample(text=p["text"], token_ids=tuple(p["ids"]), finish_reason=p["finish"]))
                self._output_tokens_source = "token_ids"
            else:
                n_out, src = usage.get("completion_tokens"), "usage"
                if n_out is None and self._tok is not None:
                    n_out, src = len(self._tok.encode(p["text"], add_special_tokens=False)), "local retokenisation"
                if n_out is None:
                    # Each streamed chunk carries at least one token: a lower bound, labelled.
                    n_out, src = p["chunks"], "streamed chunks (lower bound)"
                samples.append(CountedSample(text=p["text"], token_ids=(), finish_reason=p["finish"],
                                             reported_output_tokens=int(n_out)))
                self._output_tokens_source = src
            if usage.get("prompt_tokens") is not None:
                plens.append(int(usage["prompt_tokens"]))
            details = usage.get("prompt_tokens_details") or {}
            if cached is not None and details.get("cached_tokens") is not None:
                cached += int(details["cached_tokens"])
            else:
                cached = None  # unknown for one sample -> unknown for the request, never 0
            q = (p["metrics"] or {}).get("queue_time_ms")
            if q is not None:
                queue.append(float(q) / 1000.0)
        # What the server reported, over every response so far (None until the first one).
        for key, seen in (("prompt_tokens", len(plens) == len(parts)), ("cached_tokens", cached is not None),
                          ("queue_time", len(queue) == len(parts))):
            prev = self._usage_seen[key]
            self._usage_seen[key] = seen if prev is None else (prev and seen)
        plen: int | None = max(plens) if plens else None
        if plen is None and self._tok is not None:
            plen = self.count_tokens(self.render(req.messages, continue_final=req.continue_final))  # the server did not say: count it here
        firsts = [p["t_first"] for p in parts if p["t_first"] is not None]
        n = len(parts)
        if plen is None:
            computed = None
        elif cached is None:
            computed = plen * n  # unknown cache hits: every sample counted as prefilled (upper bound)
        else:
            computed = max(plen * n - cached, 0)
        return GenResult(
            request_id=req.request_id,
            samples=tuple(samples),
            prompt_tokens=plen,  # type: ignore[arg-type]  # None only where neither usage nor a tokenizer can say
            prompt_tokens_computed=computed,  # type: ignore[arg-type]
            cached_prompt_tokens=cached,
            t_submit_s=t_submit,
            t_first_token_s=min(firsts) if firsts else None,
            t_finish_s=max(p["t_last"] for p in parts) if parts else t_end,
            ttft_source="stream" if firsts else None,
            queue_s=max(queue) if len(queue) == n and queue else None,
        )

    async def agenerate(self, request: GenRequest, sampling: SamplingSpec) -> GenResult:
        """One request of request.n samples (n concurrent streamed requests on the server)."""
        self._require_started()
        t_submit = time.monotonic()
        coro = self._agen(request, sampling, t_submit)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def generate(self, requests: Sequence[GenRequest], sampling: SamplingSpec) -> list[GenResult]:
        """The batch API (warm-up, offline mode): every request at once, results in order."""
        self._require_started()
        before = self.counters()

        async def run_all():
            t_submit = time.monotonic()
            tasks = [asyncio.ensure_future(self._agen(r, sampling, t_submit)) for r in requests]
            try:
                return await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

        results = asyncio.run_coroutine_threadsafe(run_all(), self._loop).result()
        after = self.counters()

        def diff(key):
            if key in before and key in after:
                return int(after[key] - before[key])
            return None

        self._last_stats = BatchStats(prefix_cache_queries=diff("prefix_cache_queries"), prefix_cache_hits=diff("prefix_cache_hits"))
        return list(results)

    # -- provenance ---------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "base_url": self.base_url,
            "model": self.model,
            "server": "vllm" if self._is_vllm else ("unknown" if self._started_flag else None),
            "server_version": self._server_version,
            "started_by_costtax": self.launch is not None,
            "launch": self.launch,
            "tokenizer_source": self._tokenizer_source,
            "max_model_len": self._max_model_len,
            "max_model_len_source": self._max_model_len_source,
            "prefix_cache_reset": self._reset_state,
            # True/False once a response was seen: did the server report these per request?
            "usage_prompt_tokens": self._usage_seen["prompt_tokens"],
            "usage_cached_tokens": self._usage_seen["cached_tokens"],
            "per_request_queue_time": self._usage_seen["queue_time"],
            "server_metrics": self._metrics_available,
            "output_tokens_source": self._output_tokens_source,
            "ttft_source": "stream",
            "samples_as_requests": True,
            "per_request_seed": self.per_request_seed,
            "engine_seed": self.seed,
            "engine_start_s": self._start_s,
        }
