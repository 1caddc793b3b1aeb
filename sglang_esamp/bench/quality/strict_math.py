"""A strict GSM8K scorer beside math-verify: the reply's final answer must be the gold number.

The final answer is the content of the last ``\\boxed{...}`` (``\\fbox`` too) of the reply, else the text after the
last "answer is" / "answer:" up to the end of its line; a reply with neither has none and is wrong. That answer is
read as a number after dropping what only formats one: ``\\text{...}``/``\\mathrm{...}`` units, ``$``, ``\\$``,
``%``, LaTeX spacing, thousands separators (``1,000``, ``1{,}000``), a trailing period. What remains must be one
number (an integer, a decimal, or ``\\frac{a}{b}`` / ``a/b``) and equal the gold as a fraction. math-verify is more
lenient: it takes the last number of a reply without a boxed answer, and parses expressions (``5 + 3``).
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER = re.compile(r"answer\s*(?:is|:)\s*(?P<rest>[^\n]*)", re.I)
_DROP = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}|\\[,!;: ]|\\left|\\right|\{,\}|\\\$|\$|\\?%")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRAC = re.compile(r"^(?P<sign>[-+]?)\\d?frac\{(?P<a>[^{}]+)\}\{(?P<b>[^{}]+)\}$")


def last_boxed(text: str) -> Optional[str]:
    """The content of the last ``\\boxed{...}``, braces matched; None if there is none (or it is unclosed)."""
    starts = [m.end() for m in _BOX.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i]
    return None


def final_answer(text: str) -> Optional[str]:
    """The last boxed answer, else what follows the last "answer is" / "answer:"."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    found = list(_ANSWER.finditer(text))
    return found[-1].group("rest") if found else None


def to_number(answer: str) -> Optional[Fraction]:
    """The one number ``answer`` states (see the module docstring), or None."""
    s = _DROP.sub("", answer).replace(" ", "").strip()
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s).rstrip(".")
    if s.lstrip("+-").startswith("\\"):
        m = _FRAC.match(s)
        if not m:
            return None
        a, b = to_number(m.group("a")), to_number(m.group("b"))
        if a is None or not b:
            return None
        return -a / b if m.group("sign") == "-" else a / b
    if s.count("/") == 1:
        a, b = (to_number(x) for x in s.split("/"))
        return a / b if a is not None and b else None
    return Fraction(s) if _NUMBER.fullmatch(s) else None


def strict_correct(gold: str, reply: str) -> bool:
    answer = final_answer(reply)
    value = to_number(answer) if answer is not None else None
    return value is not None and value == Fraction(gold.replace(",", ""))
