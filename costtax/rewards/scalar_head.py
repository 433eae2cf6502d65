"""Scalar reward model: a local 1-label ``*ForSequenceClassification`` directory.

The model's transformer body (``base_model``, e.g. ``model.model`` for Llama) runs on the
pairs; its ``score`` head (``Linear(H, 1)``, bias if any) is applied only at each sequence's
last real token by ``costtax.kernels.reward_head`` -- never to every position, which is what
the HF forward does before pooling.

Input format: the tokenizer's chat template over ``[user: prompt, assistant: response]``
when it has one (no generation prompt: the sequence ends where the template closes the
assistant turn, e.g. ``<|im_end|>\\n`` for ChatML, and that last token is the score row),
else ``prompt + "\\n\\n" + response`` with the tokenizer's own special tokens.

At load a self-check compares body + head on one short unpadded sequence with the model's
own forward, so a model whose head is not a plain last-token linear map is refused.
"""
from __future__ import annotations

from ..devices import self_check_tol
from ..errors import ConfigError
from ._hf import HFRewardBase


class ScalarHeadReward(HFRewardBase):
    kind = "scalar"

    def _auto_class(self):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def _setup(self) -> None:
        import torch

        model = self._model
        n = int(getattr(model.config, "num_labels", 1))
        if n != 1:
            raise ConfigError(self._field, self.name, f"a scalar reward model needs num_labels=1, this one has {n}")
        head = getattr(model, "score", None)
        if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
            raise ConfigError(
                self._field,
                self.name,
                f"{type(model).__name__} has no last-token `score` Linear(H, 1) head; not supported as scalar",
            )
        self._weight = head.weight.detach()[0]
        self._bias = head.bias.detach().reshape(()) if head.bias is not None else None
        self._self_check()

    def _self_check(self) -> None:
        """Body + reward_head (reference) == the model's forward on one unpadded sequence."""
        import torch
        from costtax.kernels.reward_head import reward_head_reference

        pad = self._tok.pad_token_id
        ids = [t for t in self._ids("The quick brown fox jumps over the lazy dog.") if t != pad][:16]
        if not ids:
            return
        x = torch.tensor([ids], device=self._device)
        with torch.inference_mode():
            full = self._model(input_ids=x).logits.reshape(-1)[0].float()
            hidden = self._body(input_ids=x, use_cache=False)[0][0]
            cu = torch.tensor([0, len(ids)], device=self._device)
            mine = reward_head_reference(hidden, cu, self._weight, self._bias)[0]
        tol = self_check_tol(self._dtype)
        if not torch.isclose(full, mine, rtol=0.0, atol=tol * max(1.0, float(full.abs()))):
            raise ConfigError(
                self._field,
                self.name,
                f"self-check failed: body+score head gives {mine.item():.5g}, the model's forward {full.item():.5g}; "
                "its head is not a plain last-token linear map",
            )

    def _head_tensors(self) -> tuple:
        return (self._weight,)

    def _head(self, hidden, cu_seqlens, positions, path: str):
        from costtax.kernels import reward_head

        return reward_head(hidden, cu_seqlens, self._weight, bias=self._bias, positions=positions, path=path)

    def _messages(self, prompt: str, response: str) -> list[dict]:
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]

    def format_text(self, prompt: str, response: str) -> tuple[str, bool]:
        """(text, add_special_tokens) for a pair."""
        if getattr(self._tok, "chat_template", None):
            text = self._tok.apply_chat_template(self._messages(prompt, response), tokenize=False)
            return text, False
        return f"{prompt}\n\n{response}", True

    def _encode(self, prompt: str, response: str) -> list[int]:
        text, special = self.format_text(prompt, response)
        return list(self._tok(text, add_special_tokens=special)["input_ids"])

    def _extra_provenance(self) -> dict:
        info = {"score_row": "last token of the formatted pair"}
        if self._tok is not None:
            info["input_format"] = "chat_template" if getattr(self._tok, "chat_template", None) else "prompt\\n\\nresponse"
        if getattr(self, "_bias", None) is not None:
            info["head_bias"] = True
        return info
