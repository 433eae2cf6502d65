"""Usage accounting for the OpenAI-compatible engine: a request's streamed samples -> one
GenResult. Token counts come from the server's `usage` (prompt, cached prompt, completion
tokens) and vLLM's per-request metrics (queue time); where the server does not report one it is
None ("unknown", never 0) or counted here with the fallback named in `output_tokens_source`.
The ledger also remembers, over every response so far, whether the server reported each field
(recorded in provenance)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .base import GenRequest, GenResult, Sample


@dataclass(frozen=True)
class CountedSample(Sample):
    """A sample whose token ids the server did not return: `output_tokens` is the server's
    `usage.completion_tokens` (see UsageLedger.result for the fallbacks) instead of
    len(token_ids)."""

    reported_output_tokens: int = 0

    @property
    def output_tokens(self) -> int:  # type: ignore[override]
        return self.reported_output_tokens


class UsageLedger:
    """What the server reported, over every response so far, and where output counts came from."""

    def __init__(self):
        # True/False once a response was seen: did the server report these per request?
        self.seen: dict[str, bool | None] = {"prompt_tokens": None, "cached_tokens": None, "queue_time": None}
        self.output_tokens_source: str | None = None

    def result(
        self, req: GenRequest, parts: list[dict], t_submit: float, t_end: float, *, tokenizer=None,
        count_prompt: Callable[[GenRequest], int] | None = None,
    ) -> GenResult:
        """One GenResult from a request's streamed samples (``parts``, from stream_sample).
        ``tokenizer`` (encode) counts output tokens the server did not report; ``count_prompt``
        counts the prompt where usage does not say."""
        samples: list[Sample] = []
        plens: list[int] = []
        cached: int | None = 0
        queue: list[float] = []
        for p in parts:
            usage = p["usage"] or {}
            if p["ids"] is not None:
                samples.append(Sample(text=p["text"], token_ids=tuple(p["ids"]), finish_reason=p["finish"]))
                self.output_tokens_source = "token_ids"
            else:
                n_out, src = usage.get("completion_tokens"), "usage"
                if n_out is None and tokenizer is not None:
                    n_out, src = len(tokenizer.encode(p["text"], add_special_tokens=False)), "local retokenisation"
                if n_out is None:
                    # Each streamed chunk carries at least one token: a lower bound, labelled.
                    n_out, src = p["chunks"], "streamed chunks (lower bound)"
                samples.append(CountedSample(text=p["text"], token_ids=(), finish_reason=p["finish"],
                                             reported_output_tokens=int(n_out)))
                self.output_tokens_source = src
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
            prev = self.seen[key]
            self.seen[key] = seen if prev is None else (prev and seen)
        plen: int | None = max(plens) if plens else None
        if plen is None and count_prompt is not None:
            plen = count_prompt(req)  # the server did not say: count it here
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
