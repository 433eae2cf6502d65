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
- Server-side counters come from vLLM's Prometheus `/metrics` (engines/prometheus.py, no dependency).
- One job per module: this file is the engine adaptor (lifecycle, tokens, server state, the fan-out
  of n samples, provenance); engines/openai_stream.py sends and reads one streamed sample;
  engines/openai_usage.py turns the samples into a GenResult with its token accounting.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, EngineUnavailable
from .base import BatchStats, GenRequest, GenResult, Message, SamplingSpec
from .loop_thread import LoopThread
from .openai_stream import ServerRequestError, chat_body, stream_sample
from .openai_usage import UsageLedger
from .prometheus import counters_from_metrics


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
        self._loop: LoopThread | None = None
        self._aclient = None  # httpx.AsyncClient living on self._loop
        self._tok = None
        self._tokenizer_source: str | None = None
        self._server_version: str | None = None
        self._is_vllm = False
        self._max_model_len: int | None = None
        self._max_model_len_source: str | None = None
        self._reset_state = "not requested"
        self._metrics_available: bool | None = None
        self._usage = UsageLedger()
        self._last_stats = BatchStats()

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

        self._loop = LoopThread("costtax-openai-client")

        async def make_client():
            # No connection limit: a pool limit would queue requests in the client, invisibly.
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
            return httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers())

        self._aclient = self._loop.call(make_client())

    def worker_kwargs(self) -> dict[str, Any]:
        """What a client worker process (costtax/run/client_workers.py) needs to open its own
        engine on the same server: its own loop and connection pool, the same model and seeds."""
        return {"base_url": self.base_url, "model": self.model, "tokenizer": self.tokenizer_dir, "api_key": self.api_key,
                "max_model_len": self._max_model_len_arg, "seed": self.seed, "trust_remote_code": self.trust_remote_code,
                "per_request_seed": self.per_request_seed, "connect_timeout_s": self.connect_timeout_s,
                "request_timeout_s": self.request_timeout_s, "url_field": self.url_field}

    def client_loop(self):
        """(thread name, loop) of the private loop every request is sent and read on (the
        client's lag gauge times it: costtax/metering/client_gauge.py); None before start()."""
        if self._loop is None:
            return None
        return self._loop.thread.name, self._loop.loop

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            try:
                loop.call(self._aclient.aclose(), timeout=5)
            except Exception:
                pass
            loop.stop(timeout=5)
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
        """vLLM's Prometheus counters and gauges (engines/prometheus.py); {} if unavailable."""
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
    def _sample(self, req: GenRequest, sampling: SamplingSpec, k: int):
        body = chat_body(req, sampling, k, model=self.model, per_request_seed=self.per_request_seed, vllm=self._is_vllm)
        return stream_sample(self._aclient, f"{self.base_url}/chat/completions", body, req, k)

    def _count_prompt(self, req: GenRequest) -> int:
        """The prompt's tokens counted here (the server did not say)."""
        return self.count_tokens(self.render(req.messages, continue_final=req.continue_final))

    async def _agen(self, req: GenRequest, sampling: SamplingSpec, t_submit: float) -> GenResult:
        tasks = [asyncio.ensure_future(self._sample(req, sampling, k)) for k in range(req.n)]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        t_end = time.monotonic()
        return self._usage.result(req, parts, t_submit, t_end, tokenizer=self._tok,
                                  count_prompt=self._count_prompt if self._tok is not None else None)

    async def agenerate(self, request: GenRequest, sampling: SamplingSpec) -> GenResult:
        """One request of request.n samples (n concurrent streamed requests on the server)."""
        self._require_started()
        t_submit = time.monotonic()
        return await self._loop.run(self._agen(request, sampling, t_submit))

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

        results = self._loop.call(run_all())
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
            "usage_prompt_tokens": self._usage.seen["prompt_tokens"],
            "usage_cached_tokens": self._usage.seen["cached_tokens"],
            "per_request_queue_time": self._usage.seen["queue_time"],
            "server_metrics": self._metrics_available,
            "output_tokens_source": self._usage.output_tokens_source,
            "ttft_source": "stream",
            "samples_as_requests": True,
            "per_request_seed": self.per_request_seed,
            "engine_seed": self.seed,
            "engine_start_s": self._start_s,
        }
