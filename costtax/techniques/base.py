"""The Technique contract and its parameter schema.

A technique never talks to vLLM or transformers: it asks the CellContext for generations and
scores, labelling each call with its stage; the context does all the accounting. That keeps cost
accounting identical across engines and makes a new technique one short file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .context import CellContext, PromptInstance


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
    """How ONE final answer is produced, as an async program over the cell context.

    A load level starts many answers at once (offline batch: all of them; closed loop: C in
    flight; open loop: Poisson arrivals); each awaits its own generation and scoring calls, and
    the engine and the reward micro-batcher batch whatever is in flight. No stage barriers: a
    best-of-N answer is scored as soon as its own N samples are back.

    Everything a technique knows about itself lives on its class:
    - `needs_reward_model`: preflight loads a selection reward model only when a cell needs one;
    - `summary(answers)`: its own summary.csv columns from its answers' rows (plain dicts);
    - `check(answer, calls)`: accounting invariants of one answer, as readable violations.
    """

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]
    description: ClassVar[str]
    needs_reward_model: ClassVar[bool]

    async def answer(self, inst: "PromptInstance", ctx: "CellContext") -> None:
        """Produce the final answer of `inst` and hand it to ctx.finish_answer()."""

    def summary(self, answers: Sequence[dict[str, Any]], prompts_answer: dict[str, Any]) -> dict[str, Any]:
        """Technique-specific summary columns (may be empty)."""

    def check(self, answer: dict[str, Any], calls: Sequence[dict[str, Any]]) -> list[str]:
        """Accounting checks of one answer against its calls; [] when they hold."""


class TechniqueBase:
    """Defaults for the optional parts of the protocol."""

    needs_reward_model: ClassVar[bool] = False
    uses_constitution: ClassVar[bool] = False
    needs_reference_answers: ClassVar[bool] = False  # every prompt must carry an `answer`
    # Extra summary.csv columns this technique writes: (name, unit, meaning).
    summary_columns: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def summary(self, answers, prompts_answer) -> dict[str, Any]:
        return {}

    def check(self, answer, calls) -> list[str]:
        return []
