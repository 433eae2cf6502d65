"""Reward models behind an OpenAI-compatible server.

Specs (``--reward-model`` / ``--eval-reward-model``):

* ``served`` -- the judge (the same few-shot template, answer tokens and refusal rule as
  ``judge``) asked through the server the policy runs on (``--serve``, or ``--engine openai
  --base-url``). The judge model is then the served model, by construction: valid only with a
  served policy.
* ``openai:URL[,model=NAME][,tokenizer=DIR][,kind=judge|scalar]`` -- another server. ``kind=judge``
  (default): the judge on that server's model. ``kind=scalar``: a reward model the server runs as
  a pooling model (vLLM ``--runner pooling``); each pair is sent as chat messages (user prompt,
  assistant response, as ``scalar:DIR`` formats them) to ``/pooling`` with ``task=classify`` and
  no activation, so the reward is the head's raw output. vLLM has no /reward endpoint.

One judged pair is one ``/v1/completions`` request: the judging prompt as token ids (rendered
and tokenised by costtax exactly as the in-process judge does, so no chat-template drift on the
server), ``max_tokens=1``, ``logprobs`` with ``logprob_token_ids=[Yes, No]`` (vLLM >= 0.11: the
log-probs of exactly those tokens, whatever the top-k; top-k could miss "No"). vLLM's default
``logprobs_mode`` is raw log-probs of the unprocessed logits, so logprob(Yes) - logprob(No) =
logit(Yes) - logit(No), the in-process judge's reward. The pairs of one ``score()`` call go out
concurrently, so the server batches them and its prefix cache holds the shared instructions;
cached prompt tokens come back per pair in ``usage`` (``--serve`` turns that on). costtax's
reward micro-batcher (costtax.rewards.batcher) still merges concurrent score calls into one such call.

Tokenizer: the served model's directory when it is local (``--serve``; ``openai:`` with a model
name that is a directory, or ``tokenizer=DIR``); otherwise the server's ``/tokenize`` and
``/detokenize`` (vLLM), three round trips per pair.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .base import ScoreBatch

from .server_spec import SERVED, ServerRewardSpec

def make_server_reward(rs: ServerRewardSpec, *, policy: Any = None, field: str = "--reward-model", **options):
    """Build (not load) the reward model for a server spec. ``policy``: the run's openai engine
    (``served`` reads its base_url, model name and tokenizer directory)."""
    if rs.via == "served":
        if policy is None or not getattr(policy, "base_url", None):
            raise ConfigError(field, SERVED, "'served' needs the policy's server (--serve or --engine openai --base-url URL)")
        return ServedJudge(policy.base_url, getattr(policy, "model", None), tokenizer=getattr(policy, "tokenizer_dir", None),
                           name=SERVED, field=field, **options)
    if rs.kind == "scalar":
        return ServedScalar(rs.url, rs.model, name=rs.name, field=field)
    tok = rs.tokenizer or (rs.model if rs.model and (Path(rs.model).expanduser() / "config.json").is_file() else None)
    return ServedJudge(rs.url, rs.model, tokenizer=tok, name=rs.name, field=field, **options)


class _Client:
    """Thread-safe HTTP to one OpenAI-compatible server; resolves the model name."""

    def __init__(self, base_url: str, model: str | None, field: str, name: str, timeout_s: float = 600.0):
        import httpx

        self.base_url, self.field, self.name = base_url.rstrip("/"), field, name
        self.http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0), limits=httpx.Limits(max_connections=64))
        try:
            listed = self.get("/models").get("data") or []
        except Exception as exc:
            self.close()
            raise ConfigError(field, name, f"no reward server answered at {self.base_url}/models ({type(exc).__name__}: {exc})") from None
        ids = [m.get("id") for m in listed]
        if model is None:
            if len(ids) != 1:
                self.close()
                raise ConfigError(field, name, f"the server lists {len(ids)} models {ids}; name one with model=NAME")
            model = ids[0]
        elif model not in ids:
            self.close()
            raise ConfigError(field, name, f"the server does not serve {model!r} (it lists {ids}); fix model=NAME")
        self.model = model
        self.max_model_len = next((m.get("max_model_len") for m in listed if m.get("id") == model), None)

    def get(self, path: str) -> dict:
        r = self.http.get(self.base_url + path)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict, root: bool = False) -> dict:
        url = (self.base_url.rsplit("/v1", 1)[0] if root else self.base_url) + path
        r = self.http.post(url, json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"reward server {url} answered HTTP {r.status_code}: {r.text[:300]}")
        return r.json()

    def close(self) -> None:
        self.http.close()


class ServerTokenizer:
    """The subset of a transformers tokenizer the judge's prompt code uses, through vLLM's
    /tokenize and /detokenize (for a remote judge without a local tokenizer)."""

    chat_template = "server"  # truthy: the server's template renders the chat
    eos_token_id = None

    def __init__(self, client: _Client):
        self.c = client

    def _tok(self, body: dict) -> list[int]:
        return list(self.c.post("/tokenize", {"model": self.c.model, **body}, root=True)["tokens"])

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, **kw):
        ids = self._tok({"messages": list(messages), "add_generation_prompt": add_generation_prompt})
        return self.decode(ids)

    def __call__(self, text: str, add_special_tokens: bool = False):
        return {"input_ids": self._tok({"prompt": text, "add_special_tokens": add_special_tokens})}

    def decode(self, ids) -> str:
        return self.c.post("/detokenize", {"model": self.c.model, "tokens": list(ids)}, root=True)["prompt"]

    def convert_ids_to_tokens(self, ids):
        return [self.decode([i]) for i in ids]


class _ServerRewardBase:
    kind = "judge"

    def __init__(self, base_url: str, model: str | None, *, name: str, field: str, max_concurrency: int = 32, timeout_s: float = 600.0):
        self.base_url, self.model_arg, self.name, self._field = base_url, model, name, field
        self.max_concurrency, self.timeout_s = int(max_concurrency), float(timeout_s)
        self._client: _Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._load_s: float | None = None
        self.stats = {"calls": 0, "pairs": 0, "tokens": 0, "prefix_cached_tokens": 0, "requests": 0}

    @property
    def loaded(self) -> bool:
        return self._client is not None

    def load(self) -> float:
        if self._client is not None:
            return self._load_s or 0.0
        t0 = time.perf_counter()
        self._client = _Client(self.base_url, self.model_arg, self._field, self.name, self.timeout_s)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="costtax-reward-http")
        self._load_s = time.perf_counter() - t0
        return self._load_s

    def _setup(self) -> None:
        pass

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _map(self, fn, items: list) -> list:
        if len(items) <= 1:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    def _batch(self, rewards, tokens, cached, t0: float) -> ScoreBatch:
        known = all(c is not None for c in cached)
        self.stats["calls"] += 1
        self.stats["pairs"] += len(rewards)
        self.stats["tokens"] += sum(tokens)
        self.stats["requests"] += len(rewards)
        if known:
            self.stats["prefix_cached_tokens"] += sum(cached)
        return ScoreBatch(
            rewards=tuple(float(r) for r in rewards),
            tokens=tuple(int(t) for t in tokens),
            padding_fraction=0.0,
            path="server",
            latency_s=time.perf_counter() - t0,
            cached_tokens=tuple(int(c) for c in cached) if known else (),
            computed_tokens=tuple(int(t - c) for t, c in zip(tokens, cached)) if known else (),
        )

    def provenance(self) -> dict:
        c = self._client
        return {
            "name": self.name, "kind": self.kind, "via": "server", "base_url": self.base_url,
            "model": c.model if c else self.model_arg, "server_max_model_len": c.max_model_len if c else None,
            "loaded": self.loaded, "load_s": self._load_s, "max_concurrency": self.max_concurrency, "stats": dict(self.stats),
            "kernel_path": "server",
        }


def _cached_tokens(usage: dict | None) -> int | None:
    details = (usage or {}).get("prompt_tokens_details") or {}
    v = details.get("cached_tokens")
    return int(v) if v is not None else None


class ServedJudge(_ServerRewardBase):
    """The few-shot judge through a server: reward = logprob(Yes) - logprob(No) of the next token."""

    kind = "judge"

    def __init__(self, base_url: str, model: str | None, *, tokenizer: str | None = None, name: str = SERVED,
                 field: str = "--reward-model", template: str | dict = "fewshot", answers: tuple[str, str] = ("Yes", "No"),
                 refusal_margin: float | None = None, max_concurrency: int = 32, timeout_s: float = 600.0):
        super().__init__(base_url, model, name=name, field=field, max_concurrency=max_concurrency, timeout_s=timeout_s)
        from .judge import REFUSAL_MARGIN, JudgeReward

        self.tokenizer_dir = str(tokenizer) if tokenizer else None
        # the in-process judge's prompt code, on a tokenizer only (its model is never loaded)
        self._judge = JudgeReward(self.tokenizer_dir or "server", template=template, answers=answers,
                                  refusal_margin=REFUSAL_MARGIN if refusal_margin is None else refusal_margin, field=field)
        self.refusal_margin = self._judge.refusal_margin
        self.token_ids: tuple[int, int] | None = None

    def _setup(self) -> None:
        j = self._judge
        if self.tokenizer_dir:
            from transformers import AutoTokenizer

            j._tok = AutoTokenizer.from_pretrained(self.tokenizer_dir)
            self._tokenizer_source = f"local:{self.tokenizer_dir}"
        else:
            j._tok = ServerTokenizer(self._client)
            self._tokenizer_source = "server:/tokenize"
        # the prompt plus the one token asked for must fit the server's context
        j.max_length = int(self._client.max_model_len or 2048) - 1
        yes, how_y = j._answer_token(j.answers[0])
        no, how_n = j._answer_token(j.answers[1])
        if yes == no:
            raise ConfigError(self._field, self.name, f"{j.answers[0]!r} and {j.answers[1]!r} start with the same token {yes}")
        self.token_ids = (int(yes), int(no))
        self._token_how = how_y if how_y == how_n else f"{how_y} / {how_n}"

    def encode(self, prompt: str, response: str) -> list[int]:
        """The judging prompt's token ids, exactly as the in-process judge builds them."""
        return self._judge._fit(str(prompt), str(response))[0]

    def _one(self, ids: list[int]) -> tuple[float, int | None]:
        yes, no = self.token_ids
        body = {
            "model": self._client.model, "prompt": ids, "max_tokens": 1, "temperature": 0.0,
            "logprobs": 1, "logprob_token_ids": [yes, no], "return_tokens_as_token_ids": True,
        }
        out = self._client.post("/completions", body)
        try:
            top = out["choices"][0]["logprobs"]["top_logprobs"][0]
            lp_yes, lp_no = float(top[f"token_id:{yes}"]), float(top[f"token_id:{no}"])
        except (KeyError, IndexError, TypeError) as exc:
            raise RuntimeError(
                f"reward server {self.base_url} did not return log-probs of tokens {yes} and {no} ({type(exc).__name__}: {exc}); "
                "it needs vLLM >= 0.11 (logprob_token_ids)"
            ) from None
        return lp_yes - lp_no, _cached_tokens(out.get("usage"))

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, harmful: Sequence[bool] | None = None) -> ScoreBatch:
        prompts, responses = [str(p) for p in prompts], [str(r) for r in responses]
        if len(prompts) != len(responses):
            raise ValueError(f"score(): {len(prompts)} prompts but {len(responses)} responses")
        if self._client is None:
            self.load()
        t0 = time.perf_counter()
        seqs = [self.encode(p, r) for p, r in zip(prompts, responses)]
        got = self._map(self._one, seqs)
        rewards = [g[0] for g in got]
        if harmful is not None and self.refusal_margin:
            from .judge import refusal_adjusted

            flags = list(harmful)
            if len(flags) != len(rewards):
                raise ValueError(f"score(): {len(flags)} harmful flags for {len(rewards)} pairs")
            rewards = list(refusal_adjusted(rewards, responses, flags, self.refusal_margin))
        return self._batch(rewards, [len(s) for s in seqs], [g[1] for g in got], t0)

    def provenance(self) -> dict:
        from .judge import text_sha, weak_proxy_reason

        info = super().provenance()
        j = self._judge
        info.update(
            judge_template=j.template_name, judge_template_sha=text_sha(j.template_text()),
            judge_examples=len(j.template["examples"]), answers=list(j.answers),
            reward=f"logprob({j.answers[0]!r}) - logprob({j.answers[1]!r}) of the next token from /v1/completions "
            "logprob_token_ids (raw log-probs: equals the logit difference)",
            refusal_margin=self.refusal_margin, tokenizer_source=getattr(self, "_tokenizer_source", None),
        )
        model = info.get("model")
        from ..model_files import EMBEDDED, converted_dir

        alias = next((a for a in EMBEDDED if model and str(converted_dir(a)) == str(model)), model)
        reason = weak_proxy_reason(alias, j.template_name, info["judge_template_sha"])
        info["weak_proxy"] = True if reason else None
        if reason:
            info["weak_proxy_reason"] = reason
        if self.token_ids:
            info["answer_token_ids"] = list(self.token_ids)
            info["answer_token_rule"] = self._token_how
        return info


class ServedScalar(_ServerRewardBase):
    """A scalar reward model a server runs as a pooling model: /pooling, task=classify, raw output."""

    kind = "scalar"

    def _one(self, pair: tuple[str, str]) -> tuple[float, int, int | None]:
        prompt, response = pair
        body = {
            "model": self._client.model, "task": "classify", "use_activation": False,
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
        }
        out = self._client.post("/pooling", body, root=True)
        try:
            data = out["data"][0]["data"]
            value = data[0] if isinstance(data, list) else data
            if isinstance(value, list):
                value = value[0] if len(value) == 1 else float("nan")
            reward = float(value)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RuntimeError(f"reward server {self.base_url}: /pooling gave no scalar ({type(exc).__name__}: {exc})") from None
        if math.isnan(reward):
            raise RuntimeError(f"reward server {self.base_url}: /pooling gave {len(data)} values per pair; a scalar reward model has one label")
        usage = out.get("usage") or {}
        return reward, int(usage.get("prompt_tokens") or 0), _cached_tokens(usage)

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, harmful: Sequence[bool] | None = None) -> ScoreBatch:
        if len(prompts) != len(responses):
            raise ValueError(f"score(): {len(prompts)} prompts but {len(responses)} responses")
        if self._client is None:
            self.load()
        t0 = time.perf_counter()
        got = self._map(self._one, [(str(p), str(r)) for p, r in zip(prompts, responses)])
        return self._batch([g[0] for g in got], [g[1] for g in got], [g[2] for g in got], t0)
