"""verl_ext.task (the CoT prompt, answer tags, answer kinds) and data_prep.rows' use of it (docs/algorithm.md §3, §5)."""

from __future__ import annotations

import pathlib
import re

import pytest

from data_prep.rows import prompt_text
from verl_ext.task import COT_INSTRUCTION, answer_type, build_prompt, clean_answer, multiple_choice_letter, yes_no

ALGORITHM_MD = pathlib.Path(__file__).resolve().parents[1] / "docs" / "algorithm.md"


def test_cot_instruction_is_verbatim_from_the_algorithm_doc():
    text = ALGORITHM_MD.read_text()
    quoted = re.search(r'instruction, verbatim:\s*"([^"]+)"', text)
    assert quoted is not None
    assert " ".join(quoted.group(1).split()) == COT_INSTRUCTION


def test_build_prompt_is_question_newline_instruction_with_the_question_as_written():
    # the reference's "{Question}\nFirst output ..." template, question not stripped
    assert build_prompt("  How many cats?  ") == f"  How many cats?  \n{COT_INSTRUCTION}"
    assert build_prompt("How many cats?", cot=False) == "How many cats?"


def test_prompt_text_adds_one_placeholder_per_image_only_when_missing():
    assert prompt_text("What is it?", 2, cot=False) == "<image><image>What is it?"
    assert prompt_text("<image>Find x. ", 1, cot=True) == f"<image>Find x. \n{COT_INSTRUCTION}"


@pytest.mark.parametrize(
    ("solution", "letter"),
    [
        ("B", "B"),
        ("<answer> C </answer>", "C"),
        ("(D) a dog", "D"),
        ("K.", "K"),
        ("The answer is a cat", None),  # lower-case article, no standalone capital A-K
        ("L", None),  # outside A-K
        ("ABC", None),  # not standalone
    ],
)
def test_multiple_choice_letter(solution, letter):
    assert multiple_choice_letter(solution) == letter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("no.", "no"),
        ("<answer> No </answer>", "no"),
        ("No, there is no cat.", "no"),
        ("The answer is yes.", "yes"),
        ("either yes or no", None),
        ("a cat", None),
        ("", None),
    ],
)
def test_yes_no(text, expected):
    assert yes_no(text) == expected


@pytest.mark.parametrize(
    ("question", "solution", "expected"),
    [
        ("Which one? choices: A. cat B. dog", "B", "multiple_choice"),
        ("Which one? Choices: A. cat B. dog", "B", "multiple_choice"),  # 'choices:' in question.lower()
        ("Is it red? answer the question with yes or no.", "Yes", "free_form"),  # this marker is case-sensitive
        ("Which one? choices: A. cat B. dog", "a dog", "free_form"),  # no usable letter: similarity scoring
        ("Is it red? Answer the question with Yes or No.", "Yes", "yes_no"),
        ("Is it red? Answer the question with Yes or No.", "maybe", "free_form"),
        ("Is it red?", "Yes", "free_form"),
        ("What colour is it?", "red", "free_form"),
    ],
)
def test_answer_type(question, solution, expected):
    assert answer_type(question, solution) == expected


def test_clean_answer_unwraps_only_a_whole_answer_tag():
    assert clean_answer("  <answer> B </answer> ") == "B"
    assert clean_answer("<think>x</think><answer>B</answer>") == "<think>x</think><answer>B</answer>"
    assert clean_answer("<answer>  </answer>") == ""
