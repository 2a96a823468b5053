"""The task contract: the prompt, the answer tags and the answer kinds (docs/algorithm.md §3, §5).

Data preparation writes prompts and solutions with it, the reward reads responses with it, and
evaluation builds benchmark prompts and reads answers with it: each rule is written here once.
"""

from __future__ import annotations

import re
import string
from typing import Literal

# verl's loader turns each of these in a prompt text into an image part (RLHFDataset._build_messages).
IMAGE_PLACEHOLDER = "<image>"

# The paper's chain-of-thought instruction, after the question and a newline (qwen_module.py "cot").
COT_INSTRUCTION = (
    "First output the thinking process in <think> </think> tags and then output the final "
    "answer in <answer> </answer> tags. The thinking process should first include a "
    "question-related caption followed by a detailed analysis regarding the question, "
    "considering possible assumptions, edge cases, or relevant background information."
)

# A well-formatted response is exactly a think block, optional whitespace, an answer block.
FORMAT_PATTERN = re.compile(r"<think>([\s\S]*?)</think>\s*<answer>([\s\S]*?)</answer>")
ANSWER_PATTERN = re.compile(r"<answer>([\s\S]*?)</answer>")
_WHOLE_ANSWER = re.compile(r"^\s*<answer>([\s\S]*)</answer>\s*$")

# Answer kinds: markers the reference reads in the question.
MULTIPLE_CHOICE_MARKER = "choices:"  # matched in the lower-cased question
YES_NO_MARKER = "Answer the question with Yes or No."  # matched as written

AnswerType = Literal["multiple_choice", "yes_no", "free_form"]


def build_prompt(question: str, cot: bool = True) -> str:
    """The user-turn text: ``question`` as written, a newline and ``COT_INSTRUCTION`` when ``cot``."""
    return f"{question}\n{COT_INSTRUCTION}" if cot else question


def is_well_formatted(response: str) -> bool:
    """The whole response (no strip) is a think block followed by an answer block."""
    return FORMAT_PATTERN.fullmatch(response) is not None


def extract_answer(text: str) -> str | None:
    """The stripped text inside the first ``<answer>...</answer>`` pair, or None without one."""
    match = ANSWER_PATTERN.search(text)
    return match.group(1).strip() if match else None


def clean_answer(solution: str) -> str:
    """A solution without surrounding whitespace and one ``<answer>`` wrapper around all of it ("<answer> B </answer>" -> "B")."""
    match = _WHOLE_ANSWER.match(solution)
    return (match.group(1) if match else solution).strip()


def is_multiple_choice(question: str) -> bool:
    return MULTIPLE_CHOICE_MARKER in question.lower()


def is_yes_no(question: str) -> bool:
    return YES_NO_MARKER in question


# --- the better-defined readings (reward mode "strict", data statistics); the reference's own are in
# --- verl_ext.reward

_PUNCTUATION_TO_SPACE = str.maketrans({char: " " for char in string.punctuation})
_STANDALONE_LETTER = re.compile(r"\b([A-K])\b")
_WORD = re.compile(r"[a-z]+")


def multiple_choice_letter(solution: str) -> str | None:
    """The option letter a solution names, or None.

    Punctuation becomes spaces (so "(B)", "B." and "<answer>B</answer>" all give "B"), then the first
    standalone capital A-K wins; lower-case letters are ignored ("a" is usually the article).
    """
    match = _STANDALONE_LETTER.search(solution.translate(_PUNCTUATION_TO_SPACE))
    return match.group(1) if match else None


def yes_no(text: str) -> Literal["yes", "no"] | None:
    """"yes" or "no" when ``text`` (inside its answer tags, if any) clearly says so, else None.

    The first word decides when it is yes/no ("No, there is no cat." -> "no"); otherwise the text must
    contain exactly one of the two words ("The answer is yes." -> "yes").
    """
    inside = ANSWER_PATTERN.search(text)
    words = _WORD.findall((inside.group(1) if inside else text).lower())
    if not words:
        return None
    if words[0] in ("yes", "no"):
        return words[0]  # type: ignore[return-value]
    present = {word for word in words if word in ("yes", "no")}
    return present.pop() if len(present) == 1 else None  # type: ignore[return-value]


def answer_type(question: str, solution: str) -> AnswerType:
    """The kind of a (question, solution) pair: its marker, and a solution that rule can read."""
    if is_multiple_choice(question) and multiple_choice_letter(solution) is not None:
        return "multiple_choice"
    if is_yes_no(question) and yes_no(solution) is not None:
        return "yes_no"
    return "free_form"
