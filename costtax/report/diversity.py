"""Diversity of a cell's answers: distinct-n and self-BLEU (sacrebleu, imported lazily)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..stats import positive_int

__all__ = ["distinct_n", "self_bleu"]



def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Distinct-n: unique n-grams / total n-grams, pooled over all ``texts``.

    Tokens are ``text.lower().split()`` (whitespace tokenisation, lowercased).
    n-grams are taken within each text (never across text boundaries) and pooled.
    Returns ``None`` when there are no n-grams at all (e.g. every text has fewer
    than ``n`` tokens). Example: distinct-1 of ``["a a b", "b c"]`` is 3/5.
    """
    n = positive_int(n)
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        toks = text.lower().split()
        for i in range(len(toks) - n + 1):
            seen.add(tuple(toks[i : i + n]))
            total += 1
    if total == 0:
        return None
    return len(seen) / total


def self_bleu(texts: Iterable[str]) -> float | None:
    """Self-BLEU of a set of generations, on sacrebleu's 0-100 scale.

    Mean over ``i`` of ``sacrebleu.sentence_bleu(texts[i], [all other texts])``
    with sacrebleu's defaults (13a tokenisation, case-sensitive, ``exp``
    smoothing, effective order). Higher means less diverse: identical texts give
    100, texts sharing no tokens give 0. Empty / whitespace-only texts are
    dropped first; returns ``None`` when fewer than 2 non-empty texts remain.
    """
    kept = [t for t in texts if t is not None and t.strip()]
    if len(kept) < 2:
        return None
    import sacrebleu  # lazy: keep `import costtax.report.diversity` light

    scores = [
        sacrebleu.sentence_bleu(hyp, kept[:i] + kept[i + 1 :]).score for i, hyp in enumerate(kept)
    ]
    return float(np.mean(scores))
