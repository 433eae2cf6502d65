"""Pure metric functions used by costtax reports.

Everything here is side-effect free and depends only on numpy (``self_bleu``
imports sacrebleu lazily). Conventions:

* Units are part of the name where there is one (``bon_kl_bound_nats``).
* When the input is too small for a quantity to be defined (no values, fewer
  than two samples for a confidence interval, no n-grams, ...) functions return
  ``None`` rather than NaN, so that report code can print "n/a" explicitly.
* Sample-based functions (``percentiles``, ``bootstrap_ci``, ``mean_or_none``)
  ignore ``None`` entries; ``paired_bootstrap_delta_ci`` drops pairs in which
  either side is ``None``.
"""
from __future__ import annotations

import math
import numbers
import re
import string
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "REFUSAL_PATTERNS",
    "bon_kl_bound_nats",
    "bon_win_rate_bound",
    "bootstrap_ci",
    "distinct_n",
    "extract_last_integer",
    "is_correct",
    "is_refusal",
    "mean_or_none",
    "multiplier",
    "normalise_answer",
    "paired_bootstrap_delta_ci",
    "pareto_front",
    "percentile_ci",
    "percentiles",
    "self_bleu",
    "win_rate",
]


# --------------------------------------------------------------------------- helpers


def _drop_none(values: Iterable[float | None]) -> np.ndarray:
    """Return the non-None entries of ``values`` as a 1-D float64 array."""
    return np.asarray([float(v) for v in values if v is not None], dtype=np.float64)


def _validate_alpha_nboot(alpha: float, n_boot: int) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")


def _validate_n(n: object, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


# Resample indices are drawn in chunks so memory stays bounded (about this many
# int64 indices per chunk) even for large samples.
_BOOT_CHUNK_ELEMS = 2_000_000


# --------------------------------------------------------------------------- summary statistics


def percentiles(
    values: Iterable[float | None], qs: Sequence[float] = (50, 95, 99)
) -> dict[str, float | None]:
    """Percentiles of ``values`` (numpy ``percentile``, linear interpolation).

    Keys are ``"p<q>"`` with ``q`` formatted compactly (``50`` -> ``"p50"``,
    ``99.9`` -> ``"p99.9"``). ``None`` entries in ``values`` are ignored; if no
    values remain every percentile is ``None``.
    """
    arr = _drop_none(values)
    keys = [f"p{float(q):g}" for q in qs]
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    if arr.size == 0:
        return {k: None for k in keys}
    vals = np.percentile(arr, list(qs), method="linear")
    return {k: float(v) for k, v in zip(keys, np.atleast_1d(vals))}


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Arithmetic mean of the non-None entries of ``values``; ``None`` if there are none."""
    arr = _drop_none(values)
    if arr.size == 0:
        return None
    return float(arr.mean())


def multiplier(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline`` (e.g. "BoN-16 costs 11.3x greedy").

    ``None`` if either argument is ``None`` or ``baseline == 0``.
    """
    if value is None or baseline is None or baseline == 0:
        return None
    return float(value) / float(baseline)


# --------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    values: Iterable[float | None],
    stat: str | Callable[[np.ndarray], float] = "mean",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile-bootstrap ``(1 - alpha)`` confidence interval for a statistic.

    Draws ``n_boot`` resamples (with replacement, same size as the data) using
    ``numpy.random.default_rng(seed)``, so the result is deterministic for a
    given seed. The interval is the ``alpha/2`` and ``1 - alpha/2`` percentiles
    (linear interpolation) of the bootstrap distribution.

    ``stat`` is ``"mean"`` or ``"median"`` (both fully vectorised) or a callable
    taking a 1-D float array and returning a float (called once per resample).
    ``None`` entries are ignored; returns ``None`` when fewer than 2 values remain.
    """
    _validate_alpha_nboot(alpha, n_boot)
    arr = _drop_none(values)
    n = arr.size
    if n < 2:
        return None
    if isinstance(stat, str):
        if stat == "mean":
            reduce = lambda m: m.mean(axis=1)  # noqa: E731
        elif stat == "median":
            reduce = lambda m: np.median(m, axis=1)  # noqa: E731
        else:
            raise ValueError(f"stat must be 'mean', 'median' or a callable, got {stat!r}")
    elif callable(stat):
        fn = stat
        reduce = lambda m: np.array([float(fn(row)) for row in m])  # noqa: E731
    else:
        raise ValueError(f"stat must be 'mean', 'median' or a callable, got {stat!r}")

    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _BOOT_CHUNK_ELEMS // n)
    boot = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        boot[start:stop] = reduce(arr[idx])
    lo, hi = np.percentile(boot, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lo), float(hi)


def paired_bootstrap_delta_ci(
    a: Sequence[float | None],
    b: Sequence[float | None],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile-bootstrap CI for the mean of paired differences ``a[i] - b[i]``.

    Pairs are resampled together (the pairing is preserved). ``a`` and ``b`` must
    have the same length (``ValueError`` otherwise); pairs where either side is
    ``None`` are dropped. Returns ``None`` when fewer than 2 pairs remain. Same
    ``n_boot``/``alpha``/``seed`` conventions as :func:`bootstrap_ci`.
    """
    a = list(a)
    b = list(b)
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal length, got {len(a)} and {len(b)}")
    deltas = [float(x) - float(y) for x, y in zip(a, b) if x is not None and y is not None]
    return bootstrap_ci(deltas, stat="mean", n_boot=n_boot, alpha=alpha, seed=seed)


def percentile_ci(
    values: Iterable[float | None],
    q: float,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile-bootstrap ``(1 - alpha)`` CI for the ``q``-th percentile (e.g. p95 latency).

    Same resampling, seed and ``None`` conventions as :func:`bootstrap_ci` (vectorised: one
    ``np.percentile`` over the resample matrix). With few values the upper end of a high
    percentile's interval is the sample maximum: at n=8, p95 cannot be bounded tighter than
    the largest observation, and the interval says so.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    _validate_alpha_nboot(alpha, n_boot)
    arr = _drop_none(values)
    n = arr.size
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _BOOT_CHUNK_ELEMS // n)
    boot = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows_per_chunk):
        stop = min(n_boot, start + rows_per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        boot[start:stop] = np.percentile(arr[idx], q, axis=1, method="linear")
    lo, hi = np.percentile(boot, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- diversity


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Distinct-n: unique n-grams / total n-grams, pooled over all ``texts``.

    Tokens are ``text.lower().split()`` (whitespace tokenisation, lowercased).
    n-grams are taken within each text (never across text boundaries) and pooled.
    Returns ``None`` when there are no n-grams at all (e.g. every text has fewer
    than ``n`` tokens). Example: distinct-1 of ``["a a b", "b c"]`` is 3/5.
    """
    n = _validate_n(n)
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
    import sacrebleu  # lazy: keep `import costtax.metrics` light

    scores = [
        sacrebleu.sentence_bleu(hyp, kept[:i] + kept[i + 1 :]).score for i, hyp in enumerate(kept)
    ]
    return float(np.mean(scores))


# --------------------------------------------------------------------------- correctness

# A number token: optional minus sign, then either a thousands-grouped integer
# (1,234,567) or a plain run of digits, then an optional decimal part. It must not
# be glued to a preceding word character or '.', and must not be followed by a digit.
_NUMBER_RE = re.compile(
    r"(?<![\w.])(?P<sign>-?)(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(?P<frac>\d+))?(?!\d)"
)
_MINUS_CHARS = str.maketrans({"\u2212": "-", "\u2012": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})
_INTEGER_ANSWER_RE = re.compile(r"^\s*[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.0+)?\s*$")


def extract_last_integer(text: str | None) -> int | None:
    """The last number in ``text`` as an int, or ``None``.

    Handles negative numbers (``-5``, also the Unicode minus sign), thousands
    separators (``1,234`` -> 1234), and trailing sentence periods (``42.`` -> 42).
    A minus sign directly after a word character (``3-5``) is read as a hyphen,
    not a sign. A decimal whose fractional part is all zeros counts as an integer
    (``18.00`` -> 18); if the last number has a non-zero fractional part
    (``2.5``) the result is ``None`` rather than an earlier integer, so that a
    non-integer final answer is never graded as an integer.
    """
    if not text:
        return None
    matches = list(_NUMBER_RE.finditer(text.translate(_MINUS_CHARS)))
    if not matches:
        return None
    m = matches[-1]
    frac = m.group("frac")
    if frac is not None and frac.strip("0"):
        return None
    value = int(m.group("int").replace(",", ""))
    return -value if m.group("sign") else value


_ARTICLES_RE = re.compile(r"\b(?:a|an|the)\b")


def normalise_answer(s: str | None) -> str:
    """SQuAD-style normalisation for exact-match grading.

    Lowercases, removes punctuation (ASCII and any Unicode punctuation),
    removes the articles "a", "an", "the", and collapses whitespace.
    """
    if not s:
        return ""
    s = s.lower()
    s = "".join(
        " " if (ch in string.punctuation or unicodedata.category(ch).startswith("P")) else ch
        for ch in s
    )
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def is_correct(text: str | None, answer: str | int) -> bool:
    """Grade a model response against a reference answer.

    If ``answer`` is an integer (or an integer string such as ``"-5"``,
    ``"1,234"``, ``"18.00"``), the response is correct iff
    :func:`extract_last_integer` of ``text`` equals it. Otherwise the response is
    correct iff ``normalise_answer(text) == normalise_answer(answer)`` and the
    normalised answer is non-empty.
    """
    if text is None:
        return False
    if isinstance(answer, numbers.Integral) and not isinstance(answer, bool):
        return extract_last_integer(text) == int(answer)
    answer = str(answer)
    if _INTEGER_ANSWER_RE.match(answer.translate(_MINUS_CHARS)):
        return extract_last_integer(text) == extract_last_integer(answer.replace("+", ""))
    ref = normalise_answer(answer)
    return bool(ref) and normalise_answer(text) == ref


# --------------------------------------------------------------------------- refusals

#: Lowercase phrases that mark a refusal when found near the start of a response.
#: Apostrophes are straight ASCII; responses are normalised before matching.
REFUSAL_PATTERNS: tuple[str, ...] = (
    "i can't",
    "i cannot",
    "i can not",
    "i won't",
    "i will not",
    "i'm sorry, but",
    "i am sorry, but",
    "i apologize, but",
    "i apologise, but",
    "as an ai",
    "i'm not able to",
    "i am not able to",
    "i'm unable to",
    "i am unable to",
    "cannot help with",
    "can't help with",
    "cannot assist with",
    "can't assist with",
    "not appropriate",
    "i must decline",
    "i have to decline",
    "i'm not comfortable",
    "i am not comfortable",
)

REFUSAL_WINDOW_CHARS = 200
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "`": "'"})
_REFUSAL_RE = re.compile(
    "|".join(r"(?<!\w)" + re.escape(p).replace(r"\ ", r"\s+") + r"(?!\w)" for p in REFUSAL_PATTERNS)
)


def is_refusal(text: str | None) -> bool:
    """Conservative, phrase-based refusal detector.

    Rule: a response is a refusal iff its first ``REFUSAL_WINDOW_CHARS`` (200)
    characters, after stripping leading whitespace, contain one of
    :data:`REFUSAL_PATTERNS`. Matching is case-insensitive, curly apostrophes
    (and similar marks) are normalised to ``'``, runs of whitespace inside a
    phrase match any whitespace, and a phrase must start and end on word
    boundaries (so "as an aide" does not match "as an ai"). Only the opening of
    the response is inspected, so answers that comply and later mention a
    limitation are not counted. ``None`` or empty text is not a refusal.
    """
    if not text:
        return False
    head = text.lstrip()[:REFUSAL_WINDOW_CHARS].translate(_APOSTROPHES).lower()
    return _REFUSAL_RE.search(head) is not None


# --------------------------------------------------------------------------- comparisons


def win_rate(
    candidate: Mapping[Hashable, float | None], baseline: Mapping[Hashable, float | None]
) -> tuple[float | None, int]:
    """Pairwise win rate of ``candidate`` over ``baseline`` on their shared keys.

    For each shared key (e.g. a prompt id) the candidate scores 1 if its value is
    higher, 0.5 on a tie, 0 if lower. Keys where either value is ``None`` or NaN
    are skipped. Returns ``(rate, n_pairs)``; ``(None, 0)`` when no pairs remain.
    ``win_rate(a, b)[0] + win_rate(b, a)[0] == 1`` whenever pairs exist.
    """
    wins = 0.0
    n = 0
    for key in candidate.keys() & baseline.keys():
        c, b = candidate[key], baseline[key]
        if c is None or b is None:
            continue
        c, b = float(c), float(b)
        if math.isnan(c) or math.isnan(b):
            continue
        n += 1
        if c > b:
            wins += 1.0
        elif c == b:
            wins += 0.5
    if n == 0:
        return None, 0
    return wins / n, n


def bon_kl_bound_nats(n: int) -> float:
    """Upper bound on KL(best-of-n || reference policy), in nats: ``log(n) - (n-1)/n``.

    This is the widely used analytical formula, shown by Beirami et al. (2024),
    "Theoretical guarantees on the best-of-n alignment policy", to be an upper
    bound on the true KL divergence. ``n`` must be an integer >= 1 (n=1 gives 0).
    """
    n = _validate_n(n)
    return math.log(n) - (n - 1) / n


def bon_win_rate_bound(n: int) -> float:
    """Win rate of best-of-n against a single reference sample: ``n / (n + 1)``.

    Beirami et al. (2024), "Theoretical guarantees on the best-of-n alignment
    policy": attained when the reward has no ties (continuous reward), an upper
    bound otherwise. ``n`` must be an integer >= 1 (n=1 gives 0.5).
    """
    n = _validate_n(n)
    return n / (n + 1)


def pareto_front(
    costs: Sequence[float | None], qualities: Sequence[float | None]
) -> list[bool]:
    """Mask of points on the cost/quality Pareto front (lower cost, higher quality).

    Point ``i`` is on the front iff no other valid point ``j`` has
    ``cost_j <= cost_i`` and ``quality_j >= quality_i`` with at least one strict.
    Identical points therefore do not dominate each other and are all on the
    front. Points whose cost or quality is ``None`` or NaN are invalid: they are
    ``False`` and never dominate anything. ``costs`` and ``qualities`` must have
    the same length (``ValueError`` otherwise).
    """
    costs = list(costs)
    qualities = list(qualities)
    if len(costs) != len(qualities):
        raise ValueError(
            f"costs and qualities must have equal length, got {len(costs)} and {len(qualities)}"
        )
    valid = [
        i
        for i, (c, q) in enumerate(zip(costs, qualities))
        if c is not None and q is not None and not math.isnan(c) and not math.isnan(q)
    ]
    on_front = [False] * len(costs)
    # Sweep cost groups in increasing order; best_prev is the best quality among
    # strictly cheaper points. Within a group only the points at the group's top
    # quality can survive, and only if they beat every strictly cheaper point.
    valid.sort(key=lambda i: float(costs[i]))
    best_prev: float | None = None
    k = 0
    while k < len(valid):
        group_cost = float(costs[valid[k]])
        end = k
        while end < len(valid) and float(costs[valid[end]]) == group_cost:
            end += 1
        group = valid[k:end]
        top = max(float(qualities[i]) for i in group)
        if best_prev is None or top > best_prev:
            for i in group:
                if float(qualities[i]) == top:
                    on_front[i] = True
            best_prev = top
        k = end
    return on_front
