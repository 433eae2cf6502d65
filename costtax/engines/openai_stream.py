"""One sample as one streamed chat completion: the request body (per-sample seed, cache salt, vLLM
extensions) and the reading of its server-sent event stream (TTFT = the first chunk carrying
text or token ids). Used by engines/openai.py, which fans a request's n samples out."""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from ..errors import CosttaxError
from .base import GenRequest, SamplingSpec


class ServerRequestError(CosttaxError, RuntimeError):
    """A request to the server failed (connection lost, server died, HTTP error, malformed or
    truncated stream). The cell runner catches it to mark the level failed; it is never
    swallowed here."""


def sample_seed(seed: int, request_id: str, k: int) -> int:
    """Deterministic per-sample seed in [0, 2**31): same (seed, request id, index) -> same seed."""
    h = hashlib.sha256(f"{seed}|{request_id}|{k}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def chat_body(
    req: GenRequest, sampling: SamplingSpec, k: int, *, model: str | None, per_request_seed: bool, vllm: bool
) -> dict[str, Any]:
    """The JSON body of sample k of `req`: one streamed chat completion of n=1 (usage included)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": list(req.messages),
        "n": 1,
        "max_tokens": req.max_tokens or sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if per_request_seed:
        body["seed"] = sample_seed(sampling.seed, req.request_id, k)
    if sampling.ignore_eos:
        body["ignore_eos"] = True  # vLLM extension: run every sample to max_tokens
    if not req.share_prefix:
        # vLLM extension: a salt per sample keeps the samples from sharing prefix blocks.
        body["cache_salt"] = f"costtax-{req.request_id}-{k}-{sample_seed(sampling.seed, req.request_id, k)}"
    if vllm:
        body["return_token_ids"] = True
    if req.continue_final:
        # vLLM chat extension: continue the partial assistant turn instead of opening a new one
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    return body


async def stream_sample(client, url: str, body: dict[str, Any], req: GenRequest, k: int) -> dict[str, Any]:
    """POST one streamed chat completion (sample k of `req`) with the httpx.AsyncClient `client`;
    returns what it observed: text, token ids (None where the server sent none), finish reason,
    usage, per-request metrics, chunks carrying text, monotonic times of the first and last.
    Any failure (HTTP error, server error chunk, malformed or truncated stream) raises
    ServerRequestError naming the request and sample."""
    import httpx

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
        async with client.stream("POST", url, json=body) as resp:
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
