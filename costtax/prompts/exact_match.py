"""Exact-answer grading: the last integer of a response, SQuAD-style normalised text, and
``is_correct`` (a response against a reference answer). Pure functions, standard library only.
"""
from __future__ import annotations

import numbers
import re
import string
import unicodedata

__all__ = ["extract_last_integer", "integer_reference", "is_correct", "normalise_answer"]


# A number token: optional minus sign, then either a thousands-grouped integer
# (1,234,567) or a plain run of digits, then an optional decimal part. It must not
# be glued to a preceding word character or '.', and must not be followed by a digit.
_NUMBER_RE = re.compile(
    r"(?<![\w.])(?P<sign>-?)(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(?P<frac>\d+))?(?!\d)"
)
_MINUS_CHARS = str.maketrans({"\u2212": "-", "\u2012": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})
_INTEGER_ANSWER_RE = re.compile(r"^\s*[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.0+)?\s*$")


def integer_reference(answer: object) -> bool:
    """True when a reference answer is an integer (``-5``, ``1,234``, ``18.00``, or an int):
    graded on the last integer of a response rather than on normalised text."""
    if isinstance(answer, numbers.Integral) and not isinstance(answer, bool):
        return True
    return _INTEGER_ANSWER_RE.match(str(answer).translate(_MINUS_CHARS)) is not None


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
