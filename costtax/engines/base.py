"""The engine contract: batched generation with n samples per prompt, and exact records.

Clock: every timestamp an engine returns (t_*_s) is seconds on `time.monotonic()`; the
profiler subtracts its run epoch. CLOCK_MONOTONIC is system-wide on Linux, so vLLM's engine
core (another process) stamps tokens on the same clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

Message = dict  # {"role": "...", "content": "..."}


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling parameters shared by every technique (plain included)."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int = 0
    # Fixed-length generation (vLLM's ignore_eos): every sample runs to max_tokens, so two
    # measurements of throughput do identical work (cross-checks against vLLM's own benchmark).
    ignore_eos: bool = False

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")


@dataclass(frozen=True)
class GenRequest:
    """One request: a chat conversation, n samples.

    share_prefix=False asks the engine to make the n samples unable to share the prompt's
    prefill (n separate requests with distinct cache salts on vLLM): the naive best-of-N layout.
    """

    request_id: str
    messages: tuple[Message, ...]
    n: int = 1
    share_prefix: bool = True
    max_tokens: int | None = None  # overrides SamplingSpec.max_tokens
    # Token-level continuation (early-stopping best-of-N): the last message is a partial
    # assistant turn; the engine renders the conversation without a new generation prompt and
    # continues that turn (transformers/vLLM `continue_final_message`). The prefix cache then
    # serves prompt + partial output, so resuming costs only the new tokens (block granularity).
    continue_final: bool = False

    def __post_init__(self):
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if not self.messages:
            raise ValueError("messages must not be empty")
        if self.continue_final and self.messages[-1].get("role") != "assistant":
            raise ValueError("continue_final needs a partial assistant message last")


@dataclass(frozen=True)
class Sample:
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None  # "stop" | "length" | None

    @property
    def output_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class GenResult:
    request_id: str
    samples: tuple[Sample, ...]
    prompt_tokens: int  # per sample: the prompt length
    prompt_tokens_computed: int  # prompt tokens the engine prefilled over all n samples
    cached_prompt_tokens: int | None  # served from the prefix cache (None: engine cannot say)
    t_submit_s: float
    t_first_token_s: float | None
    t_finish_s: float
    ttft_source: str | None = None  # "engine" | "batch" | "stream" (openai: first streamed chunk) | None
    # Seconds the request waited in the engine's queue before it was scheduled, where the engine
    # reports it (vLLM's request stats: queued -> scheduled); None where it cannot say.
    queue_s: float | None = None
    # The engine batch that served the request where the engine forms batches itself (HF's
    # batching worker); None where batching is continuous (vLLM). Feeds the cold-start detector.
    batch_id: str | None = None

    @property
    def output_tokens(self) -> int:
        return sum(s.output_tokens for s in self.samples)


@dataclass(frozen=True)
class BatchStats:
    """Engine-level counters for one generate() call, where the engine exposes them."""

    prefix_cache_queries: int | None = None
    prefix_cache_hits: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    name: str

    def start(self) -> float:
        """Load the model and warm up; returns the cold-start seconds."""

    def generate(self, requests: Sequence[GenRequest], sampling: SamplingSpec) -> list[GenResult]:
        """Run a batch of requests; results in request order."""

    def render(self, messages: Sequence[Message]) -> str:
        """The exact prompt string the engine feeds the model (chat template applied)."""

    def count_tokens(self, text: str) -> int: ...

    def max_model_len(self) -> int: ...

    def reset_prefix_cache(self) -> bool:
        """Drop cached prefixes so one cell cannot warm the next. False if unsupported."""

    def last_batch_stats(self) -> BatchStats: ...

    def provenance(self) -> dict[str, Any]:
        """Engine name, versions, dtype, device, prefix caching, settings."""

    def close(self) -> None: ...


@runtime_checkable
class AsyncEngine(Protocol):
    """The engine contract under load: one request at a time, awaited, many in flight.

    Techniques are per-answer programs (`async def answer(inst, ctx)`); every answer of a load
    level runs concurrently on one asyncio event loop, so an engine must accept overlapping
    `agenerate` calls and batch them itself (vLLM's scheduler, an HTTP server, or a batching
    worker thread for HF). `agenerate` may be awaited from any event loop: engines that need a
    loop of their own (vLLM's AsyncLLM) run it in a private thread and bridge with
    `asyncio.run_coroutine_threadsafe` / `asyncio.wrap_future`.

    Everything else (start, render, count_tokens, max_model_len, reset_prefix_cache,
    provenance, close) is the synchronous `Engine` API, called outside the event loop.
    """

    name: str

    async def agenerate(self, request: GenRequest, sampling: SamplingSpec) -> GenResult:
        """One request of `request.n` samples; timestamps on time.monotonic()."""

    def counters(self) -> dict[str, Any]:
        """Engine-side cumulative counters and gauges, read before and after a load level:
        prefix_cache_queries, prefix_cache_hits (cumulative tokens), kv_cache_usage (0..1),
        num_requests_waiting, num_requests_running, where the engine exposes them; {} otherwise."""
