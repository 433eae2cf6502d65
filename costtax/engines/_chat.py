"""What both engines share: the chat template, token counting, and the context-length check."""
from __future__ import annotations

from typing import Any, Sequence

from .base import GenRequest, Message


class ChatTemplateMixin:
    """Needs `self._tok` (a Hugging Face tokenizer), `self._max_model_len` and `_started()`."""

    _tok: Any
    _max_model_len: int

    def _started(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def _require_started(self) -> None:
        if not self._started():
            raise RuntimeError("engine not started: call start() first")

    def render(self, messages: Sequence[Message], continue_final: bool = False) -> str:
        self._require_started()
        if continue_final:
            return self._tok.apply_chat_template(list(messages), add_generation_prompt=False, continue_final_message=True, tokenize=False)
        return self._tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def count_tokens(self, text: str) -> int:
        self._require_started()
        return len(self._tok.encode(text, add_special_tokens=False))

    def max_model_len(self) -> int:
        return self._max_model_len

    def _prompt_ids(self, req: GenRequest, default_max_tokens: int) -> tuple[list[int], int]:
        """Token ids of the rendered prompt (the template holds any BOS) and the max new tokens
        that fit in the context; a prompt that leaves no room is an error, not a truncation."""
        ids = list(self._tok.encode(self.render(req.messages, continue_final=req.continue_final), add_special_tokens=False))
        room = self._max_model_len - len(ids)
        if room < 1:
            raise ValueError(
                f"prompt of request {req.request_id} has {len(ids)} tokens, over max_model_len {self._max_model_len}"
            )
        return ids, min(req.max_tokens or default_max_tokens, room)
