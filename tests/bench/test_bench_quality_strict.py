"""The strict GSM8K scorer (strict_math.py) on fixed replies: the last boxed or "answer is" number must equal the
gold; where math-verify is more lenient, the two disagree."""
from fractions import Fraction

import pytest

from sglang_esamp.bench.quality.strict_math import final_answer, last_boxed, strict_correct, to_number


def test_the_last_boxed_answer_counts_with_its_braces_matched():
    assert last_boxed(r"first \boxed{3}, then \boxed{\frac{1}{2}} and text") == r"\frac{1}{2}"
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed("no box") is None and last_boxed(r"\boxed{12") is None
    assert final_answer("So the answer is 42 apples.\nDone") == "42 apples."
    assert final_answer(r"The answer is 5. \boxed{6}") == "6"               # a boxed answer wins


@pytest.mark.parametrize("text,value", [
    ("18", 18), ("$1,000$", 1000), (r"1{,}000", 1000), (r"\$18.50", Fraction(37, 2)), ("-3", -3),
    (r"18 \text{ dollars}", 18), (r"75\%", 75), ("12.", 12), (r"\frac{3}{4}", Fraction(3, 4)),
    (r"-\dfrac{6}{3}", -2), ("7/2", Fraction(7, 2)), (".5", Fraction(1, 2)),
    ("2 + 9", None), ("x = 5", None), ("", None), ("42 apples.", None), (r"\sqrt{4}", None)])
def test_an_answer_is_one_number_once_its_formatting_is_dropped(text, value):
    assert to_number(text) == (None if value is None else Fraction(value))


def test_strict_correct_needs_the_final_answer_to_equal_the_gold():
    assert strict_correct("18", r"... so she makes \boxed{18} dollars")
    assert strict_correct("1000", r"\boxed{1,000}") and strict_correct("0.5", r"\boxed{\frac{1}{2}}")
    assert not strict_correct("18", r"\boxed{18} at first, but then \boxed{20}")     # the last one counts
    # math-verify takes these (the last number, an expression); the strict scorer does not
    assert not strict_correct("11", r"\boxed{2 + 9} = 11")
    assert not strict_correct("200", "print(total)\n```output\n200\n```")
    assert not strict_correct("5", r"Now write the final answer in \boxed{}. It is 5")
