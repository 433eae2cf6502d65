"""costtax.prompts.exact_match: the last integer, normalised text, is_correct."""
from __future__ import annotations

import pytest

from costtax.prompts.exact_match import extract_last_integer, integer_reference, is_correct, normalise_answer

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 42.", 42),
        ("We get 3 apples, then 7 more, total 10", 10),
        ("Total: 1,234 dollars", 1234),
        ("She owes -5 dollars", -5),
        ("x = −12", -12),  # Unicode minus
        ("It costs $1,234,567.", 1234567),
        ("pages 3-5", 5),  # hyphen, not a sign
        ("#### 18.00", 18),
        ("about 2.5 hours", None),
        ("no numbers here", None),
        ("", None),
        (None, None),
        ("values 12,34", 34),
        ("the list 1,2,3", 3),
        ("Answer:7\n", 7),
    ],
)
def test_extract_last_integer(text, expected):
    assert extract_last_integer(text) == expected


def test_normalise_answer():
    assert normalise_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalise_answer("  an Apple, a day. ") == "apple day"
    assert normalise_answer("“Paris”") == "paris"
    assert normalise_answer("") == ""
    assert normalise_answer("theatre") == "theatre"  # articles only as whole words


def test_is_correct():
    assert is_correct("so the answer is 1,234.", "1234")
    assert is_correct("so the answer is 1234", "1,234")
    assert is_correct("Final answer: -3", "-3")
    assert is_correct("Final answer: 7", 7)
    assert not is_correct("I think 12, no wait, 13", "12")
    assert not is_correct("no idea", "5")
    assert is_correct("The Eiffel Tower.", "eiffel tower")
    assert not is_correct("The Eiffel Tower is in Paris", "eiffel tower")
    assert not is_correct("", "")
    assert not is_correct(None, "5")


@pytest.mark.parametrize("ref, expected", [(5, True), ("-5", True), ("1,234", True), ("18.00", True), (" 7 ", True),
                                           ("2.5", False), ("Paris", False), (True, False), ("", False)])
def test_integer_reference(ref, expected):
    assert integer_reference(ref) is expected
