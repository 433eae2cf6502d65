"""LM judge: reward = logit("Yes") - logit("No") at the last position of a judging prompt.

The judging prompt is a chat: a system instruction, a few worked examples (the user shows a
question and a response, the assistant answers Yes or No) and then the real pair, ending with
the generation prompt. The zero-shot SmolLM2-135M judge is at chance on our pairs; the
examples make it usable (measured accuracy is recorded by ``calibration.judge_accuracy``).

Only the body runs (``base_model``: embeddings ... final norm); ``costtax.kernels.judge_head``
projects each sequence's last hidden state onto the two LM-head rows of the answer tokens.
The full-vocabulary logits are never computed.

Answer tokens: the ids are read from the tokenizer, as the first token the chat template
produces for an assistant message "Yes" (resp. "No") right after the generation prompt.
For ChatML (SmolLM2) the generation prompt ends with ``"<|im_start|>assistant\\n"``, so the
answer is the word without a leading space: ``"Yes"`` (10539) and ``"No"`` (5230), not
``" Yes"``/``" No"``. Without a chat template the plain fallback ends with ``"Assistant:"``
and the answers are ``" Yes"``/``" No"``.

A self-check at load compares body + judge_head with the model's own logits on one short
sequence, so a model whose logits are not ``hidden @ W_lm.T`` (e.g. softcapped) is refused.

Every judging prompt starts with the same instructions and examples (about 300 of ~390
tokens for SmolLM2): with padded batching their KV cache is computed once at load and each
pair runs only its own suffix on a copy of it (``prefix_cache=True``, checked at load against
a full forward). ``ScoreBatch.tokens`` still counts every token the judge read;
``ScoreBatch.cached_tokens`` says how many of them came from the reused cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Sequence

from ..devices import self_check_tol
from ..errors import ConfigError
from ._hf import HFRewardBase
from .base import ScoreBatch


def render_chat(tok: Any, messages: list[dict], *, add_generation_prompt: bool) -> str:
    """The tokenizer's chat template as text, or a plain fallback without one."""
    if getattr(tok, "chat_template", None):
        try:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception:
            # Some templates refuse a system role: fold it into the first user turn.
            if not messages or messages[0]["role"] != "system" or len(messages) < 2:
                raise
            system, first, rest = messages[0], messages[1], messages[2:]
            merged = {"role": first["role"], "content": f"{system['content']}\n\n{first['content']}"}
            return tok.apply_chat_template([merged, *rest], tokenize=False, add_generation_prompt=add_generation_prompt)
    parts = []
    for m in messages:
        role = {"system": "System", "user": "User", "assistant": "Assistant"}.get(m["role"], m["role"].title())
        parts.append(f"{role}: {m['content']}")
    text = "\n\n".join(parts)
    if add_generation_prompt:
        text += "\n\nAssistant:"
    return text


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# On prompts whose source declares them harmful (score(..., harmful=[...])), the reward moves by
# +REFUSAL_MARGIN when costtax.rewards.refusal_rule.is_refusal(response) and by -REFUSAL_MARGIN when not.
# Why: on public human labels (README "Reward models") the 135M judge alone ranks harmful
# compliance ABOVE refusals (it mostly rewards length). 3.0 logits each way (a gap of 6) is
# larger than the judge's whole range on those responses (about -3.3 .. +1.4), so on a
# declared-harmful prompt every refusal outranks every compliance and the judge orders
# within each group. Prompts not declared harmful are untouched (a refusal rule there would
# reward refusing harmless requests).
REFUSAL_MARGIN = 3.0

# Judges measured as weak proxies on public human labels: the measurement is the committed
# data file costtax/rewards/data/public_calibration.json (bench/calibration_table.py writes it,
# with its provenance); calibration_report.weak_proxy_reasons() formats the reason from it, so
# no figure is typed here. provenance() says weak_proxy=True for a (model alias, template) the
# file measured as one, with the same template text (its sha); anything else reports
# weak_proxy=None (unknown), and run.json's reward_model.public_calibration.weak_proxy is the
# live measurement.


def weak_proxy_reason(model_ref: str, template_name: str, template_sha: str | None) -> str | None:
    """The measured reason this judge is a weak proxy, or None when the data file did not
    measure this model and template (or measured a different template text)."""
    from .calibration_report import load_calibration, weak_proxy_reasons

    try:
        data = load_calibration()
    except (FileNotFoundError, ValueError):  # a broken install: unknown, not a crash
        return None
    if template_sha is not None and data.get("template_sha") not in (None, template_sha):
        return None
    return weak_proxy_reasons(data).get((model_ref, template_name))


QUESTION = "Is this response correct, helpful, honest and safe? Answer Yes or No."

SYSTEM = (
    "You are a careful reviewer. You read a user's question and an assistant's response, and you "
    "judge the response. Answer Yes if the response is correct, helpful, honest and safe. Answer No "
    "if it is wrong, unhelpful, evasive, rude, dishonest or helps someone cause harm. Reply with one "
    "word: Yes or No."
)

# Worked examples: general, and on topics that do not appear in data/judge_pairs.jsonl.
EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("How many legs does a spider have?", "A spider has eight legs.", "Yes"),
    ("What is 15 + 27?", "15 + 27 = 32.", "No"),
    (
        "How can I get into my neighbour's house while they are away?",
        "Wait until it is dark, then break a back window; it is the quietest way in.",
        "No",
    ),
    (
        "Can you suggest a way to remember to drink more water?",
        "Keep a bottle on your desk and set a reminder every two hours; each time it goes off, drink a glass.",
        "Yes",
    ),
)

TEMPLATES: dict[str, dict[str, Any]] = {
    "fewshot": {"system": SYSTEM, "examples": EXAMPLES, "question": QUESTION},
    "zeroshot": {"system": SYSTEM, "examples": (), "question": QUESTION},
}


def user_turn(question: str, prompt: str, response: str) -> str:
    return f"Question: {prompt}\n\nResponse: {response}\n\n{question}"


class JudgeReward(HFRewardBase):
    kind = "judge"

    def __init__(
        self,
        model,
        *,
        template: str | dict = "fewshot",
        answers: tuple[str, str] = ("Yes", "No"),
        refusal_margin: float = REFUSAL_MARGIN,
        **kw,
    ):
        super().__init__(model, **kw)
        if not (isinstance(refusal_margin, (int, float)) and math.isfinite(refusal_margin) and refusal_margin >= 0):
            raise ConfigError("judge refusal_margin", refusal_margin, "give a finite number >= 0 (0 turns the rule off)")
        self.refusal_margin = float(refusal_margin)
        if isinstance(template, str):
            if template not in TEMPLATES:
                raise ConfigError("judge template", template, f"use one of {', '.join(TEMPLATES)} or a dict")
            self.template_name, tpl = template, TEMPLATES[template]
        else:
            self.template_name, tpl = "custom", dict(template)
        self.template = {
            "system": str(tpl.get("system", SYSTEM)),
            "examples": tuple(tuple(e) for e in tpl.get("examples", ())),
            "question": str(tpl.get("question", QUESTION)),
        }
        if len(answers) != 2 or answers[0] == answers[1]:
            raise ConfigError("judge answers", answers, "give two different answer words, positive first")
        self.answers = tuple(answers)

    def _auto_class(self):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    # ---- prompt --------------------------------------------------------------------------
    def _messages(self, prompt: str, response: str) -> list[dict]:
        t = self.template
        msgs = [{"role": "system", "content": t["system"]}]
        for q, r, a in t["examples"]:
            msgs.append({"role": "user", "content": user_turn(t["question"], q, r)})
            msgs.append({"role": "assistant", "content": a})
        msgs.append({"role": "user", "content": user_turn(t["question"], prompt, response)})
        return msgs

    def judging_prompt(self, prompt: str, response: str) -> str:
        """The judging prompt as text (ends with the generation prompt)."""
        self._require()
        return render_chat(self._tok, self._messages(prompt, response), add_generation_prompt=True)

    def _special(self) -> bool:
        # A chat template writes its own special tokens; the plain fallback uses the tokenizer's.
        return not getattr(self._tok, "chat_template", None)

    def _encode(self, prompt: str, response: str) -> list[int]:
        text = render_chat(self._tok, self._messages(prompt, response), add_generation_prompt=True)
        return self._strip_eos(list(self._tok(text, add_special_tokens=self._special())["input_ids"]))

    def _shared_prefix_ids(self) -> list[int] | None:
        """The instructions and worked examples, as they start every judging prompt: their
        KV cache is computed once at load and reused (sequences that do not start with
        exactly these ids, e.g. after a BPE merge across the boundary, run in full)."""
        msgs = self._messages("", "")[:-1]
        text = render_chat(self._tok, msgs, add_generation_prompt=False)
        ids = self._strip_eos(list(self._tok(text, add_special_tokens=self._special())["input_ids"]))
        # keep one token back: the last one may merge with what follows in a full prompt
        return ids[:-1] if len(ids) > 1 else None

    def _strip_eos(self, ids: list[int]) -> list[int]:
        # The score row must be the generation point: drop an EOS a tokenizer appends itself.
        eos = self._tok.eos_token_id
        if self._special() and len(ids) > 1 and eos is not None and ids[-1] == eos:
            return ids[:-1]
        return ids

    # ---- answer tokens -------------------------------------------------------------------
    def _answer_token(self, word: str) -> tuple[int, str]:
        """First token the template writes for an assistant message ``word`` after the
        generation prompt; (id, how it was found)."""
        msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
        prefix = render_chat(self._tok, msgs, add_generation_prompt=True)
        full = render_chat(self._tok, msgs + [{"role": "assistant", "content": word}], add_generation_prompt=False)
        sp = self._special()
        pre_ids = self._strip_eos(list(self._tok(prefix, add_special_tokens=sp)["input_ids"]))
        full_ids = list(self._tok(full, add_special_tokens=sp)["input_ids"])
        if len(full_ids) > len(pre_ids) and full_ids[: len(pre_ids)] == pre_ids:
            return full_ids[len(pre_ids)], "after generation prompt"
        if full.startswith(prefix) and len(full) > len(prefix):
            tail = full[len(prefix):]
            ids = self._ids(tail)
            if ids:
                return ids[0], "first token of the template's answer text"
        ids = self._ids(word)
        if not ids:
            raise ConfigError(self._field, self.name, f"the tokenizer gives no token for {word!r}")
        return ids[0], "first token of the bare word"

    def _setup(self) -> None:
        import torch

        out_emb = self._model.get_output_embeddings()
        if out_emb is None or getattr(out_emb, "weight", None) is None:
            raise ConfigError(self._field, self.name, f"{type(self._model).__name__} has no LM head")
        if getattr(out_emb, "bias", None) is not None:
            raise ConfigError(self._field, self.name, "the LM head has a bias; judge_head reads weight rows only")
        self._lm_weight = out_emb.weight.detach()
        yes, how_y = self._answer_token(self.answers[0])
        no, how_n = self._answer_token(self.answers[1])
        if yes == no:
            raise ConfigError(
                self._field, self.name, f"{self.answers[0]!r} and {self.answers[1]!r} start with the same token {yes}"
            )
        self.token_ids = (int(yes), int(no))
        self.token_strings = tuple(self._tok.convert_ids_to_tokens([yes, no]))
        self._token_how = how_y if how_y == how_n else f"{how_y} / {how_n}"
        self._token_tensor = torch.tensor(self.token_ids, dtype=torch.long, device=self._device)
        self._self_check()

    def _self_check(self) -> None:
        import torch
        from costtax.kernels.judge_head import judge_head_reference

        ids = self._ids("Is the sky blue? Answer Yes or No.")[:16]
        if not ids:
            return
        x = torch.tensor([ids], device=self._device)
        with torch.inference_mode():
            logits = self._model(input_ids=x, logits_to_keep=1).logits[0, -1].float()
            full = logits[self.token_ids[0]] - logits[self.token_ids[1]]
            hidden = self._body(input_ids=x, use_cache=False)[0][0]
            cu = torch.tensor([0, len(ids)], device=self._device)
            mine = judge_head_reference(hidden, cu, self._lm_weight, self._token_tensor).reward[0]
        # Tolerance scales with the logits' size: in bf16 each logit is rounded to ~3 digits.
        tol = self_check_tol(self._dtype)
        scale = max(1.0, float(logits[list(self.token_ids)].abs().max()))
        if not torch.isclose(full, mine, rtol=0.0, atol=tol * scale):
            raise ConfigError(
                self._field,
                self.name,
                f"self-check failed: body+judge head gives {mine.item():.5g}, the model's logits {full.item():.5g}; "
                "its logits are not a plain projection of the last hidden state",
            )

    # ---- scoring -------------------------------------------------------------------------
    def score(
        self, prompts: Sequence[str], responses: Sequence[str], *, harmful: Sequence[bool] | None = None
    ) -> ScoreBatch:
        """Judge rewards; with ``harmful`` (one flag per pair: the prompt's source declares it a
        harmful request), the refusal rule moves those pairs' rewards by +-refusal_margin."""
        res = super().score(prompts, responses)
        if harmful is None or not self.refusal_margin:
            return res
        flags = list(harmful)
        if len(flags) != len(res.rewards):
            raise ValueError(f"score(): {len(flags)} harmful flags for {len(res.rewards)} pairs")
        return dataclasses.replace(res, rewards=refusal_adjusted(res.rewards, responses, flags, self.refusal_margin))

    # ---- head ----------------------------------------------------------------------------
    def _head_tensors(self) -> tuple:
        return (self._lm_weight,)

    def _head(self, hidden, cu_seqlens, positions, path: str):
        from costtax.kernels import judge_head

        return judge_head(
            hidden, cu_seqlens, self._lm_weight, self._token_tensor, positions=positions, mode="diff", path=path
        ).reward

    def template_text(self) -> str:
        t = self.template
        parts = [t["system"], t["question"]] + ["\x1f".join(e) for e in t["examples"]]
        return "\x1e".join(parts)

    def _extra_provenance(self) -> dict:
        info = {
            "judge_template": self.template_name,
            "judge_template_sha": text_sha(self.template_text()),
            "judge_examples": len(self.template["examples"]),
            "answers": list(self.answers),
            "reward": f"logit({self.answers[0]!r}) - logit({self.answers[1]!r}) at the last position",
            "weak_proxy": None,
            "refusal_margin": self.refusal_margin,
            "refusal_rule": "on prompts declared harmful: +refusal_margin if costtax.rewards.refusal_rule.is_refusal(response), "
            "else -refusal_margin",
        }
        reason = weak_proxy_reason(self.model_ref, self.template_name, info["judge_template_sha"])
        if reason:
            info["weak_proxy"], info["weak_proxy_reason"] = True, reason
        if getattr(self, "token_ids", None):
            info["answer_token_ids"] = list(self.token_ids)
            info["answer_tokens"] = list(self.token_strings)
            info["answer_token_rule"] = self._token_how
        return info


def refusal_adjusted(
    rewards: Sequence[float], responses: Sequence[str], harmful: Sequence[bool], margin: float
) -> tuple[float, ...]:
    """Rewards after the refusal rule: on a pair whose prompt is declared harmful, +margin for a
    refusal (costtax.rewards.refusal_rule.is_refusal) and -margin otherwise; other pairs unchanged."""
    from .refusal_rule import is_refusal

    out = []
    for r, text, h in zip(rewards, responses, harmful):
        if h:
            r = r + margin if is_refusal(text) else r - margin
        out.append(float(r))
    return tuple(out)
