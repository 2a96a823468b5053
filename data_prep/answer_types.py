"""Answer-type helpers shared by data preparation, the reward function and the recipe.

docs/algorithm.md §3: a question is multiple choice when its lower-cased text contains
``choices:``, yes/no when it contains ``Answer the question with Yes or No.`` (case-sensitive);
everything else is free form (scored by embedding similarity). The markers are the reference's;
the letter and yes/no readings below are the better-defined ones of ``strict`` mode (the
reference's own readings live in ``verl_ext.reward``).
"""

from __future__ import annotations

import re
import string
from typing import Literal

AnswerType = Literal["multiple_choice", "yes_no", "free_form"]

MULTIPLE_CHOICE_MARKER = "choices:"
YES_NO_MARKER = "Answer the question with Yes or No."

_PUNCTUATION_TABLE = str.maketrans({char: " " for char in string.punctuation})
_STANDALONE_LETTER = re.compile(r"\b([A-K])\b")
_ANSWER_TAG = re.compile(r"<answer>([\s\S]*?)</answer>")
_WORD = re.compile(r"[a-z]+")


def _strip_answer_tag(text: str) -> str:
    """The text inside the first `<answer>...</answer>` pair, or `text` itself without one."""
    match = _ANSWER_TAG.search(text)
    return match.group(1) if match else text


def multiple_choice_letter(solution: str) -> str | None:
    """The option letter a solution names, or None.

    Punctuation is replaced by spaces (so "(B)", "B." and "<answer>B</answer>" all give
    "B"), then the first standalone upper-case letter A–K wins. Lower-case letters are
    ignored on purpose: "a" is usually the English article.
    """
    match = _STANDALONE_LETTER.search(solution.translate(_PUNCTUATION_TABLE))
    return match.group(1) if match else None


def yes_no(text: str) -> Literal["yes", "no"] | None:
    """Return "yes" or "no" when `text` clearly says so, else None.

    Looks inside `<answer>` tags when present. The first word decides when it is yes/no
    ("No, there is no cat." -> "no"); otherwise the text must contain exactly one of the
    two words ("The answer is yes." -> "yes"); "either yes or no" or neither -> None.
    """
    words = _WORD.findall(_strip_answer_tag(text).lower())
    if not words:
        return None
    if words[0] in ("yes", "no"):
        return words[0]  # type: ignore[return-value]
    present = {word for word in words if word in ("yes", "no")}
    if len(present) == 1:
        return present.pop()  # type: ignore[return-value]
    return None


def answer_type(question: str, solution: str) -> AnswerType:
    """Classify a (question, reference solution) pair for the reward rules.

    The question's marker selects the rule; the solution must also be usable by it
    (a letter A–K for multiple choice, a clear yes/no for yes/no questions), otherwise
    the reference falls back to similarity scoring, so the pair is "free_form".
    """
    if MULTIPLE_CHOICE_MARKER in question.lower() and multiple_choice_letter(solution) is not None:
        return "multiple_choice"
    if YES_NO_MARKER in question and yes_no(solution) is not None:
        return "yes_no"
    return "free_form"
