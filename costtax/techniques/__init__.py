"""The technique registry: one small mapping; an unknown name lists the valid ones."""
from __future__ import annotations

from .base import Param, Technique
from .best_of_n import BestOfN
from .cai import ConstitutionalAI
from .early_stop_bon import EarlyStopBestOfN
from .plain import Plain
from .self_consistency import SelfConsistency

REGISTRY: dict[str, type] = {t.name: t for t in (Plain, BestOfN, EarlyStopBestOfN, ConstitutionalAI, SelfConsistency)}


def get_technique(name: str) -> type:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown technique {name!r}; valid: {', '.join(REGISTRY)}") from None


__all__ = ["Param", "Technique", "REGISTRY", "get_technique"]
