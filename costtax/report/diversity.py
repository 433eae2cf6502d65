"""Diversity of a cell's answers: distinct-n and self-BLEU (sacrebleu, imported lazily)."""
from __future__ import annotations

from array import array
from collections.abc import Iterable

import numpy as np

from ..stats import positive_int

__all__ = ["distinct_n", "self_bleu", "self_bleu_groups"]



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

    Computed exactly in O(total tokens) (times a sort's log), where calling
    ``sentence_bleu`` per text is quadratic (each call re-reads every other text):
    each text is tokenised once by sacrebleu's own tokeniser and split on
    whitespace as sacrebleu does; its n-grams (orders 1-4) are the same token
    tuples ``extract_all_word_ngrams`` counts, encoded exactly (no hashing) as
    two integers of token ids. Against "all other texts" sacrebleu clips a text's
    count of an n-gram by the largest count among the others: the n-gram's
    largest count over all texts, unless this text is its only holder, then the
    second largest. The reference length is the closest other text's length,
    ties to the shorter, as sacrebleu picks it, and the score is sacrebleu's
    ``BLEU.compute_bleu`` on those statistics, so the floats are sacrebleu's
    (tests/report/test_self_bleu_linear.py checks equality with ``sentence_bleu``
    on random and real answer sets). Memory: one order at a time, about 40 bytes
    per token in numpy arrays, no Python object per n-gram (counting with dicts of
    sacrebleu's ``extract_all_word_ngrams`` tuples was measured slower, even for a
    best-of-4's four candidates).
    """
    return self_bleu_groups([texts])[0]


def self_bleu_groups(groups: Iterable[Iterable[str]]) -> list[float | None]:
    """``[self_bleu(g) for g in groups]`` (the same floats) in one numpy pass over all the
    groups' texts: a best-of-N's candidate sets or a prompt's --repeats answers, thousands of
    small sets, without a numpy call per set. Each text is compared with its own group only."""
    kept = [[t for t in g if t is not None and t.strip()] for g in groups]
    out: list[float | None] = [None] * len(kept)
    live = [i for i, g in enumerate(kept) if len(g) >= 2]
    if not live:
        return out
    from sacrebleu.metrics.bleu import BLEU  # lazy: keep `import costtax.report.diversity` light

    metric = _metric()
    orders = metric.max_ngram_order
    texts = [t for i in live for t in kept[i]]
    group = np.repeat(np.arange(len(live), dtype=np.int64), [len(kept[i]) for i in live])
    correct, lens = _clipped_large(texts, metric, group)
    total = np.maximum(lens[None, :] - np.arange(orders)[:, None], 0)
    correct_l, total_l = correct.T.tolist(), total.T.tolist()
    ref = _closest_other_lengths(lens, group).tolist()
    sys = lens.tolist()
    scores = [
        BLEU.compute_bleu(correct_l[i], total_l[i], sys[i], ref[i], smooth_method=metric.smooth_method,
                          smooth_value=metric.smooth_value, effective_order=metric.effective_order,
                          max_ngram_order=orders).score
        for i in range(len(texts))
    ]
    start = 0
    for i in live:
        stop = start + len(kept[i])
        out[i] = float(np.mean(scores[start:stop]))
        start = stop
    return out


_METRIC = []


def _metric():
    """One sacrebleu BLEU with sentence_bleu's defaults per process: its tokeniser's lru_cache
    then serves a text met again (the cell's answers, then their --repeats groups)."""
    if not _METRIC:
        from sacrebleu.metrics.bleu import BLEU

        _METRIC.append(BLEU(effective_order=True))
    return _METRIC[0]


def _clipped_large(kept: list[str], metric, group):
    """Clipped matches (orders x texts) and lengths of many texts, each against the other texts
    of its `group` (a group id per text): token ids in one array, each order's n-grams sorted in
    numpy (no Python object per n-gram)."""
    orders = metric.max_ngram_order
    vocab = _Ids()
    ids = array("q")
    lens = np.empty(len(kept), dtype=np.int64)
    for i, text in enumerate(kept):  # the one pass over the text: sacrebleu's tokeniser, then ids
        n0 = len(ids)
        ids.extend(map(vocab.__getitem__, metric.tokenizer(text.rstrip()).split()))
        lens[i] = len(ids) - n0
    if len(vocab) >= 2**31:
        raise ValueError("self_bleu: more than 2**31 distinct tokens")
    tok = np.frombuffer(ids, dtype=np.int64).astype(np.uint64) if len(ids) else np.zeros(0, np.uint64)
    n_texts = len(kept)
    text_of = np.repeat(np.arange(n_texts, dtype=np.int64), lens)
    pos = np.arange(tok.size, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    correct = np.zeros((orders, n_texts), dtype=np.int64)
    for n in range(1, orders + 1):
        correct[n - 1] = _clipped_matches(tok, text_of, group[text_of], pos + n <= lens[text_of], n, n_texts)
    return correct, lens


class _Ids(dict):
    """token -> id, a new id per new token."""

    def __missing__(self, key):
        v = self[key] = len(self)
        return v


PACK_BITS = 64  # n-grams whose ids fit this many bits sort as one key; others as two
_NONE = np.uint64(2**32 - 1)  # an absent position of an n-gram shorter than 4 (ids < 2**31)


def _clipped_matches(tok, text_of, group_of, valid, n: int, n_texts: int):
    """Per text, sum over its order-n n-grams of min(its count, the largest count in any other
    text of its group): sacrebleu's clipped matches against all the other texts."""
    starts = np.flatnonzero(valid)
    if not starts.size:
        return np.zeros(n_texts, dtype=np.int64)

    def at(k):
        return tok[starts + k] if k < n else np.full(starts.size, _NONE, dtype=np.uint64)

    t, g = text_of[starts], group_of[starts]  # ascending: texts are numbered group by group
    bits = max(1, int(tok.max()).bit_length()) if tok.size else 1
    if n * bits <= PACK_BITS:  # the n-gram's ids packed exactly into one key
        key = np.zeros(starts.size, dtype=np.uint64)
        for k in range(n):
            key = (key << np.uint64(bits)) | tok[starts + k]
        del starts
        idx = np.argsort(key, kind="stable")  # by n-gram; stable: texts (and groups) stay ascending
        key = key[idx]
        same = key[1:] == key[:-1]
    else:
        hi = (at(0) << np.uint64(32)) | at(1)
        lo = (at(2) << np.uint64(32)) | at(3)
        del starts
        idx = np.lexsort((lo, hi))  # by n-gram; stable, as above
        hi, lo = hi[idx], lo[idx]
        same = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
        del hi, lo
    t, g = t[idx], g[idx]
    del idx
    new_gram = np.ones(t.size, dtype=bool)  # a new (group, n-gram)
    new_gram[1:] = ~same | (g[1:] != g[:-1])
    new_pair = new_gram.copy()
    new_pair[1:] |= t[1:] != t[:-1]
    del same, g
    heads = np.flatnonzero(new_pair)  # one (n-gram, text) pair each: its count in that text
    cnt = np.diff(np.append(heads, new_pair.size))
    text = t[heads]
    first = new_gram[heads]  # pairs are grouped by n-gram: where each n-gram's pairs start
    del t, new_gram, new_pair
    g_heads = np.flatnonzero(first)
    gram = np.cumsum(first) - 1
    top = np.maximum.reduceat(cnt, g_heads)  # the n-gram's largest count in any text
    is_top = cnt == top[gram]
    holders = np.bincount(gram, weights=is_top, minlength=g_heads.size)  # texts holding it
    second = np.maximum.reduceat(np.where(is_top, 0, cnt), g_heads)  # largest count below it
    sole = is_top & (holders[gram] == 1)  # this text alone holds the largest count
    clipped = np.minimum(cnt, np.where(sole, second[gram], top[gram]))
    return np.bincount(text, weights=clipped, minlength=n_texts).astype(np.int64)


def _closest_other_lengths(lens: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
    """Per text, the length of the other text of its group closest to its own, ties to the
    shorter (sacrebleu's `_get_closest_ref_len` over all the other texts); groups of >= 2."""
    group = np.zeros(lens.size, dtype=np.int64) if group is None else group
    span = int(lens.max()) * 2 + 3 if lens.size else 3  # keys of different groups never meet
    key = group * span + lens
    values, counts = np.unique(key, return_counts=True)
    pos = np.searchsorted(values, key)
    shared = counts[pos] >= 2  # another text of the group has the same length
    lo = values[np.maximum(pos - 1, 0)]
    hi = values[np.minimum(pos + 1, values.size - 1)]
    has_below = (pos > 0) & (lo // span == group)
    has_above = (pos + 1 < values.size) & (hi // span == group)
    below, above = lo - group * span, hi - group * span
    take_below = has_below & (~has_above | (lens - below <= above - lens))
    return np.where(shared, lens, np.where(take_below, below, above))
