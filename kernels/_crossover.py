"""Measured crossovers: shapes at which a plain-torch expression beat a Triton kernel.

The ops consult this table only on the compiled path (``"triton"``, CUDA tensors); the
interpreter and the reference path never dispatch by shape, so the CPU tests keep covering
the kernels. A rule says: for ``op`` on a card whose name contains one of ``cards``, run the
torch expression ``impl`` when every bound holds. Each rule records the card and the date of
the measurement it comes from and the numbers that justify it; bench/gpu_check.py re-measures
the same comparison (kernel vs the best torch expression, GPU time and host cost per call)
and prints a proposed threshold, so the table is updated from data, not by hand-waving.

Nothing here imports torch or triton: :func:`choose_impl` is pure logic on ints and strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

IMPLS = ("kernel", "torch")


@dataclass(frozen=True)
class Crossover:
    op: str
    impl: str  # what runs inside the bounds ("torch"); outside them the kernel runs
    # Upper bounds (inclusive) on the call's shape; None = unbounded. T*H is the element
    # count of the packed hidden states, the quantity an all-positions head reads.
    max_B: int | None = None
    max_TH: int | None = None
    max_H: int | None = None
    cards: tuple[str, ...] = ()  # substrings of torch.cuda.get_device_name(); () = none
    measured_on: str = ""
    measured_date: str = ""
    source: str = ""
    evidence: str = ""
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.impl not in IMPLS:
            raise ValueError(f"Crossover.impl must be one of {IMPLS}, got {self.impl!r}")
        if not self.cards:
            raise ValueError("Crossover.cards must name at least one card the rule was measured on")
        for name in ("max_B", "max_TH", "max_H"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"Crossover.{name} must be >= 0 or None, got {v}")

    def covers(self, shape: Mapping[str, int]) -> bool:
        B, T, H = int(shape["B"]), int(shape["T"]), int(shape["H"])
        return (
            (self.max_B is None or B <= self.max_B)
            and (self.max_TH is None or T * H <= self.max_TH)
            and (self.max_H is None or H <= self.max_H)
        )

    def applies_to(self, card: str | None) -> bool:
        return card is not None and any(c.lower() in card.lower() for c in self.cards)


# bf16, triton.testing.do_bench median (L2 flushed), validate=False.
# Source files: /work/shared/gpu/kernels-vs-torch-h200-2026-11-27.json (the four shapes of
# issue 9's table) and /work/shared/gpu/crossover-h200-2026-11-27.json (H 576/2048/4096 x
# B 1..1024, 256 tokens per sequence). Those kernel readings are host-bound (5.7-53.8 us for
# the same tiny kernel depending on whether its launch overlapped the L2 flush), measured
# with the wrapper before its per-call host work was cut; re-measure with gpu_check.
CROSSOVERS: tuple[Crossover, ...] = (
    Crossover(
        op="reward_head",
        impl="torch",
        max_TH=1 << 22,  # 4,194,304 hidden elements, e.g. 4096 x 1024 or 576 x 7281
        cards=("H200", "H100"),
        measured_on="NVIDIA H200",
        measured_date="2026-11-27",
        source="shared/gpu/kernels-vs-torch-h200-2026-11-27.json, shared/gpu/crossover-h200-2026-11-27.json",
        evidence=(
            "B=4 T=800 H=576: kernel 34.2 us, all-positions head 9.9 us, gather-first 18.8 us; "
            "grid at T*H <= 4.2M: all-positions head 10.0-18.8 us vs kernel 5.7-53.8 us (13 of 15 "
            "readings above 22 us); at T*H >= 67M the kernel wins (6.9-8.5 us vs gather 21-29 us, "
            "all-positions 48-502 us). H100 agrees at the small shape: 81.7 us vs 16.5 us."
        ),
        notes=(
            "H100 included on the H100 run's same-direction result at B=16 T~1.9k H=576",
            "dispatch target: reward_head._reward_head_torch (score rows, then one GEMV), "
            "5-7 torch ops; the readings above are of 2-op expressions with precomputed rows and "
            "of the kernel before its wrapper was trimmed: bench/gpu_check.py reports "
            "dispatch_vs_kernel per shape to confirm or drop this rule",
        ),
    ),
)


def choose_impl(
    op: str, shape: Mapping[str, int], card: str | None, table: tuple[Crossover, ...] = CROSSOVERS
) -> str:
    """``"torch"`` when a rule for ``op`` measured on ``card`` covers ``shape`` (keys B, T,
    H), else ``"kernel"``. Unknown cards (no rule names them) always get the kernel."""
    for rule in table:
        if rule.op == op and rule.applies_to(card) and rule.covers(shape):
            return rule.impl
    return "kernel"


def rule_for(op: str, card: str | None, table: tuple[Crossover, ...] = CROSSOVERS) -> Crossover | None:
    for rule in table:
        if rule.op == op and rule.applies_to(card):
            return rule
    return None
