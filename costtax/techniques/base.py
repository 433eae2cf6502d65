"""The Technique contract and its parameter schema.

A technique never talks to vLLM or transformers: it asks the CellContext for generations and
scores, labelling each call with its stage; the context does all the accounting. That keeps cost
accounting identical across engines and makes a new technique one short file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from ..context import CellContext
    from ..prompts import Prompt


@dataclass(frozen=True)
class Param:
    name: str
    type: type  # int | float | bool | str
    default: Any = None
    required: bool = False  # shown in the canonical cell string even when equal to the default
    min: float | None = None
    max: float | None = None
    help: str = ""

    def parse(self, raw: str) -> Any:
        """Parse one raw string value; raises ValueError with a fix hint."""
        raw = raw.strip()
        if self.type is bool:
            low = raw.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if self.type is int:
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"expected an integer, got {raw!r}") from None
        elif self.type is float:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"expected a number, got {raw!r}") from None
        else:
            value = raw
            if not value:
                raise ValueError("expected a non-empty value")
        if self.min is not None and value < self.min:
            raise ValueError(f"must be >= {self.min:g}, got {raw}")
        if self.max is not None and value > self.max:
            raise ValueError(f"must be <= {self.max:g}, got {raw}")
        return value

    def format(self, value: Any) -> str:
        if self.type is bool:
            return "true" if value else "false"
        if self.type is float:
            return f"{value:g}"
        return str(value)


class Technique(Protocol):
    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]
    description: ClassVar[str]

    def run(self, prompts: Sequence["Prompt"], ctx: "CellContext") -> None:
        """Produce one final answer per prompt (and repeat) through ctx.finish_answer()."""
