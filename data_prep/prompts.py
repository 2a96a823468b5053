"""The paper's chain-of-thought instruction (docs/algorithm.md §5), kept in one place.

Every converter and the recipe build prompts through `build_prompt`, so the training
prompt is exactly "question, newline, instruction" everywhere, as in the authors' code
(`qwen_module.py` `get_question_template("cot")`: ``"{Question}\n..."``).
"""

from __future__ import annotations

COT_INSTRUCTION = (
    "First output the thinking process in <think> </think> tags and then output the final "
    "answer in <answer> </answer> tags. The thinking process should first include a "
    "question-related caption followed by a detailed analysis regarding the question, "
    "considering possible assumptions, edge cases, or relevant background information."
)


def build_prompt(question: str, cot: bool = True) -> str:
    """Return the user-turn text: `question`, a newline and `COT_INSTRUCTION` when `cot`.

    The question is used as written (not stripped, as in the reference); it keeps any
    `<image>` placeholders it already has (the caller decides where images go).
    """
    return f"{question}\n{COT_INSTRUCTION}" if cot else question
